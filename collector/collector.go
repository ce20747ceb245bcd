// Package collector runs promptrail's collector: it takes record batches
// from agents (POST /v1/ingest), keeps them in a tamper-evident Badger
// store (collector/store) and answers queries, record lookups with
// inclusion proofs, verification, /metrics and /healthz over HTTP.
package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/promptrail/promptrail/collector/auth"
	"github.com/promptrail/promptrail/collector/store"
)

// Config configures a collector. Zero values take the documented defaults.
type Config struct {
	// DataDir holds the store and the checkpoint signing key. Required.
	DataDir string
	// Listen is the API's address. Empty: 127.0.0.1:7070.
	Listen string
	// Auth authenticates callers. Required (see auth.LoadTokens).
	Auth auth.Authenticator
	// Retention drops records older than this, a whole time bucket at a
	// time. Zero: keep forever.
	Retention time.Duration
	// CheckpointEvery is how often a signed checkpoint is published, also
	// when idle. Zero: 30s.
	CheckpointEvery time.Duration
	// MaxBatchBytes is the largest ingest body accepted. Zero (or more than
	// the store takes): store.MaxBatchBytes.
	MaxBatchBytes int64
	// MaxClockSkew is how far a record's start may be from the time it
	// arrives, either way, before it is rejected. Zero:
	// store.DefaultMaxClockSkew (7 days); negative: no check.
	MaxClockSkew time.Duration
	// ApprovalTTL is how long an approval request waits for a decision
	// before it expires. Zero: DefaultApprovalTTL (1h).
	ApprovalTTL time.Duration
	// Webhook, if its URL is set, is called when a request starts waiting
	// for approval.
	Webhook WebhookConfig
	// Server bounds what one connection or client may take of the HTTP
	// server. Zero fields take the defaults of ServerLimits.
	Server ServerLimits
	// Origin names the log in its checkpoints. Empty: "promptrail
	// collector <hostname>".
	Origin string
	// Logger is the collector's logger. Nil: slog.Default().
	Logger *slog.Logger
	// Ready, if set, is called with the listener's address once the
	// collector serves.
	Ready func(addr net.Addr)
}

// ServerLimits bounds the collector's HTTP server, so that slow or greedy
// clients cannot hold its connections, memory or store.
type ServerLimits struct {
	// ReadHeaderTimeout bounds reading a request's headers. Zero: 10s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included: a 4 MiB
	// batch at a slow agent's pace. Zero: 1m.
	ReadTimeout time.Duration
	// IdleTimeout closes a kept-alive connection idle this long. Zero: 2m.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers. Zero: 64 KiB.
	MaxHeaderBytes int
	// MaxRequestsPerClient bounds the requests one client address has in
	// flight; more are answered 429 with Retry-After. Zero: 16.
	MaxRequestsPerClient int
}

// Defaults of ServerLimits.
const (
	DefaultReadHeaderTimeout    = 10 * time.Second
	DefaultReadTimeout          = time.Minute
	DefaultIdleTimeout          = 2 * time.Minute
	DefaultMaxHeaderBytes       = 64 << 10
	DefaultMaxRequestsPerClient = 16
)

func (l *ServerLimits) setDefaults() error {
	if l.ReadHeaderTimeout < 0 || l.ReadTimeout < 0 || l.IdleTimeout < 0 || l.MaxHeaderBytes < 0 || l.MaxRequestsPerClient < 0 {
		return errors.New("collector: server timeouts and limits must not be negative (0 selects the default)")
	}
	set := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	set(&l.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	set(&l.ReadTimeout, DefaultReadTimeout)
	set(&l.IdleTimeout, DefaultIdleTimeout)
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxRequestsPerClient == 0 {
		l.MaxRequestsPerClient = DefaultMaxRequestsPerClient
	}
	return nil
}

// Run runs a collector until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger
	if cfg.DataDir == "" {
		return errors.New("collector: no data directory")
	}
	if cfg.Auth == nil {
		return errors.New("collector: no authenticator (tokens file)")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:7070"
	}
	if err := cfg.Server.setDefaults(); err != nil {
		return err
	}
	if cfg.Origin == "" {
		host, _ := os.Hostname()
		cfg.Origin = "promptrail collector " + host
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("collector: creating data directory: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	st, err := store.Open(ctx, store.Config{
		Dir: filepath.Join(cfg.DataDir, "store"), Logger: log, Retention: cfg.Retention,
		Origin: cfg.Origin, CheckpointEvery: cfg.CheckpointEvery, MaxClockSkew: cfg.MaxClockSkew, Registerer: reg,
	})
	if err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	defer st.Close()
	var hook *Webhook
	if cfg.Webhook.URL != "" {
		cfg.Webhook.Logger, cfg.Webhook.Registerer = log, reg
		if hook, err = NewWebhook(cfg.Webhook); err != nil {
			return err
		}
	}
	h, err := NewHandler(HandlerConfig{Store: st, Auth: cfg.Auth, MaxBatchBytes: cfg.MaxBatchBytes,
		PolicyFile:  filepath.Join(cfg.DataDir, "policy.yaml"),
		ApprovalTTL: cfg.ApprovalTTL, Webhook: hook,
		MaxRequestsPerClient: cfg.Server.MaxRequestsPerClient, Logger: log, Registry: reg})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout, ReadTimeout: cfg.Server.ReadTimeout,
		IdleTimeout: cfg.Server.IdleTimeout, MaxHeaderBytes: cfg.Server.MaxHeaderBytes}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- st.Run(ctx) }()
	go func() { errc <- srv.Serve(ln) }()
	if hook != nil {
		go hook.Run(ctx)
	}
	log.Info("collector serving", "listen", ln.Addr().String(), "data_dir", cfg.DataDir, "retention", cfg.Retention.String())
	if cfg.Ready != nil {
		cfg.Ready(ln.Addr())
	}
	select {
	case <-ctx.Done():
	case err = <-errc:
		if errors.Is(err, context.Canceled) || errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
	}
	shutdown, done := context.WithTimeout(context.Background(), 10*time.Second)
	defer done()
	srv.Shutdown(shutdown)
	cancel()
	log.Info("collector stopped")
	return err
}

