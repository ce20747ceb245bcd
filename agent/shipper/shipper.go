// Package shipper sends sealed records from the spool to the collector in
// batches, with retries, and deletes only what the collector acknowledged.
//
// A record leaves the spool only after the collector answered 200 to a
// batch holding it. Every other outcome (a refusal, a server error, no
// answer) leaves the batch in the spool to be sent again, after a backoff;
// the collector recognises records it already has, so sending one twice
// is harmless and losing one is not.
//
// A record the collector refuses for good (listed in a 200's rejected, or
// alone in a batch answered 413) is moved aside in the spool, logged with
// its id and counted, and the records behind it go on: no single record
// stops the queue. A batch answered 413 is sent again in halves until the
// record that does not fit is alone.
package shipper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/promptrail/promptrail/agent/spool"
	"github.com/promptrail/promptrail/audit"
)

// Source is where the shipper takes records from: a *spool.Spool.
type Source interface {
	Next(ctx context.Context, maxRecords, maxBytes int) ([]spool.Entry, error)
	Ack(ctx context.Context, through uint64) error
	Ready() <-chan struct{}
	Stats() spool.Stats
	// Reject moves a queued record aside for good; see spool.Spool.Reject.
	Reject(ctx context.Context, seq uint64, code, reason string) error
}

var _ Source = (*spool.Spool)(nil)

// Defaults of Config fields left zero.
const (
	DefaultMaxBatchRecords = 500
	DefaultMaxBatchBytes   = audit.MaxBatchBytes
	DefaultFlushInterval   = time.Second
	DefaultMinBackoff      = 500 * time.Millisecond
	DefaultMaxBackoff      = 30 * time.Second
)

// finalFlushTimeout bounds the last attempt to send what is queued when
// Run is stopped, so that a collector down at shutdown does not hold up
// the agent's exit; the records stay in the spool for the next start.
const finalFlushTimeout = 10 * time.Second

// Config configures a Shipper.
type Config struct {
	// Source holds the records to ship. Required.
	Source Source
	// Collector is the collector's base URL, e.g. http://collector:7070.
	// Required.
	Collector string
	// TokenFile holds the bearer token sent to the collector. It is read by
	// New and again after the collector answers 401, so a rotated token is
	// picked up without a restart. "": no Authorization header.
	TokenFile string
	// Client sends the requests. Nil: a client with connect, TLS, header
	// and overall timeouts.
	Client *http.Client
	// MaxBatchRecords and MaxBatchBytes bound one request. Defaults 500
	// and 4 MiB, at most the collector's limits (audit.MaxBatchRecords,
	// audit.MaxBatchBytes); a record larger than MaxBatchBytes goes alone.
	MaxBatchRecords int
	MaxBatchBytes   int
	// FlushInterval is how long a batch that is not full waits for more
	// records, counted from the start of its oldest record. Default 1s.
	FlushInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait before a retry, which
	// doubles with each failure in a row, with full jitter. Defaults 500ms
	// and 30s. MaxBackoff also bounds a collector's Retry-After.
	MinBackoff, MaxBackoff time.Duration
	// Logger receives state changes. Nil: slog.Default().
	Logger *slog.Logger
	// Registerer receives the shipper's metrics. Nil: no metrics.
	Registerer prometheus.Registerer
}

// Shipper moves records from a Source to the collector.
type Shipper struct {
	cfg     Config
	src     Source
	ingest  string // URL of POST /v1/ingest
	client  *http.Client
	log     *slog.Logger
	metrics *metrics
	running atomic.Bool

	tokenMu sync.Mutex
	token   string

	// Failure state, touched only by Run's goroutine: logs go out when it
	// changes, not for every batch.
	failingSince time.Time
	failures     int
	lastProblem  string
	// split, when not 0, bounds the records of the next batch: a batch
	// answered 413 is sent again in halves.
	split int
}

