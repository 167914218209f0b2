package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/pkgfleet/pkgfleet/internal/auth"
	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/pkgfleet/pkgfleet/internal/credential"
	"github.com/pkgfleet/pkgfleet/internal/git"
	"github.com/pkgfleet/pkgfleet/internal/index"
	"github.com/pkgfleet/pkgfleet/internal/queue"
	"github.com/pkgfleet/pkgfleet/internal/ratelimit"
	"github.com/pkgfleet/pkgfleet/internal/redisconn"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/store"
	"github.com/pkgfleet/pkgfleet/internal/webhook"
	"github.com/redis/go-redis/v9"
)

// NewServer wires a Server on an existing Redis client.
func NewServer(cfg *config.Config, rdb redis.UniversalClient, log *slog.Logger) (*Server, error) {
	var tokens *auth.Tokens
	if cfg.HTTP.TokensFile != "" {
		t, err := auth.Watch(cfg.HTTP.TokensFile, log)
		if err != nil {
			return nil, err
		}
		tokens = t
	}
	st, err := store.New(context.Background(), cfg)
	if err != nil {
		return nil, err
	}
	creds, err := credential.FromConfig(rdb, cfg.Git)
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
			Durability:       redisconn.DurabilityOf(cfg.Redis),
		},
		Store: st,
		Git: &git.Client{Policy: git.URLPolicy{AllowFile: cfg.Git.AllowFileURLs},
			Net: outbound, MaxFetchSize: int64(cfg.Git.MaxCloneSize), ListWithGit: cfg.Git.ListRemotesWithGit},
		remotes: make(chan struct{}, cfg.Git.RemoteConcurrency),
		Tokens:  tokens,
		Index:   index.New(reg, st, log),
		Creds:   creds,
		Writes:  &ratelimit.Limiter{Redis: rdb, PerMinute: cfg.HTTP.WriteRate, Burst: cfg.HTTP.WriteBurst},
		Hooks:   &webhook.Store{Redis: rdb, Registry: reg, Secrets: creds},
		Log:     log,
	}
	s.Index.Redirect = cfg.Storage.S3Redirect
	if tokens != nil {
		s.Sessions = &auth.Sessions{Redis: rdb, Tokens: tokens, TTL: cfg.HTTP.SessionTimeout}
	}
	s.Metrics = s.newMetrics()
	reg.OnIDJump = s.idJumped
	reg.OnUnreadable = s.unreadableRecord
	reg.OnServedRebuild = func() {
		log.Warn("index listings: the per-source keys of served builds were behind the builds (a pkgfleet without them wrote, as in a rolling upgrade or after a rollback, or a record was deleted by hand); rebuilding them from every build")
	}
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
	// A store it cannot write to is a setting to fix, not a wait: the
	// API refuses to start, in one line naming the store.
	if err := s.Store.Check(ctx); err != nil {
		return err
	}
	// Before any build is created: the store's files are a witness of
	// build ids handed out that Redis cannot lose.
	if top, err := store.HighestBuildID(ctx, s.Store); err != nil {
		log.Warn("could not read the highest build id in the artifact store; ids rest on Redis's witnesses alone", "error", err)
	} else {
		s.Registry.SeeBuildID(top)
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
	// Credentials stored before they were bound to hosts are bound once
	// Redis answers; until then they are refused everywhere.
	go func() {
		if redisconn.WaitReady(ctx, rdb, log, redisconn.Describe(cfg.Redis)) != nil {
			return
		}
		if err := s.migrateCredentials(ctx); err != nil {
			log.Error("git credentials stored without hosts were not migrated; they stay unusable until the API restarts or an admin sets their hosts", "error", err)
		}
		// The per-source keys the index and the builds listings read
		// are filled now (once per store, or after a version without
		// them wrote), not by the first request that needs them.
		began := time.Now()
		if prepared, err := s.Registry.PrepareListings(ctx); err != nil {
			log.Warn("listings: the per-source keys were not filled; the first listing fills them", "error", err)
		} else if prepared {
			log.Info("listings: filled the per-source keys of the builds", "took", time.Since(began).Round(time.Millisecond).String())
		}
	}()
	auth := "tokens from " + cfg.HTTP.TokensFile
	if s.Tokens == nil {
		auth = "none (loopback only)"
	}
	log.Info("pkgfleet-api listening", "address", ln.Addr().String(), "auth", auth, "redis", redisconn.Describe(cfg.Redis))
	// Every replica campaigns; only the leader of each polls, sweeps the
	// store's orphans, reconciles, delivers outbound webhooks and applies
	// the retention policy.
	pollCtx, stopPolling := context.WithCancel(ctx)
	var leaders sync.WaitGroup
	for _, run := range []func(context.Context) error{s.Poller().Run, s.Sweeper().Run, s.Reconciler().Run, s.Dispatcher().Run, s.Retainer().Run} {
		leaders.Go(func() { _ = run(pollCtx) })
	}
	defer func() { stopPolling(); leaders.Wait() }()
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
