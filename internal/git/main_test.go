package git

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	Init() // git runs the test binary as its connector (connect.go)
	os.Exit(m.Run())
}
