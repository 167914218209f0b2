//go:build !amd64

package main

func foreignABIs(string) {}
