package shipper

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/promptrail/promptrail/internal/testlog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/promptrail/promptrail/agent/openai"
	"github.com/promptrail/promptrail/agent/spool"
	"github.com/promptrail/promptrail/audit"
)

// answer is what the fake collector replies to one attempt; status 0
// means accept the batch.
type answer struct {
	status int
	header map[string]string
	body   string
	// dropAfterStore stores the batch, then breaks the connection before
	// answering: the agent must send it again.
	dropAfterStore bool
}

// fakeCollector stores batches by record id, like the collector, and
// fails attempts as its policy says.
type fakeCollector struct {
	srv *httptest.Server

	mu       sync.Mutex
	stored   map[string]audit.Record
	seqs     map[uint64]bool
	batches  [][]string // ids of each accepted batch
	bodies   []int      // body size of each accepted batch
	attempts int
	token    string                   // required if not ""
	policy   func(attempt int) answer // nil: accept everything
	// refuse, if set, says why a record is refused for good ("": take it),
	// and tooLarge whether a batch holding it is answered 413.
	refuse   func(r audit.Record) string
	tooLarge func(r audit.Record) bool
}

func newFakeCollector(t *testing.T) *fakeCollector {
	t.Helper()
	c := &fakeCollector{stored: map[string]audit.Record{}, seqs: map[uint64]bool{}}
	c.srv = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *fakeCollector) serve(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.attempts++
	if r.Method != http.MethodPost || r.URL.Path != "/v1/ingest" || r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, `{"error":{"message":"wrong request","code":"bad_request"}}`, http.StatusBadRequest)
		return
	}
	if c.token != "" && r.Header.Get("Authorization") != "Bearer "+c.token {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":{"message":"invalid token","code":"unauthorized"}}`)
		return
	}
	var a answer
	if c.policy != nil {
		a = c.policy(c.attempts)
	}
	if a.status != 0 {
		for k, v := range a.header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(a.status)
		io.WriteString(w, a.body)
		return
	}
	body, err := io.ReadAll(r.Body)
	var batch audit.Batch
	if err == nil {
		err = json.Unmarshal(body, &batch)
	}
	if err != nil {
		http.Error(w, `{"error":{"message":"bad batch","code":"bad_request"}}`, http.StatusBadRequest)
		return
	}
	var res audit.IngestResult
	var ids []string
	for i, rec := range batch.Records {
		if c.tooLarge != nil && c.tooLarge(rec) {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			io.WriteString(w, `{"error":{"message":"batch over 4194304 bytes","code":"batch_too_large"}}`)
			return
		}
		if c.refuse != nil {
			if why := c.refuse(rec); why != "" {
				res.Rejected = append(res.Rejected, audit.Rejection{Index: i, ID: rec.ID, Seq: rec.Seq, Code: "invalid_record", Reason: why})
				continue
			}
		}
		if err := rec.CheckHash(); err != nil {
			http.Error(w, fmt.Sprintf(`{"error":{"message":%q}}`, err.Error()), http.StatusBadRequest)
			return
		}
		if _, ok := c.stored[rec.ID]; ok {
			res.Duplicates++
		} else {
			res.Accepted++
		}
		c.stored[rec.ID] = rec
		c.seqs[rec.Seq] = true
		ids = append(ids, rec.ID)
	}
	c.batches = append(c.batches, ids)
	c.bodies = append(c.bodies, len(body))
	if a.dropAfterStore {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	json.NewEncoder(w).Encode(res)
}

func (c *fakeCollector) setPolicy(p func(attempt int) answer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.policy = p
}

func (c *fakeCollector) numStored() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.stored)
}

