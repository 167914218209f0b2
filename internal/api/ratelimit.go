package api

import (
	"math"
	"net"
	"net/http"
	"strconv"
)

// Writes (POST, PUT, PATCH, DELETE on /api/v1 and the page's forms) are
// limited per API token, or per client address when there are no tokens,
// by a token bucket in Redis (HTTP.WriteRate, HTTP.WriteBurst) that every
// replica shares: a write token cannot create builders, runs or sources
// faster than that, whatever replica it talks to. Reads and webhooks
// (which carry no API token and only ask for a poll) are not limited here.

// writeMethod says whether a request changes something.
func writeMethod(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// limitWrite takes one write from the bucket of the token named who (""
// when there are no tokens: the client's address), answering 429 with
// Retry-After when it is empty. Other requests pass.
func (s *Server) limitWrite(w http.ResponseWriter, r *http.Request, who string) error {
	if !writeMethod(r.Method) {
		return nil
	}
	key := "token:" + who
	if who == "" {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		key = "addr:" + host
	}
	ok, wait, err := s.Writes.Allow(r.Context(), key)
	if err != nil || ok {
		return err
	}
	secs := int(math.Ceil(wait.Seconds()))
	w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
	return errorf(http.StatusTooManyRequests, "too many writes: at most %d a minute (HTTP.WriteRate) after a burst of %d (HTTP.WriteBurst); retry in %ds",
		s.Writes.PerMinute, s.Writes.Burst, max(secs, 1))
}
