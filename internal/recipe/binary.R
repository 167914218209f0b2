# Run by Rscript inside the sandbox after R CMD build when the builder
# builds binaries (binary.go), after deps.R: install the package's Depends, Imports and
# LinkingTo from the repository behind the door (when there is one) into
# the build's library, then R CMD INSTALL --build the source tarball in the
# working directory, which leaves R's own binary tarball there
# (<pkg>_<version>_R_<platform>.tar.gz, DESCRIPTION with Built:).
# Arguments: the source tarball, the build's library ("": one in TMPDIR).
args <- commandArgs(trailingOnly = TRUE)
tarball <- args[[1]]
tmp <- Sys.getenv("TMPDIR")
lib <- if (length(args) > 1 && nzchar(args[[2]])) args[[2]] else file.path(tmp, "pkgfleet-library")
pkg <- sub("_.*", "", basename(tarball))
untar(tarball, files = paste0(pkg, "/DESCRIPTION"), exdir = tmp)
pkgfleet_install_deps(file.path(tmp, pkg, "DESCRIPTION"), lib, c("Depends", "Imports", "LinkingTo"))
# The package itself goes into a scratch library: the build's library
# holds only what the package needs.
inst <- file.path(tmp, "pkgfleet-install")
dir.create(inst)
status <- system2(file.path(R.home("bin"), "R"),
                  c("CMD", "INSTALL", "--build", paste0("--library=", shQuote(inst)), shQuote(tarball)))
quit(save = "no", status = status)
