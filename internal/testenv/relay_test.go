package testenv_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// echo serves an echo of every connection on loopback until the test ends.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

// roundTrip sends payload through addr and reads it back.
func roundTrip(t *testing.T, addr string, payload []byte) []byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go c.Write(payload)
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	return got
}

// A link holds each chunk for its latency each way, passes the bytes in
// order, and a latency set later applies to what is read from then on.
func TestLinkHoldsEachWayForItsLatencyAndKeepsTheBytes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	link := testenv.NewLink(t, ln, echo(t), 0)
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	if got := roundTrip(t, ln.Addr().String(), payload); !bytes.Equal(got, payload) {
		t.Fatal("a megabyte through the link came back changed")
	}
	const latency = 30 * time.Millisecond
	link.SetLatency(latency)
	began := time.Now()
	if got := roundTrip(t, ln.Addr().String(), []byte("ping")); string(got) != "ping" {
		t.Fatalf("got %q", got)
	}
	// A lower bound, which no scheduling can break: the bytes were held
	// once each way.
	if rtt := time.Since(began); rtt < 2*latency {
		t.Fatalf("a round trip took %s through a link of %s each way", rtt, latency)
	}
}

// The S3 and Sentinel tests' relay (a delay on answers) passes bytes
// unchanged, and delivers what it held while frozen once thawed.
func TestRelayPassesBytesUnchangedAndDeliversWhatItHeldOnThaw(t *testing.T) {
	r := testenv.NewRelay(t, echo(t), time.Millisecond)
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	if got := roundTrip(t, r.Addr(), payload); !bytes.Equal(got, payload) {
		t.Fatal("a megabyte through the relay came back changed")
	}
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r.Freeze()
	if _, err := c.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	r.Thaw()
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "held" {
		t.Fatalf("after the thaw: %q, %v", got, err)
	}
}
