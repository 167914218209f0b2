//go:build linux

package sandbox

import "testing"

func BenchmarkPlanSandbox(b *testing.B) {
	host, err := readHostFacts()
	if err != nil {
		b.Fatal(err)
	}
	hc := &launchSettings{Args: []string{"/bin/true"}, Dir: "/tmp", Source: "/tmp/a/src", Dest: "/tmp/a/dest", TmpDir: "/tmp/a/ws",
		Masks: []string{"/var/lib/x", "/etc/pkgfleet", "/tmp/y"}, UID: 1000, GID: 1000}
	f := inherited{out: 5, errW: 6, statusW: 7, lifeR: 8, door: -1}
	for b.Loop() {
		c, err := newStageC(hc, f.errW, host)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := planSandbox(hc, c, f, TierFull, ""); err != nil {
			b.Fatal(err)
		}
	}
}
