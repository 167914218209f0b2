package git

import (
	"os"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/sandbox"
)

func TestMain(m *testing.M) {
	sandbox.Init() // the hostile build's sandbox re-executes the test binary
	Init()         // git runs the test binary as its connector (connect.go)
	os.Exit(m.Run())
}
