package spool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/promptrail/promptrail/agent/openai"
	"github.com/promptrail/promptrail/audit"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// openSpool opens a spool in dir and closes it when the test ends.
func openSpool(tb testing.TB, cfg Config) *Spool {
	tb.Helper()
	if cfg.AgentID == "" {
		cfg.AgentID = "agent-test"
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	s, err := Open(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// newRecord returns a chat record whose prompt is about promptBytes long.
func newRecord(promptBytes int) *audit.Record {
	start := time.Now()
	return &audit.Record{
		ID:    audit.NewID(start),
		Start: start,
		Request: audit.Request{
			Method:   "POST",
			Host:     "api.openai.com",
			Path:     "/v1/chat/completions",
			Endpoint: openai.ChatCompletions,
			Model:    "gpt-4o",
			Messages: []openai.Message{{Role: "user", Content: strings.Repeat("p", promptBytes)}},
		},
		Decision: audit.Decision{Action: "allow"},
	}
}

func beginFinish(tb testing.TB, s *Spool, r *audit.Record) {
	tb.Helper()
	ctx := context.Background()
	if err := s.Begin(ctx, r); err != nil {
		tb.Fatalf("Begin: %v", err)
	}
	r.End = r.Start.Add(time.Second)
	r.Response = &audit.Response{Status: 200}
	if err := s.Finish(ctx, r); err != nil {
		tb.Fatalf("Finish: %v", err)
	}
}

// drain returns every queued record, decoded, without acknowledging.
func drain(tb testing.TB, s *Spool) []audit.Record {
	tb.Helper()
	entries, err := s.Next(context.Background(), 1<<20, 1<<30)
	if err != nil {
		tb.Fatalf("Next: %v", err)
	}
	out := make([]audit.Record, len(entries))
	for i, e := range entries {
		if err := json.Unmarshal(e.Data, &out[i]); err != nil {
			tb.Fatalf("entry %d: %v", e.Seq, err)
		}
		if e.Seq != out[i].Seq || e.ID != out[i].ID || !e.Start.Equal(out[i].Start) {
			tb.Fatalf("entry %d/%s/%v does not match its data %d/%s/%v", e.Seq, e.ID, e.Start, out[i].Seq, out[i].ID, out[i].Start)
		}
	}
	return out
}

// checkChain fails unless recs are seqs from..from+len-1, each hash valid
// and linked to the one before.
func checkChain(tb testing.TB, recs []audit.Record, from uint64, prev string) {
	tb.Helper()
	for i := range recs {
		r := &recs[i]
		if want := from + uint64(i); r.Seq != want {
			tb.Fatalf("record %d has seq %d, want %d", i, r.Seq, want)
		}
		if err := r.CheckHash(); err != nil {
			tb.Fatalf("seq %d: %v", r.Seq, err)
		}
		if r.PrevHash != prev {
			tb.Fatalf("seq %d: prev hash %q, want %q", r.Seq, r.PrevHash, prev)
		}
		prev = r.Hash
	}
}

func TestBeginFinishChain(t *testing.T) {
	s := openSpool(t, Config{Dir: t.TempDir()})
	var ids []string
	for range 20 {
		r := newRecord(100)
		beginFinish(t, s, r)
		if r.Seq == 0 || r.Hash == "" || r.AgentID != "agent-test" {
			t.Fatalf("Finish did not seal the caller's record: seq %d hash %q agent %q", r.Seq, r.Hash, r.AgentID)
		}
		ids = append(ids, r.ID)
	}
	recs := drain(t, s)
	if len(recs) != 20 {
		t.Fatalf("%d records queued, want 20", len(recs))
	}
	checkChain(t, recs, 1, "")
	for i, r := range recs {
		if r.ID != ids[i] {
			t.Errorf("seq %d is record %s, want %s", r.Seq, r.ID, ids[i])
		}
	}
	if st := s.Stats(); st.Pending != 0 || st.Queued != 20 || st.Oldest.IsZero() {
		t.Errorf("Stats = %+v, want 0 pending, 20 queued, an oldest time", st)
	}
}

func TestConcurrentBeginFinish(t *testing.T) {
	s := openSpool(t, Config{Dir: t.TempDir()})
	const workers, each = 50, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for range each {
				r := newRecord(500)
				if err := s.Begin(context.Background(), r); err != nil {
					errs <- err
					return
				}
				if err := s.Finish(context.Background(), r); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	recs := drain(t, s)
	if len(recs) != workers*each {
		t.Fatalf("%d records queued, want %d", len(recs), workers*each)
	}
	checkChain(t, recs, 1, "")
	seen := map[string]bool{}
	for _, r := range recs {
		if seen[r.ID] {
			t.Fatalf("record %s sealed twice", r.ID)
		}
		seen[r.ID] = true
	}
}

func TestCrashRecovery(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, Config{Dir: dir})
	done := newRecord(10)
	beginFinish(t, s, done)
	cut := newRecord(10)
	cut.Request.Messages[0].Content = "the prompt that must stay on record"
	if err := s.Begin(context.Background(), cut); err != nil {
		t.Fatal(err)
	}
	failed := newRecord(10)
	failed.Error = "upstream stalled"
	if err := s.Begin(context.Background(), failed); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Pending != 2 {
		t.Fatalf("%d pending before the crash, want 2", st.Pending)
	}
	// Close stands in for the crash: Begin synced the records, and Close
	// does nothing for pending ones.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openSpool(t, Config{Dir: dir})
	if st := s.Stats(); st.Pending != 0 || st.Queued != 3 {
		t.Fatalf("after reopen Stats = %+v, want 0 pending, 3 queued", st)
	}
	after := newRecord(10)
	beginFinish(t, s, after)
	recs := drain(t, s)
	checkChain(t, recs, 1, "")
	byID := map[string]audit.Record{}
	for _, r := range recs {
		byID[r.ID] = r
	}
	tests := []struct {
		name       string
		id         string
		incomplete bool
		err        string
		prompt     string
	}{
		{"finished before the crash", done.ID, false, "", strings.Repeat("p", 10)},
		{"cut by the crash", cut.ID, true, recoveredError, "the prompt that must stay on record"},
		{"cut, with its own error", failed.ID, true, "upstream stalled", strings.Repeat("p", 10)},
		{"after the restart", after.ID, false, "", strings.Repeat("p", 10)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, ok := byID[tt.id]
			if !ok {
				t.Fatalf("record %s not queued", tt.id)
			}
			if r.Incomplete != tt.incomplete || r.Error != tt.err {
				t.Errorf("incomplete %v error %q, want %v %q", r.Incomplete, r.Error, tt.incomplete, tt.err)
			}
			if got := r.Request.Messages[0].Content; got != tt.prompt {
				t.Errorf("prompt %q, want %q", got, tt.prompt)
			}
		})
	}
	if recs[3].ID != after.ID {
		t.Errorf("the record sealed after the restart is seq %d, want 4", byID[after.ID].Seq)
	}
}

func TestFullAndAck(t *testing.T) {
	sample, _ := json.Marshal(newRecord(10000))
	// Room for three records, not four.
	s := openSpool(t, Config{Dir: t.TempDir(), MaxBytes: int64(len(sample)) * 7 / 2})
	ctx := context.Background()
	for i := range 3 {
		r := newRecord(10000)
		if err := s.Begin(ctx, r); err != nil {
			t.Fatalf("Begin %d: %v", i, err)
		}
		if err := s.Finish(ctx, r); err != nil {
			t.Fatalf("Finish %d: %v", i, err)
		}
	}
	refused := newRecord(10000)
	if err := s.Begin(ctx, refused); !errors.Is(err, ErrFull) {
		t.Fatalf("Begin over the limit: %v, want ErrFull", err)
	}
	// A refused request is still recorded; Finish is not refused for size.
	refused.Decision = audit.Decision{Action: "reject"}
	if err := s.Finish(ctx, refused); err != nil {
		t.Fatalf("Finish of a record refused by Begin: %v", err)
	}
	if err := s.Ack(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := s.Begin(ctx, newRecord(10000)); err != nil {
		t.Fatalf("Begin after Ack freed space: %v", err)
	}
}

func TestBytesSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, Config{Dir: dir})
	for i := range 10 {
		// Some records large enough for Badger's value log.
		size := 300
		if i%3 == 0 {
			size = 200 << 10
		}
		beginFinish(t, s, newRecord(size))
	}
	if err := s.Begin(context.Background(), newRecord(50)); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(context.Background(), 4); err != nil {
		t.Fatal(err)
	}
	before := s.Stats()
	if before.Bytes <= 0 {
		t.Fatalf("Bytes = %d", before.Bytes)
	}
	s.Close()

	s = openSpool(t, Config{Dir: dir})
	after := s.Stats()
	// The pending record is now sealed, so it weighs a little more.
	if after.Bytes < before.Bytes || after.Bytes > before.Bytes+1024 {
		t.Errorf("Bytes %d before reopen, %d after", before.Bytes, after.Bytes)
	}
	if err := s.Ack(context.Background(), 11); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Bytes != 0 || st.Queued != 0 {
		t.Errorf("after acknowledging everything Stats = %+v, want empty", st)
	}
}

func TestNextAck(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, Config{Dir: dir})
	ctx := context.Background()
	for range 10 {
		beginFinish(t, s, newRecord(1000))
	}
	tests := []struct {
		name       string
		maxRecords int
		maxBytes   int
		want       int
	}{
		{"record limit", 4, 1 << 20, 4},
		{"byte limit", 100, 3500, 2},
		{"one record over the byte limit", 100, 10, 1},
		{"everything", 100, 1 << 20, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Next(ctx, tt.maxRecords, tt.maxBytes)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.want {
				t.Fatalf("%d entries, want %d", len(got), tt.want)
			}
			for i, e := range got {
				if e.Seq != uint64(i+1) {
					t.Errorf("entry %d has seq %d", i, e.Seq)
				}
			}
		})
	}
	if err := s.Ack(ctx, 6); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ctx, 3); err != nil {
		t.Errorf("acknowledging again: %v", err)
	}
	if err := s.Ack(ctx, 11); err == nil {
		t.Error("acknowledging a seq never sealed: no error")
	}
	s.Close()

	s = openSpool(t, Config{Dir: dir})
	recs := drain(t, s)
	if len(recs) != 4 || recs[0].Seq != 7 {
		t.Fatalf("after reopen %d records from seq %d, want 4 from 7", len(recs), recs[0].Seq)
	}
	checkChain(t, recs, 7, recs[0].PrevHash)
	r := newRecord(10)
	beginFinish(t, s, r)
	if r.Seq != 11 || r.PrevHash != recs[3].Hash {
		t.Errorf("next record after reopen: seq %d prev %q, want 11 %q", r.Seq, r.PrevHash, recs[3].Hash)
	}
}

