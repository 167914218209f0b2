package pkgmeta

import (
	"fmt"
	"strings"
)

// WheelTags returns the compatibility tags (PEP 425) a wheel's file name
// says it has, "python-abi-platform" each, compressed tag sets
// ("py2.py3-none-any") expanded: {name}-{version}(-{build})?-{python}-
// {abi}-{platform}.whl.
func WheelTags(file string) ([]string, error) {
	parts := strings.Split(strings.TrimSuffix(file, ".whl"), "-")
	if !strings.HasSuffix(file, ".whl") || (len(parts) != 5 && len(parts) != 6) {
		return nil, fmt.Errorf("%s is not a wheel's name (name-version[-build]-python-abi-platform.whl)", file)
	}
	n := len(parts)
	var tags []string
	for _, py := range strings.Split(parts[n-3], ".") {
		for _, abi := range strings.Split(parts[n-2], ".") {
			for _, plat := range strings.Split(parts[n-1], ".") {
				tags = append(tags, py+"-"+abi+"-"+plat)
			}
		}
	}
	return tags, nil
}

// LocalLinuxOnly reports whether tags are all of one Linux machine's own
// platform, "linux_<arch>": a wheel built with compiled code and not
// repaired (auditwheel) to a manylinux or musllinux tag. pip on any Linux
// of that architecture takes such a wheel, though it may need libraries
// of the distribution it was built on.
func LocalLinuxOnly(tags []string) bool {
	for _, t := range tags {
		if i := strings.LastIndex(t, "-"); i < 0 || !strings.HasPrefix(t[i+1:], "linux_") {
			return false
		}
	}
	return len(tags) > 0
}
