module github.com/pkgfleet/pkgfleet

go 1.26.0

require golang.org/x/sys v0.48.0
