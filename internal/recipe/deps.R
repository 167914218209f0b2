# The install step shared by the R scripts that run inside the sandbox with a
# door (vignettes.R, check.R): whatever the package at desc (a DESCRIPTION
# file) names in fields and this R lacks is installed from the repository
# behind the door (PKGFLEET_R_REPOSITORY) into lib, a library of this build
# only, which is put first on .libPaths() and R_LIBS for what runs next.
# Without a door (no PKGFLEET_R_REPOSITORY) nothing is installed: what runs
# next has the worker's R packages and whatever lib already holds.
pkgfleet_install_deps <- function(desc, lib, fields) {
  dir.create(lib, showWarnings = FALSE, recursive = TRUE)
  .libPaths(c(lib, .libPaths()))
  Sys.setenv(R_LIBS = paste(.libPaths(), collapse = .Platform$path.sep))
  repo <- Sys.getenv("PKGFLEET_R_REPOSITORY")
  if (!nzchar(repo)) return(invisible())
  options(repos = c(CRAN = repo), warn = 1)
  d <- read.dcf(desc)
  fields <- intersect(fields, colnames(d))
  need <- trimws(sub("\\(.*", "", unlist(strsplit(d[1, fields], ","))))
  need <- setdiff(unique(need[nzchar(need)]), c("R", rownames(installed.packages())))
  if (length(need) > 0) {
    cat("==> installing into this build's library:", need, "\n")
    # What is not in the repository is only a warning here: the command
    # that runs next says whether it needed it.
    install.packages(need, lib = lib, dependencies = c("Depends", "Imports", "LinkingTo"), quiet = TRUE)
  }
}
