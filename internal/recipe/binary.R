# Run by Rscript inside the sandbox after R CMD build when the builder
# builds binaries (binary.go): install the package's Depends, Imports and
# LinkingTo from the repository behind the door (when there is one) into
# the build's library, then R CMD INSTALL --build the source tarball in the
# working directory, which leaves R's own binary tarball there
# (<pkg>_<version>_R_<platform>.tar.gz, DESCRIPTION with Built:).
# Arguments: the source tarball, the build's library ("": one in TMPDIR).
args <- commandArgs(trailingOnly = TRUE)
tarball <- args[[1]]
tmp <- Sys.getenv("TMPDIR")
lib <- if (length(args) > 1 && nzchar(args[[2]])) args[[2]] else file.path(tmp, "pkgfleet-library")
dir.create(lib, showWarnings = FALSE)
.libPaths(c(lib, .libPaths()))
pkg <- sub("_.*", "", basename(tarball))
untar(tarball, files = paste0(pkg, "/DESCRIPTION"), exdir = tmp)
repo <- Sys.getenv("PKGFLEET_R_REPOSITORY")
if (nzchar(repo)) {
  options(repos = c(CRAN = repo), warn = 1)
  install_deps(read.dcf(file.path(tmp, pkg, "DESCRIPTION")), c("Depends", "Imports", "LinkingTo"), lib)
}
Sys.setenv(R_LIBS = paste(.libPaths(), collapse = .Platform$path.sep))
# The package itself goes into a scratch library: the build's library
# holds only what the package needs.
inst <- file.path(tmp, "pkgfleet-install")
dir.create(inst)
status <- system2(file.path(R.home("bin"), "R"),
                  c("CMD", "INSTALL", "--build", paste0("--library=", shQuote(inst)), shQuote(tarball)))
quit(save = "no", status = status)
