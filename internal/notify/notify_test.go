package notify

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

var redisServer *testenv.Redis

func TestMain(m *testing.M) { os.Exit(testenv.MainWithRedis(m, &redisServer)) }

func TestListenersWakeOnlyForTheirPayloadAndCoalesce(t *testing.T) {
	t.Parallel()
	rdb, _ := redisServer.DB(t)
	hub := New(rdb, testenv.Logger(t), "chan")
	defer hub.Close()
	seven, stop7 := hub.Listen("chan", "7")
	defer stop7()
	eight, stop8 := hub.Listen("chan", "8")
	ctx := context.Background()
	for range 3 {
		rdb.Publish(ctx, "chan", "7")
	}
	select {
	case <-seven:
	case <-time.After(5 * time.Second):
		t.Fatal("listener of 7 was not woken")
	}
	// Three messages, one pending wake-up at most: the buffer holds one.
	testenv.Eventually(t, 5*time.Second, "the other messages to be delivered", func() bool {
		rdb.Publish(ctx, "chan", "7")
		return len(seven) == 1
	})
	if len(eight) != 0 {
		t.Fatal("listener of 8 was woken by 7")
	}
	stop8()
	<-seven // drain the pending wake-up
	rdb.Publish(ctx, "chan", "8")
	rdb.Publish(ctx, "chan", "7") // delivered in order: 8 came first
	<-seven
	if len(eight) != 0 {
		t.Fatal("a stopped listener was woken")
	}
}
