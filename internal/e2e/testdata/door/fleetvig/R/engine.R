# The engine R CMD build finds through VignetteBuilder: fleetvig. A .fleet
# file is HTML with %\Vignette... metadata lines, which weave drops.
.onLoad <- function(libname, pkgname) {
  vignetteEngine("html", package = pkgname, pattern = "[.]fleet$",
    weave = function(file, ...) {
      out <- sub("[.]fleet$", ".html", basename(file))
      lines <- readLines(file)
      writeLines(c("<!DOCTYPE html>", "<html><body>", lines[!grepl("^%", lines)],
                   "<p>woven by fleetvig</p>", "</body></html>"), out)
      out
    },
    tangle = function(file, ...) {
      out <- sub("[.]fleet$", ".R", basename(file))
      writeLines("# no code", out)
      out
    })
}
