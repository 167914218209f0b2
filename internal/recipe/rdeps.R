# Shared by the R scripts that install a package's dependencies from the
# repository behind the door (vignettes.R, binary.R; the Go side pastes it
# in front of them): install into lib what the DESCRIPTION's fields name
# and no library on .libPaths() has, with their own Depends, Imports and
# LinkingTo. What the repository lacks is only a warning here: the command
# that needs it says so in its own words.
install_deps <- function(desc, fields, lib) {
  fields <- intersect(fields, colnames(desc))
  need <- trimws(sub("\\(.*", "", unlist(strsplit(desc[1, fields], ","))))
  need <- setdiff(unique(need[nzchar(need)]), c("R", rownames(installed.packages())))
  if (length(need) > 0) {
    cat("==> installing into this build's library:", need, "\n")
    install.packages(need, lib = lib, dependencies = c("Depends", "Imports", "LinkingTo"), quiet = TRUE)
  }
}
