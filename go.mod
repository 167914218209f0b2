module github.com/pkgfleet/pkgfleet

go 1.26.0
