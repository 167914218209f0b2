# Run by Rscript inside the sandbox for the check stage (check.go), after
# deps.R: with a door (PKGFLEET_R_REPOSITORY set), install what the package
# names in Depends, Imports, LinkingTo and Suggests into the build's library
# (PKGFLEET_R_LIBRARY), then R CMD check --no-manual --as-cran the tarball,
# its results (pkg.Rcheck) in the working directory. Arguments: the tarball
# and the package's name.
args <- commandArgs(trailingOnly = TRUE)
tarball <- args[[1]]
pkg <- args[[2]]
lib <- Sys.getenv("PKGFLEET_R_LIBRARY")
repo <- Sys.getenv("PKGFLEET_R_REPOSITORY")
if (nzchar(repo)) {
  meta <- file.path(Sys.getenv("TMPDIR"), "pkgfleet-description")
  untar(tarball, files = paste0(pkg, "/DESCRIPTION"), exdir = meta)
  pkgfleet_install_deps(file.path(meta, pkg, "DESCRIPTION"), lib, c("Depends", "Imports", "LinkingTo", "Suggests"))
  # --as-cran asks the repository about the dependencies (orphaned ones):
  # the repository behind the door, not CRAN, which the sandbox cannot reach.
  profile <- file.path(Sys.getenv("TMPDIR"), "pkgfleet-Rprofile")
  writeLines(sprintf("options(repos = c(CRAN = %s))", deparse(repo)), profile)
  Sys.setenv(R_PROFILE_USER = profile)
} else {
  .libPaths(c(lib, .libPaths()))
  Sys.setenv(R_LIBS = paste(.libPaths(), collapse = .Platform$path.sep))
}
status <- system2(file.path(R.home("bin"), "R"), c("CMD", "check", "--no-manual", "--as-cran", shQuote(tarball)))
quit(save = "no", status = status)
