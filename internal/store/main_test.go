package store

import (
	"os"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

var rds *testenv.Redis

func TestMain(m *testing.M) { os.Exit(testenv.MainWithRedis(m, &rds)) }