// New checks cfg, reads the token file and registers the metrics.
func New(cfg Config) (*Shipper, error) {
	if cfg.Source == nil {
		return nil, errors.New("shipper: Config.Source is required")
	}
	ingest, err := ingestURL(cfg.Collector)
	if err != nil {
		return nil, err
	}
	if err := setDefaults(&cfg); err != nil {
		return nil, err
	}
	s := &Shipper{
		cfg:    cfg,
		src:    cfg.Source,
		ingest: ingest,
		client: cfg.Client,
		log:    cfg.Logger.With("component", "shipper", "collector", cfg.Collector),
	}
	if s.client == nil {
		s.client = defaultClient()
	}
	if cfg.TokenFile != "" {
		tok, err := readToken(cfg.TokenFile)
		if err != nil {
			return nil, err
		}
		s.token = tok
	}
	s.metrics = newMetrics(cfg.Source)
	if cfg.Registerer != nil {
		if err := s.metrics.register(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func ingestURL(base string) (string, error) {
	if base == "" {
		return "", errors.New("shipper: Config.Collector is required: the collector's base URL, e.g. http://collector:7070")
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("shipper: collector URL %q: %w", base, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("shipper: collector URL %q: want http:// or https:// and a host, e.g. http://collector:7070", base)
	}
	return u.JoinPath("v1", "ingest").String(), nil
}

func setDefaults(cfg *Config) error {
	if cfg.MaxBatchRecords < 0 || cfg.MaxBatchBytes < 0 || cfg.FlushInterval < 0 || cfg.MinBackoff < 0 || cfg.MaxBackoff < 0 {
		return errors.New("shipper: batch limits, FlushInterval and backoffs must not be negative (0 selects the default)")
	}
	if cfg.MaxBatchRecords == 0 {
		cfg.MaxBatchRecords = DefaultMaxBatchRecords
	}
	if cfg.MaxBatchBytes == 0 {
		cfg.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.MaxBatchRecords > audit.MaxBatchRecords || cfg.MaxBatchBytes > audit.MaxBatchBytes {
		return fmt.Errorf("shipper: batches of %d records and %d bytes exceed what the collector takes (%d records, %d bytes)",
			cfg.MaxBatchRecords, cfg.MaxBatchBytes, audit.MaxBatchRecords, audit.MaxBatchBytes)
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		return fmt.Errorf("shipper: MaxBackoff %v is below MinBackoff %v", cfg.MaxBackoff, cfg.MinBackoff)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return nil
}

func defaultClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 10 * time.Second
	t.ResponseHeaderTimeout = 30 * time.Second
	t.IdleConnTimeout = 90 * time.Second
	// Overall bound, body included: a stalled collector must not stall
	// shipping forever.
	return &http.Client{Transport: t, Timeout: 60 * time.Second}
}

func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("shipper: reading the collector token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("shipper: token file %s is empty", path)
	}
	return tok, nil
}

// reloadToken re-reads the token file and reports whether the token
// changed.
func (s *Shipper) reloadToken() bool {
	if s.cfg.TokenFile == "" {
		return false
	}
	tok, err := readToken(s.cfg.TokenFile)
	if err != nil {
		s.log.Error("collector refused our token and the token file cannot be read again", "err", err)
		return false
	}
	s.tokenMu.Lock()
	defer s.tokenMu.Unlock()
	changed := tok != s.token
	s.token = tok
	return changed
}

func (s *Shipper) bearer() string {
	s.tokenMu.Lock()
	defer s.tokenMu.Unlock()
	return s.token
}

// Run ships records until ctx is done, then makes one last attempt,
// bounded in time, to send what is queued. It returns nil then: what was
// not delivered stays in the spool for the next run. Run must not be
// called again while it runs.
func (s *Shipper) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("shipper: Run is already running; one shipper per spool sends each record once")
	}
	defer s.running.Store(false)
	for ctx.Err() == nil {
		wait := s.step(ctx)
		if wait > 0 && !sleep(ctx, wait) {
			break
		}
	}
	s.finalFlush(ctx)
	return nil
}

// step reads one batch and sends it when it is due. It returns how long
// to back off before the next step (0: go on at once).
func (s *Shipper) step(ctx context.Context) time.Duration {
	batch, err := s.src.Next(ctx, s.batchRecords(), s.maxEntryBytes())
	if err != nil {
		if ctx.Err() != nil {
			return 0
		}
		s.failure("spool", fmt.Sprintf("reading the spool: %v", err), slog.LevelError)
		return s.backoff()
	}
	if len(batch) == 0 {
		select {
		case <-ctx.Done():
		case <-s.src.Ready():
		}
		return 0
	}
	if !s.full(batch) {
		if due := time.Until(batch[0].Start.Add(s.cfg.FlushInterval)); due > 0 {
			s.waitForMore(ctx, due, batch)
			return 0
		}
	}
	return s.ship(ctx, batch)
}

// ship sends batch and, once the collector has it, acknowledges it.
func (s *Shipper) ship(ctx context.Context, batch []spool.Entry) time.Duration {
	res := s.send(ctx, batch)
	if res.tooLarge && len(batch) > 1 {
		// One record, or the batch as a whole, is over the collector's
		// limit: halve until the culprit goes alone.
		s.split = max(1, len(batch)/2)
		s.log.Warn("collector refused a batch as too large; sending it in smaller parts",
			"records", len(batch), "next_batch_records", s.split, "problem", res.err.Error())
		return 0
	}
	if res.tooLarge {
		res = sendResult{ingest: audit.IngestResult{Rejected: []audit.Rejection{{
			Index: 0, ID: batch[0].ID, Seq: batch[0].Seq, Code: "record_too_large", Reason: res.err.Error()}}}}
	}
	if res.err != nil {
		if ctx.Err() != nil {
			return 0 // stopping; finalFlush retries once
		}
		s.metrics.failed.WithLabelValues(res.reason).Inc()
		s.failure(res.reason, res.err.Error(), res.level)
		if res.retryNow {
			return 0
		}
		if res.retryAfter > 0 {
			return min(res.retryAfter, s.cfg.MaxBackoff)
		}
		return s.backoff()
	}
	if s.split > 0 {
		if s.split *= 2; s.split >= s.cfg.MaxBatchRecords {
			s.split = 0
		}
	}
	if err := s.reject(ctx, batch, res.ingest.Rejected); err != nil {
		if ctx.Err() != nil {
			return 0
		}
		// Nothing acknowledged: the batch goes again, and the collector
		// answers the same.
		s.failure("spool", err.Error(), slog.LevelError)
		return s.backoff()
	}
	s.recovered(len(batch))
	s.metrics.sent.Add(float64(len(batch) - len(res.ingest.Rejected)))
	s.metrics.batches.Inc()
	s.metrics.lastSuccess.SetToCurrentTime()
	for _, issue := range res.ingest.ChainIssues {
		s.log.Warn("collector reports a break in the agent's record chain", "issue", issue,
			"first_seq", batch[0].Seq, "last_seq", batch[len(batch)-1].Seq)
	}
	if err := s.src.Ack(ctx, batch[len(batch)-1].Seq); err != nil {
		if ctx.Err() != nil {
			return 0
		}
		// The collector has the records; sending them again is harmless.
		s.log.Error("records delivered but not removed from the spool; they will be sent again",
			"through_seq", batch[len(batch)-1].Seq, "err", err)
		return s.backoff()
	}
	return 0
}

// reject moves aside the records of batch the collector refused for good.
func (s *Shipper) reject(ctx context.Context, batch []spool.Entry, rejected []audit.Rejection) error {
	for _, rj := range rejected {
		e := batch[rj.Index] // judge checked the index
		if err := s.src.Reject(ctx, e.Seq, rj.Code, rj.Reason); err != nil {
			return err
		}
		s.metrics.rejected.WithLabelValues(rj.Code).Inc()
		s.log.Error("collector refused a record for good; it is kept aside in the spool and the chain shows the gap",
			"id", e.ID, "seq", e.Seq, "code", rj.Code, "reason", rj.Reason)
	}
	return nil
}

// batchRecords is the most records the next batch may hold.
func (s *Shipper) batchRecords() int {
	if s.split > 0 {
		return min(s.split, s.cfg.MaxBatchRecords)
	}
	return s.cfg.MaxBatchRecords
}

// full reports whether batch is as large as a batch gets: no reason to
// wait for more records.
func (s *Shipper) full(batch []spool.Entry) bool {
	if len(batch) >= s.batchRecords() {
		return true
	}
	total := batchBytes(batch)
	return total+total/len(batch) > s.maxEntryBytes()
}

// waitForMore waits until due has passed, or until enough records may be
// queued to fill a batch.
func (s *Shipper) waitForMore(ctx context.Context, due time.Duration, batch []spool.Entry) {
	t := time.NewTimer(due)
	defer t.Stop()
	avg := batchBytes(batch) / len(batch)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case <-s.src.Ready():
			// Re-reading the queue on every signal would cost a read per
			// sealed record; the count says when it can pay.
			q := s.src.Stats().Queued
			if q >= s.cfg.MaxBatchRecords || q*avg > s.maxEntryBytes() {
				return
			}
		}
	}
}

