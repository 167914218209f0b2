// Package notify fans Redis pub/sub messages out to the goroutines of one
// process: a process holds one subscription per channel, however many
// builds wait on it, and a goroutine listens for one payload (a build id)
// on one channel.
//
// Pub/sub is fire-and-forget: a message published while the connection is
// down is lost. Every user of this package therefore also re-checks the
// state it waits for on a timer; a notification only makes that happen
// sooner.
package notify

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Hub is one process's subscription to a set of channels.
type Hub struct {
	ps   *redis.PubSub
	log  *slog.Logger
	mu   sync.Mutex
	subs map[string]map[string]map[chan struct{}]struct{} // channel → payload → listeners
	done chan struct{}
}

// New subscribes to channels and dispatches their messages until Close.
func New(rdb redis.UniversalClient, log *slog.Logger, channels ...string) *Hub {
	h := &Hub{
		ps:   rdb.Subscribe(context.Background(), channels...),
		log:  log,
		subs: map[string]map[string]map[chan struct{}]struct{}{},
		done: make(chan struct{}),
	}
	// Wait (briefly) for the subscription, so that a message published
	// right after New returns is not missed; on failure the timer-based
	// re-checks of the callers still work and go-redis keeps reconnecting.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range channels {
		if _, err := h.ps.Receive(ctx); err != nil {
			log.Warn("pub/sub subscription not confirmed; relying on periodic checks", "error", err)
			break
		}
	}
	go h.loop()
	return h
}

func (h *Hub) loop() {
	defer close(h.done)
	// Channel resubscribes by itself after a lost connection.
	for msg := range h.ps.Channel() {
		h.mu.Lock()
		for ch := range h.subs[msg.Channel][msg.Payload] {
			select {
			case ch <- struct{}{}:
			default: // a wake-up is already pending
			}
		}
		h.mu.Unlock()
	}
}

// Listen returns a channel that receives a value when payload is published
// on channel, and a function that stops listening. Wake-ups coalesce: the
// channel holds at most one pending value. A nil Hub never wakes.
func (h *Hub) Listen(channel, payload string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	if h == nil {
		return ch, func() {}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.subs[channel] == nil {
		h.subs[channel] = map[string]map[chan struct{}]struct{}{}
	}
	if h.subs[channel][payload] == nil {
		h.subs[channel][payload] = map[chan struct{}]struct{}{}
	}
	h.subs[channel][payload][ch] = struct{}{}
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.subs[channel][payload], ch)
		if len(h.subs[channel][payload]) == 0 {
			delete(h.subs[channel], payload)
		}
	}
}

// Close ends the subscription.
func (h *Hub) Close() error {
	if h == nil {
		return nil
	}
	err := h.ps.Close()
	<-h.done
	return err
}
