// Package version orders version strings the way people read them: R and
// Python package versions, and Git tags named like versions. It is a leaf:
// the poller's tag order, the worker's choice of the newest R or Python and
// the package indexes' newest release all use it, without pulling in Git,
// the sandbox or the recipes. It does not parse or validate versions of any
// one ecosystem (PEP 440, R's package_version); it only orders them.
package version

import (
	"strconv"
	"strings"
)

// Compare orders a and b as versions: runs of digits compare as numbers,
// so 4.10.1 is newer than 4.9.3 and tag v1.10.0 newer than v1.9.2. It
// returns -1, 0 or 1.
func Compare(a, b string) int {
	ta, tb := versionTokens(a), versionTokens(b)
	for i := 0; i < len(ta) && i < len(tb); i++ {
		x, y := ta[i], tb[i]
		xn, xerr := strconv.ParseUint(x, 10, 64)
		yn, yerr := strconv.ParseUint(y, 10, 64)
		switch {
		case xerr == nil && yerr == nil:
			if xn != yn {
				if xn < yn {
					return -1
				}
				return 1
			}
		case x != y:
			if x < y {
				return -1
			}
			return 1
		}
	}
	switch {
	case len(ta) < len(tb):
		return -1
	case len(ta) > len(tb):
		return 1
	}
	return strings.Compare(a, b)
}

func versionTokens(s string) []string {
	var out []string
	start := 0
	digit := func(r byte) bool { return r >= '0' && r <= '9' }
	for i := 1; i <= len(s); i++ {
		if i == len(s) || digit(s[i]) != digit(s[i-1]) {
			tok := s[start:i]
			if tok != "." && tok != "-" && tok != "_" {
				out = append(out, tok)
			}
			start = i
		}
	}
	return out
}
