# Run by Rscript inside the sandbox for an R build with build_vignettes and a
# door (vignettes.go): install what the package's vignettes may need from
# the repository behind the door into a library of this build only (its
# TMPDIR, gone afterwards), then R CMD build with that library, vignettes
# included. Argument: the package directory.
pkgdir <- commandArgs(trailingOnly = TRUE)[[1]]
lib <- file.path(Sys.getenv("TMPDIR"), "pkgfleet-vignette-library")
dir.create(lib, showWarnings = FALSE)
.libPaths(c(lib, .libPaths()))
options(repos = c(CRAN = Sys.getenv("PKGFLEET_R_REPOSITORY")), warn = 1)
install_deps(read.dcf(file.path(pkgdir, "DESCRIPTION")),
             c("Depends", "Imports", "LinkingTo", "Suggests", "VignetteBuilder"), lib)
Sys.setenv(R_LIBS = paste(.libPaths(), collapse = .Platform$path.sep))
status <- system2(file.path(R.home("bin"), "R"), c("CMD", "build", "--no-manual", shQuote(pkgdir)))
quit(save = "no", status = status)
