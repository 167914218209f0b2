//go:build linux

package sandbox_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/sandbox"
)

func TestDirectRunsWithOwnTMPDIRAndLimits(t *testing.T) {
	e := setup(t)
	d := sandbox.NewDirect(e.cfg)
	if d.Mode() != "unsandboxed" {
		t.Errorf("Mode = %q", d.Mode())
	}
	var out safeBuffer
	res, err := d.Run(context.Background(), sandbox.Spec{
		Args: []string{"/bin/sh", "-c", `env | grep -c '^TMPDIR='; test -d "$TMPDIR" && exit 3`},
		Env:  []string{"PATH=/usr/bin:/bin", "TMPDIR=/tmp"}, Dir: e.source, Output: &out,
	})
	if err != nil || res.ExitCode != 3 || strings.TrimSpace(out.String()) != "1" || res.Enforcement != "unsandboxed" {
		t.Errorf("result %+v, err %v, output %q", res, err, out.String())
	}
	res, err = d.Run(context.Background(), sandbox.Spec{Args: []string{"/bin/sh", "-c", "while :; do :; done"},
		Limits: sandbox.Limits{Timeout: 200 * time.Millisecond}})
	if err != nil || res.Killed != "timeout 200ms" {
		t.Errorf("timeout: %+v %v", res, err)
	}
}
