package store

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// cpu is this process's user+system CPU, and its reaped children's.
func cpu() (self, children time.Duration) {
	var s, c syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &s)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &c)
	tv := func(r syscall.Rusage) time.Duration {
		return time.Duration(r.Utime.Nano() + r.Stime.Nano())
	}
	return tv(s), tv(c)
}

func pct(d []time.Duration, p float64) time.Duration {
	slices.Sort(d)
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

// TestBenchStorePhase: the store phase of a build (Put of its files, an
// R tarball and a wheel of the examples' size, and a 5 MiB one) on the
// directory and on S3 (versitygw on loopback), one after the other in
// turn, p50/p99 wall and this process's CPU per Put; then a 100 MiB
// artifact up and down through the store against curl on the same
// server, and downloads through the API's streaming and its presigned
// redirect. scripts/bench.sh runs it.
func TestBenchStorePhase(t *testing.T) {
	if os.Getenv("PKGFLEET_BENCH") == "" {
		t.Skip("a benchmark: scripts/bench.sh runs it")
	}
	testenv.Require(t, "curl")
	ctx := context.Background()
	b := testenv.S3(t)
	stores := map[string]Artifacts{"file": nil, "s3": bucketOn(t, b, "bench/")}
	dir, err := NewDir(filepath.Join(t.TempDir(), "packages"))
	if err != nil {
		t.Fatal(err)
	}
	stores["file"] = dir
	for _, c := range []struct {
		what  string
		sizes []int
	}{{"a build's files (16 KiB tarball + 16 KiB wheel)", []int{16 << 10, 16 << 10}}, {"one 5 MiB tarball", []int{5 << 20}}} {
		src := t.TempDir()
		var arts []registry.Artifact
		for i, n := range c.sizes {
			data := make([]byte, n)
			rand.Read(data)
			name := fmt.Sprintf("f%d.tar.gz", i)
			os.WriteFile(filepath.Join(src, name), data, 0o600)
			arts = append(arts, registry.Artifact{File: name})
		}
		const runs = 100
		wall := map[string][]time.Duration{}
		cpus := map[string]time.Duration{}
		for i := range runs {
			for _, name := range []string{"file", "s3"} {
				c0, _ := cpu()
				start := time.Now()
				if _, err := stores[name].Put(ctx, "bench", "pkg", int64(i+1), int64(len(c.sizes)), src, arts); err != nil {
					t.Fatal(err)
				}
				wall[name] = append(wall[name], time.Since(start))
				c1, _ := cpu()
				cpus[name] += c1 - c0
			}
		}
		for _, name := range []string{"file", "s3"} {
			t.Logf("BENCH store phase, %s, %s: runs=%d p50=%s p99=%s cpu/put=%s", c.what, name, runs,
				pct(wall[name], 0.5).Round(10*time.Microsecond), pct(wall[name], 0.99).Round(10*time.Microsecond), (cpus[name] / runs).Round(10*time.Microsecond))
		}
	}

	// 100 MiB up and down: the store against curl, same server.
	const big = 100 << 20
	src := t.TempDir()
	data := make([]byte, big)
	rand.Read(data)
	path := filepath.Join(src, "big.tar.gz")
	os.WriteFile(path, data, 0o600)
	s := stores["s3"]
	mbps := func(d time.Duration) string { return fmt.Sprintf("%.0f MB/s", float64(big)/1e6/d.Seconds()) }
	measure := func(what string, f func()) {
		c0, ch0 := cpu()
		start := time.Now()
		f()
		d := time.Since(start)
		c1, ch1 := cpu()
		t.Logf("BENCH 100 MiB %s: %s (%s) cpu: pkgfleet=%s curl=%s", what, d.Round(time.Millisecond), mbps(d), (c1 - c0).Round(time.Millisecond), (ch1 - ch0).Round(time.Millisecond))
	}
	measure("upload, store (multipart 8 MiB x4)", func() {
		if _, err := s.Put(ctx, "bench", "big", 1, 1, src, []registry.Artifact{{File: "big.tar.gz"}}); err != nil {
			t.Fatal(err)
		}
	})
	sigv4 := func(args ...string) {
		cmd := exec.Command("curl", append([]string{"-sS", "--fail", "-K", "-", "--aws-sigv4", "aws:amz:" + b.Region + ":s3", "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"}, args...)...)
		cmd.Stdin = strings.NewReader(fmt.Sprintf("user = %q\n", b.AccessKey+":"+b.SecretKey))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
	}
	measure("upload, curl -T (one PUT)", func() { sigv4("-T", path, b.Endpoint+"/"+b.Bucket+"/curl-big") })
	measure("download, store (Open, io.Copy)", func() {
		f, err := s.Open(ctx, "bench", "big", 1, 1, "big.tar.gz")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if n, err := io.Copy(io.Discard, f); err != nil || n != big {
			t.Fatalf("read %d: %v", n, err)
		}
	})
	measure("download, curl", func() { sigv4("-o", "/dev/null", b.Endpoint+"/"+b.Bucket+"/curl-big") })
	for _, redirect := range []bool{false, true} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := Serve(w, r, s, redirect, "bench", "big", 1, 1, "big.tar.gz"); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
			}
		}))
		what := "download, curl through pkgfleet streaming (Storage.S3Redirect = false)"
		if redirect {
			what = "download, curl -L through pkgfleet's presigned redirect (Storage.S3Redirect = true)"
		}
		measure(what, func() {
			if out, err := exec.Command("curl", "-sS", "--fail", "-L", "-o", "/dev/null", srv.URL).CombinedOutput(); err != nil {
				t.Fatalf("curl: %v\n%s", err, out)
			}
		})
		srv.Close()
	}
}