func (c *fakeCollector) numAttempts() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.attempts
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func openSpool(t *testing.T) *spool.Spool {
	t.Helper()
	s, err := spool.Open(context.Background(), spool.Config{Dir: t.TempDir(), AgentID: "agent-test", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// seal records n exchanges with prompts of about promptBytes, returning
// their ids. It may be called from any goroutine.
func seal(t *testing.T, s *spool.Spool, n, promptBytes int) []string {
	t.Helper()
	ids := make([]string, 0, n)
	for range n {
		start := time.Now()
		r := &audit.Record{
			ID:    audit.NewID(start),
			Start: start,
			Request: audit.Request{Method: "POST", Path: "/v1/chat/completions", Endpoint: openai.ChatCompletions,
				Messages: []openai.Message{{Role: "user", Content: strings.Repeat("x", promptBytes)}}},
			Decision: audit.Decision{Action: "allow"},
		}
		if err := s.Begin(context.Background(), r); err != nil {
			t.Error(err)
			return ids
		}
		if err := s.Finish(context.Background(), r); err != nil {
			t.Error(err)
			return ids
		}
		ids = append(ids, r.ID)
	}
	return ids
}

// start runs a shipper from src to c until the test ends.
func start(t *testing.T, cfg Config) *Shipper {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 20 * time.Millisecond
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = 10 * time.Millisecond
	}
	sh, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sh.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return sh
}

// checkDelivered fails unless the collector holds exactly ids and the
// spool is empty.
func checkDelivered(t *testing.T, c *fakeCollector, s *spool.Spool, ids []string) {
	t.Helper()
	waitFor(t, "the spool to empty", func() bool { return s.Stats().Queued == 0 })
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.stored) != len(ids) {
		t.Errorf("collector holds %d records, want %d", len(c.stored), len(ids))
	}
	for _, id := range ids {
		if _, ok := c.stored[id]; !ok {
			t.Errorf("record %s never reached the collector", id)
		}
	}
}

func TestAllRecordsArrive(t *testing.T) {
	s := openSpool(t)
	c := newFakeCollector(t)
	start(t, Config{Source: s, Collector: c.srv.URL, MaxBatchRecords: 50})
	var ids []string
	for range 6 {
		ids = append(ids, seal(t, s, 50, 200)...)
	}
	checkDelivered(t, c, s, ids)
}

func TestBatchLimits(t *testing.T) {
	tests := []struct {
		name       string
		maxRecords int
		maxBytes   int
	}{
		{"record limit", 7, 1 << 20},
		{"byte limit", 500, 10_000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openSpool(t)
			c := newFakeCollector(t)
			ids := seal(t, s, 60, 2000)
			start(t, Config{Source: s, Collector: c.srv.URL, MaxBatchRecords: tt.maxRecords, MaxBatchBytes: tt.maxBytes})
			checkDelivered(t, c, s, ids)
			c.mu.Lock()
			defer c.mu.Unlock()
			for i, b := range c.batches {
				if len(b) > tt.maxRecords || c.bodies[i] > tt.maxBytes {
					t.Errorf("batch %d: %d records, %d bytes; limits %d, %d", i, len(b), c.bodies[i], tt.maxRecords, tt.maxBytes)
				}
			}
			// Full batches go at once: all but the last are full.
			if full := (len(ids) + 1) / 2; len(c.batches) > full {
				t.Errorf("%d batches for %d records", len(c.batches), len(ids))
			}
		})
	}
}

func TestPartialBatchWaitsForFlushInterval(t *testing.T) {
	s := openSpool(t)
	c := newFakeCollector(t)
	start(t, Config{Source: s, Collector: c.srv.URL, MaxBatchRecords: 100, FlushInterval: time.Second})
	var ids []string
	for range 3 {
		// Sealed one by one while the shipper runs: without the wait
		// each would go alone.
		ids = append(ids, seal(t, s, 1, 100)...)
	}
	checkDelivered(t, c, s, ids)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.batches) != 1 {
		t.Errorf("records went in %d batches, want 1", len(c.batches))
	}
}

