package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/hibiken/asynq"
	"github.com/pkgfleet/pkgfleet/internal/auth"
	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/pkgfleet/pkgfleet/internal/credential"
	"github.com/pkgfleet/pkgfleet/internal/git"
	"github.com/pkgfleet/pkgfleet/internal/index"
	"github.com/pkgfleet/pkgfleet/internal/queue"
	"github.com/pkgfleet/pkgfleet/internal/redisconn"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/store"
	"github.com/redis/go-redis/v9"
)

// NewServer wires a Server on an existing Redis client.
func NewServer(cfg *config.Config, rdb redis.UniversalClient, log *slog.Logger) (*Server, error) {
	var tokens *auth.Tokens
	if cfg.HTTP.TokensFile != "" {
		t, err := auth.Load(cfg.HTTP.TokensFile)
		if err != nil {
			return nil, err
		}
		tokens = t
	}
	st, err := store.New(cfg.FileStorage.Location)
	if err != nil {
		return nil, err
	}
	creds, err := credential.NewStore(rdb, cfg.Git.CredentialKeyFile)
	if err != nil {
		return nil, err
	}
	outbound, err := cfg.Outbound()
	if err != nil {
		return nil, err
	}
	reg := registry.New(rdb)
	s := &Server{
		Config:   cfg,
		Registry: reg,
		Enqueuer: &queue.Enqueuer{
			Registry:  reg,
			Client:    asynq.NewClientFromRedisClient(rdb),
			Inspector: asynq.NewInspectorFromRedisClient(rdb),
			// A wait for a build slot, the clone, the build and the upload.
			Timeout:          queue.TaskTimeout(cfg),
			MaxAttempts:      cfg.Git.BuildRetries,
			Redis:            rdb,
			BuildConcurrency: cfg.Git.BuildConcurrency,
		},
		Store: st,
		Git: &git.Client{Policy: git.URLPolicy{AllowFile: cfg.Git.AllowFileURLs},
			Net: outbound, MaxFetchSize: int64(cfg.Git.MaxCloneSize)},
		remotes: make(chan struct{}, cfg.Git.RemoteConcurrency),
		Tokens:  tokens,
		Index:   index.New(reg, st),
		Creds:   creds,
		Log:     log,
	}
	s.Metrics = s.newMetrics()
	return s, nil
}

// Run serves the API until ctx ends.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	if err := CheckListen(cfg.HTTP.Listen, cfg.HTTP.TokensFile != ""); err != nil {
		return err
	}
	rdb, err := redisconn.Client(cfg.Redis)
	if err != nil {
		return err
	}
	defer rdb.Close()
	s, err := NewServer(cfg, rdb, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	// Serve at once (readyz says whether Redis is there) and log until
	// Redis answers, so an API started before Redis recovers by itself.
	go func() { _ = redisconn.WaitReady(ctx, rdb, log, redisconn.Describe(cfg.Redis)) }()
	auth := "tokens from " + cfg.HTTP.TokensFile
	if s.Tokens == nil {
		auth = "none (loopback only)"
	}
	log.Info("pkgfleet-api listening", "address", ln.Addr().String(), "auth", auth, "redis", redisconn.Describe(cfg.Redis))
	// Every replica campaigns; only the leader polls.
	pollCtx, stopPolling := context.WithCancel(ctx)
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		_ = s.Poller().Run(pollCtx)
	}()
	defer func() { stopPolling(); <-polled }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("pkgfleet-api stopped")
	return nil
}
