package pkgmeta

// ParseDCFRecords is parseDCF for the corpus test, which is an external test
// package: it needs internal/testenv, which (through config and door)
// imports pkgmeta.
var ParseDCFRecords = parseDCF