func TestRetriesWithoutLoss(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, c *fakeCollector) (url string, recover func())
	}{
		{"500s", func(t *testing.T, c *fakeCollector) (string, func()) {
			c.setPolicy(func(int) answer { return answer{status: 500, body: "boom"} })
			return c.srv.URL, func() { c.setPolicy(nil) }
		}},
		{"connection refused", func(t *testing.T, c *fakeCollector) (string, func()) {
			// An address nobody listens on, until the collector does.
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := l.Addr().String()
			l.Close()
			return "http://" + addr, func() {
				l, err := net.Listen("tcp", addr)
				if err != nil {
					t.Fatalf("listening again on %s: %v", addr, err)
				}
				srv := &http.Server{Handler: http.HandlerFunc(c.serve)}
				go srv.Serve(l)
				t.Cleanup(func() { srv.Close() })
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openSpool(t)
			c := newFakeCollector(t)
			url, recover := tt.setup(t, c)
			ids := seal(t, s, 40, 100)
			sh := start(t, Config{Source: s, Collector: url, MaxBatchRecords: 10})
			failed := func() bool {
				n := testutil.ToFloat64(sh.metrics.failed.WithLabelValues(reasonNetwork)) +
					testutil.ToFloat64(sh.metrics.failed.WithLabelValues(reason5xx))
				return n >= 3
			}
			waitFor(t, "three failed attempts", failed)
			if q := s.Stats().Queued; q != len(ids) {
				t.Fatalf("%d records queued while the collector fails, want all %d", q, len(ids))
			}
			recover()
			checkDelivered(t, c, s, ids)
		})
	}
}

