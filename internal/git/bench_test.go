package git

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// BenchmarkClone clones one commit of a packed repository, as a build's
// checkout does, and reports the CPU it took (this process and the git
// processes it started) beside the wall time: a small package (4 files)
// and a large one (700 files).
func BenchmarkClone(b *testing.B) {
	for _, n := range []int{4, 700} {
		b.Run(fmt.Sprintf("files=%d", n), func(b *testing.B) {
			files := map[string]string{}
			for i := range n {
				files[fmt.Sprintf("d%d/f%03d.txt", i%10, i)] = fmt.Sprintf("file %d\n", i)
			}
			dir, sha := testenv.Repo(b, files)
			testenv.Git(b, dir, "repack", "-adq")
			c := &Client{Policy: URLPolicy{AllowFile: true}}
			tmp := b.TempDir()
			cpu := cpuTime()
			i := 0
			for b.Loop() {
				i++
				if _, err := c.Clone(context.Background(), filepath.Join(tmp, fmt.Sprint(i)), CloneOptions{URL: "file://" + dir, SHA: sha, Depth: 1}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
		})
	}
}

// cpuTime is the CPU this process and the children it reaped have used.
func cpuTime() time.Duration {
	var self, children syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	return time.Duration(self.Utime.Nano() + self.Stime.Nano() + children.Utime.Nano() + children.Stime.Nano())
}