// maxEntryBytes is MaxBatchBytes less the request's framing: the braces,
// the "records" key and a comma between records.
func (s *Shipper) maxEntryBytes() int {
	return max(1, s.cfg.MaxBatchBytes-len(`{"records":[]}`)-s.cfg.MaxBatchRecords)
}

func batchBytes(batch []spool.Entry) int {
	n := 0
	for _, e := range batch {
		n += len(e.Data)
	}
	return n
}

// backoff returns the wait before the next retry: exponential in the
// failures in a row, with full jitter so that agents that lost the
// collector together do not come back in step.
func (s *Shipper) backoff() time.Duration {
	ceiling := s.cfg.MaxBackoff
	if shift := s.failures - 1; shift < 32 {
		ceiling = min(ceiling, s.cfg.MinBackoff<<max(shift, 0))
	}
	return time.Duration(rand.Int64N(int64(ceiling) + 1))
}

// failure records a failed attempt and logs when the problem changes.
func (s *Shipper) failure(reason, problem string, level slog.Level) {
	s.failures++
	if s.failingSince.IsZero() {
		s.failingSince = time.Now()
	}
	if problem == s.lastProblem {
		return
	}
	s.lastProblem = problem
	s.log.Log(context.Background(), level, "records not delivered to the collector; retrying with backoff",
		"reason", reason, "problem", problem, "queued", s.src.Stats().Queued)
}

// recovered ends a failure state, logging how long records waited.
func (s *Shipper) recovered(batch int) {
	if s.failures == 0 {
		return
	}
	s.log.Info("collector reachable again; delivering the records that waited",
		"queued", max(s.src.Stats().Queued, batch), "waited", time.Since(s.failingSince).Round(time.Millisecond).String(),
		"failed_attempts", s.failures)
	s.failures, s.failingSince, s.lastProblem = 0, time.Time{}, ""
}

// finalFlush sends what is queued, batch after batch, until the queue is
// empty, an attempt fails or finalFlushTimeout has passed.
func (s *Shipper) finalFlush(parent context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), finalFlushTimeout)
	defer cancel()
	for ctx.Err() == nil {
		batch, err := s.src.Next(ctx, s.batchRecords(), s.maxEntryBytes())
		if err != nil || len(batch) == 0 {
			return
		}
		if wait := s.ship(ctx, batch); wait > 0 || ctx.Err() != nil {
			s.log.Warn("stopping with records not yet delivered; they stay in the spool for the next start",
				"queued", s.src.Stats().Queued)
			return
		}
	}
}

// sleep waits for d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