// HandlerConfig configures NewHandler.
type HandlerConfig struct {
	Store         *store.Store
	Auth          auth.Authenticator
	MaxBatchBytes int64
	// MaxRequestsPerClient bounds the requests in flight per client
	// address (429 beyond). Zero: no bound.
	MaxRequestsPerClient int
	// ApprovalTTL is how long an approval request waits for a decision
	// before it expires (0: DefaultApprovalTTL).
	ApprovalTTL time.Duration
	// Webhook, if set, is told of every new approval request; the caller
	// runs it (Webhook.Run).
	Webhook *Webhook
	// PolicyFile keeps the policy pushed with PUT /v1/policy. Empty: no
	// policy routes.
	PolicyFile string
	Logger     *slog.Logger
	// Registry receives the API's metrics and is served on /metrics. Nil:
	// a fresh registry.
	Registry *prometheus.Registry
}

// NewHandler returns the collector's HTTP API.
func NewHandler(cfg HandlerConfig) (http.Handler, error) {
	if cfg.Store == nil || cfg.Auth == nil {
		return nil, errors.New("collector: handler needs a store and an authenticator")
	}
	if cfg.MaxBatchBytes <= 0 || cfg.MaxBatchBytes > store.MaxBatchBytes {
		cfg.MaxBatchBytes = store.MaxBatchBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	m := newMetrics(cfg.Registry)
	a := &api{store: cfg.Store, auth: cfg.Auth, maxBatch: cfg.MaxBatchBytes, log: cfg.Logger, m: m}
	if cfg.PolicyFile != "" {
		var err error
		if a.policy, err = openPolicyStore(cfg.PolicyFile); err != nil {
			return nil, err
		}
	}
	var err error
	if a.approvals, err = openApprovals(context.Background(), cfg.Store, cfg.ApprovalTTL, cfg.Logger); err != nil {
		return nil, err
	}
	a.approvals.webhook = cfg.Webhook
	mux := http.NewServeMux()
	a.routes(mux)
	a.approvalRoutes(mux)
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{Registry: cfg.Registry}))
	var h http.Handler = mux
	if cfg.MaxRequestsPerClient > 0 {
		h = perClient(cfg.MaxRequestsPerClient, m, h)
	}
	return m.instrument(mux, h), nil
}

type metrics struct {
	ingested, duplicates prometheus.Counter
	ingestRejected       *prometheus.CounterVec
	recordsRejected      *prometheus.CounterVec
	clientLimited        prometheus.Counter
	requests             *prometheus.CounterVec
	duration             *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		ingested: prometheus.NewCounter(prometheus.CounterOpts{Name: "promptrail_collector_ingested_records_total",
			Help: "Records stored from agents' batches."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "promptrail_collector_duplicate_records_total",
			Help: "Records received again (retried batches) and acknowledged without storing."}),
		ingestRejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "promptrail_collector_ingest_rejected_total",
			Help: "Batches refused, by reason."}, []string{"reason"}),
		clientLimited: prometheus.NewCounter(prometheus.CounterOpts{Name: "promptrail_collector_client_limited_total",
			Help: "Requests answered 429 because their client had too many in flight."}),
		recordsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "promptrail_collector_records_rejected_total",
			Help: "Records refused for good (the rest of their batch stored), by code: invalid_record, record_too_large, clock_skew."}, []string{"code"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "promptrail_collector_http_requests_total",
			Help: "HTTP requests, by route and status code."}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "promptrail_collector_http_request_seconds",
			Help: "HTTP request latency by route.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"route"}),
	}
	reg.MustRegister(m.ingested, m.duplicates, m.ingestRejected, m.recordsRejected, m.clientLimited, m.requests, m.duration)
	return m
}

// instrument counts and times the requests h serves, by mux's route.
func (m *metrics) instrument(mux *http.ServeMux, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, route := mux.Handler(r)
		if route == "" {
			route = "other"
		}
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		start := time.Now()
		h.ServeHTTP(sw, r)
		m.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
		m.requests.WithLabelValues(route, fmt.Sprint(sw.code)).Inc()
	})
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
