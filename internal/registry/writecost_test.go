package registry

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// redisCPU is the server's user and system CPU so far.
func redisCPU(t testing.TB, r *Registry) time.Duration {
	t.Helper()
	info, err := r.rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		t.Fatal(err)
	}
	var cpu time.Duration
	for _, line := range strings.Split(info, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		if k == "used_cpu_user" || k == "used_cpu_sys" {
			f, _ := strconv.ParseFloat(v, 64)
			cpu += time.Duration(f * float64(time.Second))
		}
	}
	return cpu
}

// TestBenchBuildWriteCost measures Redis's CPU per write of a build's
// record on its worker's path (a running write, the finishing write that
// makes it succeed) and per drop, so that what the served keys add to
// the scripts (served.go) is seen: the same test runs on a tree without
// them. PKGFLEET_BENCH=1 runs it.
func TestBenchBuildWriteCost(t *testing.T) {
	if os.Getenv("PKGFLEET_BENCH") == "" {
		t.Skip("PKGFLEET_BENCH=1 runs the benchmark")
	}
	r, ctx := setup(t), context.Background()
	const n = 2000
	var atts []Attempt
	for i := range n {
		b, _, err := r.CreateBuild(ctx, &Build{Source: "s", Builder: fmt.Sprint("b", i%10), Language: LangR, Ref: "main", SHA: fmt.Sprintf("%040x", i)}, ReuseActive)
		if err != nil {
			t.Fatal(err)
		}
		_, _, a, err := r.BeginAttempt(ctx, b.ID, 1, "w")
		if err != nil {
			t.Fatal(err)
		}
		atts = append(atts, a)
	}
	step := func(name string, write func(i int) error) {
		c0, t0 := redisCPU(t, r), time.Now()
		for i := range n {
			if err := write(i); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("BENCH build write %s: n=%d redis CPU per write=%s wall per write=%s", name, n,
			((redisCPU(t, r) - c0) / n).Round(time.Microsecond), (time.Since(t0) / n).Round(time.Microsecond))
	}
	step("running (fenced)", func(i int) error {
		_, err := r.UpdateBuildAs(ctx, atts[i], func(b *Build) error {
			b.Status, b.Worker = StatusRunning, "w"
			b.SetPhase(PhaseClone, time.Second)
			return nil
		})
		return err
	})
	step("succeeded with a tarball and a binary (fenced)", func(i int) error {
		_, err := r.UpdateBuildAs(ctx, atts[i], func(b *Build) error {
			pkg, ver := fmt.Sprint("p", i%20), fmt.Sprint("1.", i/20)
			b.Status, b.Package, b.Version = StatusSucceeded, pkg, ver
			b.Artifacts = []Artifact{{Kind: "source", File: pkg + "_" + ver + ".tar.gz", SHA256: strings.Repeat("ab", 32)},
				{Kind: "binary", File: pkg + "_" + ver + "_R_x86_64-pc-linux-gnu.tar.gz", Platform: "debian-12", RVersion: "4.4", SHA256: strings.Repeat("cd", 32)}}
			b.SetPhase(PhaseRecord, time.Millisecond)
			return nil
		})
		return err
	})
	step("dropped, oldest first", func(i int) error {
		recs, err := r.Records(ctx, []int64{atts[i].Build})
		if err == nil {
			_, err = r.DropBuilds(ctx, recs)
		}
		return err
	})
}
