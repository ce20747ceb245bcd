package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/promptrail/promptrail/agent/shipper"
	"github.com/promptrail/promptrail/agent/spool"
	"github.com/promptrail/promptrail/audit"
)

// Spool-full policies (Config.SpoolFull).
const (
	// SpoolFullReject answers requests whose record cannot be spooled with
	// an OpenAI-style 503: nothing goes out unrecorded.
	SpoolFullReject = "reject"
	// SpoolFullPass lets them through, their records flagged unspooled.
	SpoolFullPass = "pass"
)

// pipeline is the agent's audit pipeline: the spool on the node, the
// shipper to the collector, and the metrics endpoint.
type pipeline struct {
	spool   *spool.Spool
	shipper *shipper.Shipper // nil without a collector
	reg     *prometheus.Registry
	metrics *http.Server // nil without a metrics listener
	refused prometheus.Counter
	passed  prometheus.Counter
	budget  *prometheus.CounterVec
	log     *slog.Logger

	stopShipping func()
}

func openPipeline(ctx context.Context, cfg Config, agentID string, log *slog.Logger) (*pipeline, error) {
	switch cfg.SpoolFull {
	case "", SpoolFullReject, SpoolFullPass:
	default:
		return nil, fmt.Errorf("agent: spool-full policy %q: want %s or %s", cfg.SpoolFull, SpoolFullReject, SpoolFullPass)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p := &pipeline{reg: reg, log: log,
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "promptrail_agent_requests_refused_unspooled_total",
			Help: "Requests answered 503 because their record could not be spooled (spool full or failing)."}),
		passed: prometheus.NewCounter(prometheus.CounterOpts{Name: "promptrail_agent_requests_passed_unspooled_total",
			Help: "Requests forwarded although their record could not be spooled (--spool-full=pass)."}),
	}
	p.budget = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "promptrail_agent_budget_refusals_total",
		Help: "Requests and connections refused because a budget was hit, by the code the client got (promptrail_conn_cap: a connection over --max-conns-per-workload)."}, []string{"code"})
	reg.MustRegister(p.refused, p.passed, p.budget)
	sp, err := spool.Open(ctx, spool.Config{Dir: filepath.Join(cfg.DataDir, "spool"), AgentID: agentID,
		MaxBytes: cfg.SpoolMaxBytes, ReserveBytes: cfg.SpoolReserveBytes, Logger: log, Registerer: reg})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	p.spool = sp
	if cfg.Collector == "" {
		log.Warn("no --collector: records stay in the spool on this node until an agent with a collector ships them",
			"spool", filepath.Join(cfg.DataDir, "spool"))
	} else {
		p.shipper, err = shipper.New(shipper.Config{Source: sp, Collector: cfg.Collector, TokenFile: cfg.TokenFile,
			FlushInterval: cfg.ShipInterval, Logger: log, Registerer: reg})
		if err != nil {
			sp.Close()
			return nil, fmt.Errorf("agent: %w", err)
		}
	}
	if cfg.MetricsListen != "" {
		ln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			sp.Close()
			return nil, fmt.Errorf("agent: metrics listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
		p.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go p.metrics.Serve(ln)
		log.Info("serving metrics", "listen", ln.Addr().String())
	}
	return p, nil
}

// startPipeline opens the pipeline and starts shipping. The shipper has
// a context of its own, cancelled by stop, so that it outlives the proxy
// and ships the records of the last exchanges before the agent exits.
func startPipeline(ctx context.Context, cfg Config, agentID string, log *slog.Logger) (*pipeline, error) {
	p, err := openPipeline(ctx, cfg, agentID, log)
	if err != nil {
		return nil, err
	}
	shipCtx, cancel := context.WithCancel(context.Background())
	shipped := make(chan error, 1)
	go func() { shipped <- p.run(shipCtx) }()
	p.stopShipping = func() {
		cancel()
		if err := <-shipped; err != nil {
			log.Error("shipper stopped", "err", err)
		}
	}
	return p, nil
}

// stop ships what it can, then closes the spool and the metrics server.
func (p *pipeline) stop() {
	p.stopShipping()
	p.close()
}

// run ships records until ctx is done; the shipper makes a last attempt
// to deliver what is queued when ctx ends.
func (p *pipeline) run(ctx context.Context) error {
	if p.shipper == nil {
		<-ctx.Done()
		return nil
	}
	err := p.shipper.Run(ctx)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

func (p *pipeline) onSpoolFailure(passed bool) {
	if passed {
		p.passed.Inc()
	} else {
		p.refused.Inc()
	}
}

func (p *pipeline) onBudgetHit(code string) { p.budget.WithLabelValues(code).Inc() }

func (p *pipeline) close() {
	if p.metrics != nil {
		p.metrics.Close()
	}
	if err := p.spool.Close(); err != nil {
		p.log.Error("closing the spool", "err", err)
	}
}

// spoolSink is the recorder's journal: Begin before the request goes
// upstream, Write (Finish) when the exchange ends.
type spoolSink struct{ s *spool.Spool }

func (k spoolSink) Begin(ctx context.Context, r *audit.Record) error { return k.s.Begin(ctx, r) }
func (k spoolSink) Write(ctx context.Context, r *audit.Record) error { return k.s.Finish(ctx, r) }
