# Run by Rscript inside the sandbox for an R build with build_vignettes and a
# door (vignettes.go), after deps.R: install what the package's vignettes may
# need from the repository behind the door into a library of this build only
# (PKGFLEET_R_LIBRARY, or its TMPDIR, gone afterwards), then R CMD build with
# that library, vignettes included. Argument: the package directory.
pkgdir <- commandArgs(trailingOnly = TRUE)[[1]]
lib <- Sys.getenv("PKGFLEET_R_LIBRARY", file.path(Sys.getenv("TMPDIR"), "pkgfleet-vignette-library"))
pkgfleet_install_deps(file.path(pkgdir, "DESCRIPTION"),
                      lib, c("Depends", "Imports", "LinkingTo", "Suggests", "VignetteBuilder"))
status <- system2(file.path(R.home("bin"), "R"), c("CMD", "build", "--no-manual", shQuote(pkgdir)))
quit(save = "no", status = status)
