package netpolicy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy is an HTTP CONNECT proxy on a loopback port that serves one
// client process (one git command and the git processes it starts): each
// tunnel it opens is dialled through the policy, so the address git's
// curl finally connects to, after every redirect, is the one checked. It
// counts the bytes that come back from the remotes and cuts every tunnel
// once they pass a limit.
//
// Why a proxy rather than pinning curl's resolution
// (http.curloptResolve) with redirects off: the pin needs the addresses
// before git starts, so a redirect, a submodule on another host or an
// alternates URL would be refused outright or escape the pin; a proxy sees
// each connection as curl makes it. It is bound to 127.0.0.1 and opens
// only what the policy allows anyway, so another local process that finds
// the port gains nothing.
type Proxy struct {
	policy *Policy
	limit  int64
	l      net.Listener
	ctx    context.Context
	cancel context.CancelFunc

	received atomic.Int64
	over     chan struct{}
	overOnce sync.Once

	mu      sync.Mutex
	refused error
	failed  error
	conns   map[net.Conn]bool
	served  sync.WaitGroup
}

// Listen starts a proxy for one client. limit > 0 caps the bytes received
// from remotes over all its tunnels.
func (p *Policy) Listen(limit int64) (*Proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("outbound proxy: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	x := &Proxy{policy: p, limit: limit, l: l, ctx: ctx, cancel: cancel, over: make(chan struct{}), conns: map[net.Conn]bool{}}
	x.served.Add(1)
	go x.serve()
	return x, nil
}

// URL is the proxy's address as curl's proxy setting takes it.
func (x *Proxy) URL() string { return "http://" + x.Addr() }

// Addr is the proxy's loopback address and port.
func (x *Proxy) Addr() string { return x.l.Addr().String() }

// Refused is the first connection the policy refused, or nil.
func (x *Proxy) Refused() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.refused
}

// Failed is the first connection that could not be made for another
// reason than the policy (no such host, refused, timed out), or nil.
func (x *Proxy) Failed() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.failed
}

// Over is closed once the bytes received pass the limit.
func (x *Proxy) Over() <-chan struct{} { return x.over }

// Received is the number of bytes received from remotes so far.
func (x *Proxy) Received() int64 { return x.received.Load() }

// Close stops the proxy and cuts its tunnels.
func (x *Proxy) Close() {
	x.cancel()
	x.l.Close()
	x.mu.Lock()
	for c := range x.conns {
		c.Close()
	}
	x.mu.Unlock()
	x.served.Wait()
}

func (x *Proxy) serve() {
	defer x.served.Done()
	x.accept(x.l, x.handle)
}

// accept hands each connection of l to handle until l is closed.
func (x *Proxy) accept(l net.Listener, handle func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		if !x.track(c) {
			c.Close()
			return
		}
		x.served.Add(1)
		go func() {
			defer x.served.Done()
			defer x.untrack(c)
			handle(c)
		}()
	}
}

// dial connects to target through the policy and remembers the first
// refusal and the first other failure.
func (x *Proxy) dial(target string) (net.Conn, error) {
	up, err := x.policy.DialContext(x.ctx, "tcp", target)
	if err != nil {
		// The first of each kind is what the client's failure was about.
		first := &x.failed
		var re *RefusedError
		if errors.As(err, &re) {
			first = &x.refused
		}
		x.mu.Lock()
		if *first == nil {
			*first = err
		}
		x.mu.Unlock()
		return nil, err
	}
	if !x.track(up) {
		up.Close()
		return nil, net.ErrClosed
	}
	return up, nil
}

// splice copies between the client (down, whose unread bytes are in
// from) and the remote until both are done, counting what comes back.
func (x *Proxy) splice(down net.Conn, up net.Conn, from io.Reader) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(up, from)
		if tc, ok := up.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	_, _ = io.Copy(down, &counted{r: up, x: x})
	down.Close()
	up.Close()
	<-done
}

// track remembers c for Close; false once closed.
func (x *Proxy) track(c net.Conn) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.ctx.Err() != nil {
		return false
	}
	x.conns[c] = true
	return true
}

func (x *Proxy) untrack(c net.Conn) {
	c.Close()
	x.mu.Lock()
	delete(x.conns, c)
	x.mu.Unlock()
}

func (x *Proxy) handle(down net.Conn) {
	_ = down.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(down)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	_ = down.SetReadDeadline(time.Time{})
	if req.Method != http.MethodConnect {
		_, _ = io.WriteString(down, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
		return
	}
	up, err := x.dial(req.Host)
	if err != nil {
		status, re := "502 Bad Gateway", (*RefusedError)(nil)
		if errors.As(err, &re) {
			status = "403 Forbidden"
		}
		_, _ = io.WriteString(down, "HTTP/1.1 "+status+"\r\nContent-Length: 0\r\n\r\n")
		return
	}
	defer x.untrack(up)
	if _, err := io.WriteString(down, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	x.splice(down, up, br) // br: what curl sent after CONNECT, then the rest
}

// counted counts what a tunnel receives and fails its reads once the
// proxy's total passes the limit.
type counted struct {
	r io.Reader
	x *Proxy
}

var errOver = errors.New("received more than the limit")

func (c *counted) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	total := c.x.received.Add(int64(n))
	if c.x.limit > 0 && total > c.x.limit {
		c.x.overOnce.Do(func() { close(c.x.over) })
		return 0, errOver
	}
	return n, err
}