func TestRefusedBatchStays(t *testing.T) {
	s := openSpool(t)
	c := newFakeCollector(t)
	c.setPolicy(func(int) answer {
		return answer{status: 400, body: `{"error":{"message":"record 3 has no workload","code":"invalid_record"}}`}
	})
	var logs testlog.Buffer
	ids := seal(t, s, 5, 100)
	start(t, Config{Source: s, Collector: c.srv.URL, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	waitFor(t, "three refusals", func() bool { return c.numAttempts() >= 3 })
	if q := s.Stats().Queued; q != len(ids) {
		t.Fatalf("%d records queued after refusals, want all %d", q, len(ids))
	}
	if l := logs.String(); !strings.Contains(l, "record 3 has no workload") || !strings.Contains(l, "level=ERROR") {
		t.Errorf("the collector's message is not logged as an error:\n%s", l)
	}
	c.setPolicy(nil)
	checkDelivered(t, c, s, ids)
	if l := logs.String(); !strings.Contains(l, "collector reachable again") {
		t.Errorf("no log line for the recovery:\n%s", l)
	}
}

func TestTokenRotation(t *testing.T) {
	s := openSpool(t)
	c := newFakeCollector(t)
	c.token = "new-token"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("old-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ids := seal(t, s, 5, 100)
	start(t, Config{Source: s, Collector: c.srv.URL, TokenFile: tokenFile})
	waitFor(t, "a 401", func() bool { return c.numAttempts() >= 1 })
	if err := os.WriteFile(tokenFile, []byte("new-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	checkDelivered(t, c, s, ids)
}

func TestRetryAfter(t *testing.T) {
	t.Run("honoured", func(t *testing.T) {
		s := openSpool(t)
		c := newFakeCollector(t)
		var first time.Time
		c.setPolicy(func(int) answer {
			if first.IsZero() {
				first = time.Now()
			}
			if time.Since(first) < time.Second {
				return answer{status: 429, header: map[string]string{"Retry-After": "1"}}
			}
			return answer{}
		})
		ids := seal(t, s, 5, 100)
		// Without Retry-After the 1ms backoff would retry many times.
		start(t, Config{Source: s, Collector: c.srv.URL, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Second})
		checkDelivered(t, c, s, ids)
		if n := c.numAttempts(); n != 2 {
			t.Errorf("%d attempts, want 2: one refused, one after the Retry-After", n)
		}
	})
	t.Run("bounded by MaxBackoff", func(t *testing.T) {
		s := openSpool(t)
		c := newFakeCollector(t)
		c.setPolicy(func(attempt int) answer {
			if attempt == 1 {
				return answer{status: 503, header: map[string]string{"Retry-After": "3600"}}
			}
			return answer{}
		})
		ids := seal(t, s, 5, 100)
		start(t, Config{Source: s, Collector: c.srv.URL, MinBackoff: time.Millisecond, MaxBackoff: 50 * time.Millisecond})
		checkDelivered(t, c, s, ids)
	})
}

func TestMetrics(t *testing.T) {
	s := openSpool(t)
	c := newFakeCollector(t)
	c.setPolicy(func(attempt int) answer {
		switch attempt {
		case 1, 2:
			return answer{status: 502}
		case 3:
			return answer{status: 400}
		}
		return answer{}
	})
	ids := seal(t, s, 10, 100)
	reg := prometheus.NewPedanticRegistry()
	start(t, Config{Source: s, Collector: c.srv.URL, Registerer: reg})
	checkDelivered(t, c, s, ids)
	want := `
# HELP promptrail_shipper_batches_failed_total Batches not acknowledged, by reason; they are retried.
# TYPE promptrail_shipper_batches_failed_total counter
promptrail_shipper_batches_failed_total{reason="invalid_response"} 0
promptrail_shipper_batches_failed_total{reason="network"} 0
promptrail_shipper_batches_failed_total{reason="status_4xx"} 1
promptrail_shipper_batches_failed_total{reason="status_5xx"} 2
# HELP promptrail_shipper_batches_sent_total Batches the collector acknowledged.
# TYPE promptrail_shipper_batches_sent_total counter
promptrail_shipper_batches_sent_total 1
# HELP promptrail_shipper_queue_depth Sealed records waiting for the collector's acknowledgement.
# TYPE promptrail_shipper_queue_depth gauge
promptrail_shipper_queue_depth 0
# HELP promptrail_shipper_records_sent_total Records the collector acknowledged.
# TYPE promptrail_shipper_records_sent_total counter
promptrail_shipper_records_sent_total 10
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"promptrail_shipper_batches_failed_total", "promptrail_shipper_batches_sent_total",
		"promptrail_shipper_queue_depth", "promptrail_shipper_records_sent_total"); err != nil {
		t.Error(err)
	}
}

// TestRandomFailures injects random failures while records are sealed and
// shipped: every record must reach the collector, none may be lost.
func TestRandomFailures(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	s := openSpool(t)
	c := newFakeCollector(t)
	c.setPolicy(func(int) answer {
		switch p := rng.IntN(100); {
		case p < 25:
			return answer{status: 500}
		case p < 35:
			return answer{status: 429, header: map[string]string{"Retry-After": "0"}}
		case p < 40:
			return answer{status: 400, body: `{"error":{"message":"refused","code":"x"}}`}
		case p < 50:
			return answer{dropAfterStore: true}
		}
		return answer{}
	})
	start(t, Config{Source: s, Collector: c.srv.URL, MaxBatchRecords: 37, MaxBackoff: 5 * time.Millisecond})

	const writers, each = 8, 250
	var (
		mu  sync.Mutex
		ids []string
		wg  sync.WaitGroup
	)
	for range writers {
		wg.Go(func() {
			got := seal(t, s, each, 150)
			mu.Lock()
			ids = append(ids, got...)
			mu.Unlock()
		})
	}
	wg.Wait()
	checkDelivered(t, c, s, ids)
	c.mu.Lock()
	defer c.mu.Unlock()
	for seq := uint64(1); seq <= writers*each; seq++ {
		if !c.seqs[seq] {
			t.Errorf("seq %d never delivered", seq)
		}
	}
}
