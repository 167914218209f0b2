//go:build linux

package sandbox

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// The watch's walk finds a build's processes below the root and sums
// their anonymous memory (statm's resident less shared) and their
// threads: a child holding 64 MiB in two threads is counted as such.
func TestProcTotalsCountsTheDescendantsAnonymousMemoryAndThreads(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is needed:", err)
	}
	cmd := exec.Command(python, "-c", `
import sys, threading, time
b = bytearray(64 << 20)
for i in range(0, len(b), 4096): b[i] = 1
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
`)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || strings.TrimSpace(line) != "ready" {
		t.Fatalf("the child said %q, %v", line, err)
	}
	// The walk from this process: the child is below it.
	anon, tasks := procTotals(os.Getpid())
	if anon < 64<<20 || tasks < 2 {
		t.Fatalf("procTotals = %d bytes, %d tasks; want at least the child's 64 MiB and 2 threads", anon, tasks)
	}
	// The child alone: statm's figure is status's RssAnon.
	child := anonOf(strconv.Itoa(cmd.Process.Pid), make([]byte, 128))
	status, _ := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/status")
	var rssAnon int64
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			rssAnon = kb << 10
		}
	}
	if child < 64<<20 || child != rssAnon {
		t.Fatalf("the child's anonymous memory from statm %d, RssAnon %d; want them equal, at least 64 MiB", child, rssAnon)
	}
}
