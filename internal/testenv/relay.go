package testenv

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Relay is a TCP proxy on loopback that holds back the first bytes of
// every answer by a delay: a connection's upstream bytes that follow bytes
// from the client wait Delay before they go on. Bytes are passed through
// unchanged, so signed requests (whose Host is the relay's) stay valid.
// Freeze cuts it as a partition does: connections hang, neither bytes nor
// closes cross, until Thaw delivers what it held (as TCP does once a
// partition heals).
//
// A relay made by NewLink is a link's latency instead: every chunk, each
// way, is held for the one-way latency after it was read, as tc netem's
// delay does to packets (for kernels without netem).
type Relay struct {
	ln      net.Listener
	target  string
	delay   atomic.Int64
	latency atomic.Int64
	done    chan struct{}
	wg      sync.WaitGroup
	// gate is write-held while frozen; every dial, write and close
	// read-holds it.
	gate sync.RWMutex

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	frozen bool
}

// NewRelay listens on a loopback port and relays each connection to
// target; it is closed when the test ends.
func NewRelay(t testing.TB, target string, delay time.Duration) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := newRelay(t, ln, target)
	r.delay.Store(int64(delay))
	return r
}

// NewLink relays each connection accepted on ln (a listener in a network
// namespace, say) to target, a host:port or a unix socket's path, with a
// one-way latency each way: a request and its answer take 2×latency more.
// It is closed when the test ends.
func NewLink(t testing.TB, ln net.Listener, target string, latency time.Duration) *Relay {
	t.Helper()
	r := newRelay(t, ln, target)
	r.latency.Store(int64(latency))
	return r
}

func newRelay(t testing.TB, ln net.Listener, target string) *Relay {
	r := &Relay{ln: ln, target: target, done: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(r.Close)
	return r
}

// Addr is the relay's host:port.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// SetDelay changes the delay for the answers from now on.
func (r *Relay) SetDelay(d time.Duration) { r.delay.Store(int64(d)) }

// SetLatency changes a link's one-way latency for the chunks read from now
// on.
func (r *Relay) SetLatency(d time.Duration) { r.latency.Store(int64(d)) }

// Freeze cuts the link until Thaw.
func (r *Relay) Freeze() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.frozen {
		r.frozen = true
		r.gate.Lock()
	}
}

// Thaw heals the link.
func (r *Relay) Thaw() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.frozen {
		r.frozen = false
		r.gate.Unlock()
	}
}

// Close stops accepting and cuts every relayed connection.
func (r *Relay) Close() {
	r.Thaw()
	select {
	case <-r.done:
		return
	default:
	}
	close(r.done)
	r.ln.Close()
	r.mu.Lock()
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *Relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.done:
		c.Close()
		return false
	default:
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *Relay) accept() {
	defer r.wg.Done()
	for {
		client, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.gate.RLock()
		network := "tcp"
		if strings.HasPrefix(r.target, "/") {
			network = "unix"
		}
		upstream, err := net.Dial(network, r.target)
		r.gate.RUnlock()
		if err != nil {
			client.Close()
			continue
		}
		if !r.track(client) || !r.track(upstream) {
			client.Close()
			upstream.Close()
			continue
		}
		var asked atomic.Bool // the client sent bytes the upstream has not answered
		r.wg.Add(2)
		go func() {
			defer r.wg.Done()
			r.pipe(upstream, client, func() { asked.Store(true) })
		}()
		go func() {
			defer r.wg.Done()
			r.pipe(client, upstream, func() {
				if asked.Swap(false) {
					select {
					case <-time.After(time.Duration(r.delay.Load())):
					case <-r.done:
					}
				}
			})
		}()
	}
}

// pipe copies src to dst, calling before ahead of each write and holding
// each chunk until the latency after it was read, and closes both when
// either side ends.
func (r *Relay) pipe(dst, src net.Conn, before func()) {
	type chunk struct {
		b   []byte
		due time.Time
	}
	// A reader of its own, so that a held chunk does not hold up reading
	// the ones behind it (a link's latency is not a bandwidth limit).
	chunks := make(chan chunk, 256)
	go func() {
		defer close(chunks)
		buf := make([]byte, 64<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				chunks <- chunk{bytes.Clone(buf[:n]), time.Now().Add(time.Duration(r.latency.Load()))}
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		r.gate.RLock()
		dst.Close()
		src.Close()
		r.gate.RUnlock()
		for range chunks { // the reader ends on the closed src
		}
		r.mu.Lock()
		delete(r.conns, dst)
		delete(r.conns, src)
		r.mu.Unlock()
	}()
	for c := range chunks {
		before()
		if wait := time.Until(c.due); wait > 0 {
			select {
			case <-time.After(wait):
			case <-r.done:
				return
			}
		}
		r.gate.RLock()
		_, werr := dst.Write(c.b)
		r.gate.RUnlock()
		if werr != nil {
			return
		}
	}
}