func TestFinishWithoutBegin(t *testing.T) {
	s := openSpool(t, Config{Dir: t.TempDir()})
	r := newRecord(10)
	r.Decision = audit.Decision{Action: "block", Rule: "no-secrets"}
	if err := s.Finish(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	recs := drain(t, s)
	if len(recs) != 1 || recs[0].ID != r.ID || recs[0].Decision.Action != "block" {
		t.Fatalf("queued %+v, want the blocked record", recs)
	}
	if st := s.Stats(); st.Pending != 0 || st.Queued != 1 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestFinishCancelledContext(t *testing.T) {
	s := openSpool(t, Config{Dir: t.TempDir()})
	r := newRecord(10)
	if err := s.Begin(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the client went away
	r.Incomplete = true
	if err := s.Finish(ctx, r); err != nil {
		t.Fatalf("Finish with the request's cancelled context: %v", err)
	}
	if st := s.Stats(); st.Queued != 1 || st.Pending != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestClosed(t *testing.T) {
	s := openSpool(t, Config{Dir: t.TempDir()})
	s.Close()
	ctx := context.Background()
	if err := s.Begin(ctx, newRecord(1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Begin after Close: %v", err)
	}
	if err := s.Finish(ctx, newRecord(1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Finish after Close: %v", err)
	}
	if _, err := s.Next(ctx, 1, 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Next after Close: %v", err)
	}
}

func TestReady(t *testing.T) {
	s := openSpool(t, Config{Dir: t.TempDir()})
	beginFinish(t, s, newRecord(1))
	beginFinish(t, s, newRecord(1))
	select {
	case <-s.Ready():
	default:
		t.Fatal("no signal after records were sealed")
	}
	select {
	case <-s.Ready():
		t.Fatal("signals did not coalesce")
	default:
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	dir := t.TempDir()
	s := openSpool(t, Config{Dir: dir, Registerer: reg, MaxBytes: 5000})
	ctx := context.Background()
	beginFinish(t, s, newRecord(100))
	if err := s.Begin(ctx, newRecord(100)); err != nil {
		t.Fatal(err)
	}
	if err := s.Begin(ctx, newRecord(10000)); !errors.Is(err, ErrFull) {
		t.Fatalf("Begin: %v, want ErrFull", err)
	}
	want := `
# HELP promptrail_spool_full_total Records Begin refused because the spool was at its size limit.
# TYPE promptrail_spool_full_total counter
promptrail_spool_full_total 1
# HELP promptrail_spool_limit_bytes Size limit of the records in the spool.
# TYPE promptrail_spool_limit_bytes gauge
promptrail_spool_limit_bytes 5000
# HELP promptrail_spool_records Records in the spool: pending (begun, not finished), queued (sealed, not acknowledged) or rejected (refused by the collector for good, kept aside).
# TYPE promptrail_spool_records gauge
promptrail_spool_records{state="pending"} 1
promptrail_spool_records{state="queued"} 1
promptrail_spool_records{state="rejected"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"promptrail_spool_full_total", "promptrail_spool_limit_bytes", "promptrail_spool_records"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 9 {
		t.Errorf("%d metrics gathered (%v), want 9", n, err)
	}
	// Closing unregisters, so the spool can be opened again in-process.
	s.Close()
	s2 := openSpool(t, Config{Dir: dir, Registerer: reg})
	if got := fmt.Sprint(s2.Stats().Queued); got != "2" {
		t.Errorf("reopened spool has %s queued, want 2", got)
	}
}
