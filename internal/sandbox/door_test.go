//go:build linux

package sandbox_test

import (
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/sandbox"
)

// greeter is a Door that answers each connection with one line and counts
// the connections it served.
type greeter struct{ served atomic.Int32 }

func (g *greeter) Serve(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return nil // the runner closed l: the build is over
		}
		g.served.Add(1)
		_, _ = c.Write([]byte("WORKER SIDE OF THE DOOR\n"))
		c.Close()
	}
}

// doorProbe connects to the door, then tries to take its address.
const doorProbe = `
import socket
s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
print("door says", s.makefile().readline().strip())
b = socket.socket()
try:
    b.bind(("127.0.0.1", 3128))
    print("bind ok")
except OSError as e:
    print("bind refused", e.errno)
`

// The door is the worker's: a build reaches it at DoorAddr, in its own
// network namespace, and cannot take that address over.
func TestABuildReachesTheWorkerThroughItsDoorAndCannotTakeItsAddress(t *testing.T) {
	t.Parallel()
	python := need(t, "/usr/bin/python3") // what a build sees: /usr, not a user's shims
	e := setup(t)
	g := &greeter{}
	res, out := e.run([]string{python, "-c", doorProbe}, func(s *sandbox.Spec) { s.Door = g })
	if !res.Success() || !strings.Contains(out, "door says WORKER SIDE OF THE DOOR") || !strings.Contains(out, "bind refused 98") {
		t.Fatalf("%+v\n%s", res, out)
	}
	if g.served.Load() != 1 {
		t.Errorf("the door served %d connections, want 1", g.served.Load())
	}
	// Without a door nothing listens there.
	res, out = e.run([]string{python, "-c", doorProbe})
	if res.Success() || !strings.Contains(out, "ConnectionRefusedError") {
		t.Fatalf("without a door: %+v\n%s", res, out)
	}
}

// Unsandboxed, the door is served on a host loopback port and DoorAddr in
// the build's environment names it.
func TestDirectServesTheDoorWhereTheEnvironmentSays(t *testing.T) {
	t.Parallel()
	python := need(t, "/usr/bin/python3") // what a build sees: /usr, not a user's shims
	g := &greeter{}
	var out strings.Builder
	d := sandbox.NewDirect(sandbox.Config{TempDir: t.TempDir()})
	res, err := d.Run(t.Context(), sandbox.Spec{
		Args: []string{python, "-c", `import os, socket
h, p = os.environ["DOOR"].rsplit(":", 1)
print(socket.create_connection((h, int(p)), timeout=10).makefile().readline().strip())`},
		Env: []string{"DOOR=" + sandbox.DoorAddr}, Door: g, Output: &out,
	})
	if err != nil || !res.Success() || !strings.Contains(out.String(), "WORKER SIDE OF THE DOOR") {
		t.Fatalf("%+v %v\n%s", res, err, out.String())
	}
}
