package collector_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/collector"
	"github.com/promptrail/promptrail/collector/auth"
	"github.com/promptrail/promptrail/collector/client"
	"github.com/promptrail/promptrail/collector/store"
)

const (
	agentA = "agent-a-token-0123456789"
	reader = "reader-token-0123456789"
)

func newServer(t *testing.T) *httptest.Server {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tok, err := auth.ParseTokens([]byte("agent node-a " + agentA + "\nreader ops " + reader + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := collector.NewHandler(collector.HandlerConfig{Store: st, Auth: tok, MaxBatchBytes: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// chain returns n sealed records of agent, seqs from+1 onwards after prev.
func chain(t *testing.T, agent string, n int, prompt string) []audit.Record {
	t.Helper()
	var out []audit.Record
	prev := ""
	start := time.Now().Add(-time.Minute)
	for i := range n {
		at := start.Add(time.Duration(i) * time.Millisecond)
		r := audit.Record{ID: audit.NewID(at), AgentID: agent, Node: agent, Start: at.UTC(), End: at.UTC(),
			Workload: audit.Workload{Kind: "pod", Namespace: "shop", Pod: fmt.Sprintf("web-%d", i%3)},
			Request:  audit.Request{Method: "POST", Path: "/v1/chat/completions", Model: "gpt-4o-mini", Body: fmt.Sprintf("%s %d", prompt, i)},
			Decision: audit.Decision{Action: "allow"}}
		if err := r.Seal(uint64(i+1), prev); err != nil {
			t.Fatal(err)
		}
		prev = r.Hash
		out = append(out, r)
	}
	return out
}

func post(t *testing.T, srv *httptest.Server, token string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", srv.URL+"/v1/ingest", bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func batch(t *testing.T, recs []audit.Record) []byte {
	t.Helper()
	b, err := json.Marshal(audit.Batch{Records: recs})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestIngestRefusesBadBatchesAndStoresNothing(t *testing.T) {
	srv := newServer(t)
	good := chain(t, "node-a", 3, "hello")
	other := chain(t, "node-b", 1, "hello")
	big := chain(t, "node-a", 1, strings.Repeat("x", 300<<10))

	for _, c := range []struct {
		name, token string
		body        []byte
		status      int
		code        string
	}{
		{"no token", "", batch(t, good), 401, "unauthorized"},
		{"reader token", reader, batch(t, good), 403, "forbidden"},
		{"malformed JSON", agentA, []byte(`{"records":[{"id":`), 400, "bad_json"},
		{"empty batch", agentA, []byte(`{"records":[]}`), 400, "empty_batch"},
		{"oversized batch", agentA, batch(t, big), 413, "batch_too_large"},
		{"unknown agent", agentA, batch(t, other), 403, "unknown_agent"},
		{"too many records", agentA, []byte(`{"records":[` + strings.Repeat(`{},`, audit.MaxBatchRecords) + `{}]}`), 413, "batch_too_large"},
		{"data after the batch", agentA, append(batch(t, good), `{}`...), 400, "bad_json"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, body := post(t, srv, c.token, c.body)
			var e collector.APIError
			json.Unmarshal([]byte(body), &e)
			if status != c.status || e.Error.Code != c.code || e.Error.Message == "" {
				t.Fatalf("status %d body %s; want %d %s with a message", status, body, c.status, c.code)
			}
		})
	}
	cl, _ := client.New(srv.URL, reader, nil)
	page, err := cl.Records(context.Background(), store.Filter{})
	if err != nil || len(page.Records) != 0 {
		t.Fatalf("after refused batches the store holds %d records (%v)", len(page.Records), err)
	}
}

func TestIngestRejectsBadRecordsAndStoresTheRest(t *testing.T) {
	srv := newServer(t)
	recs := chain(t, "node-a", 4, "hello")
	recs[1].Request.Body = "edited after sealing"
	good, err := json.Marshal(recs[0])
	if err != nil {
		t.Fatal(err)
	}
	// Record 2 is JSON, but not a record: its start is not a time.
	body := fmt.Appendf(nil, `{"records":[%s,%s,{"id":"x","start":"yesterday"},%s,%s]}`,
		good, mustJSON(t, recs[1]), mustJSON(t, recs[2]), mustJSON(t, recs[3]))
	status, answer := post(t, srv, agentA, body)
	var res audit.IngestResult
	if err := json.Unmarshal([]byte(answer), &res); status != 200 || err != nil {
		t.Fatalf("status %d body %s; want 200 with an ingest result", status, answer)
	}
	if res.Accepted != 3 || len(res.Rejected) != 2 {
		t.Fatalf("result %+v; want 3 accepted and 2 rejected", res)
	}
	for i, want := range []struct {
		index int
		code  string
	}{{2, "invalid_record"}, {1, "invalid_record"}} {
		if got := res.Rejected[i]; got.Index != want.index || got.Code != want.code || got.Reason == "" {
			t.Errorf("rejection %d = %+v; want index %d code %s with a reason", i, got, want.index, want.code)
		}
	}
	if len(res.ChainIssues) != 1 || !strings.Contains(res.ChainIssues[0], "record 2 is missing") {
		t.Errorf("chain issues %q; want the gap where record 2 was", res.ChainIssues)
	}
}

// TestIngestMemoryIsBoundedByTheBatchLimits posts the batch that once cost
// gigabytes: 4 MiB of empty records. The collector reads it one record at
// a time and stops at the record limit.
func TestIngestMemoryIsBoundedByTheBatchLimits(t *testing.T) {
	h := newHandler(t, collector.HandlerConfig{})
	body := []byte(`{"records":[` + strings.Repeat(`{},`, (audit.MaxBatchBytes-20)/3) + `{}]}`)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	req := httptest.NewRequest("POST", "/v1/ingest", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+agentA)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	runtime.ReadMemStats(&after)
	if rec.Code != 413 {
		t.Errorf("status %d %s; want 413", rec.Code, rec.Body)
	}
	// What a batch of the record limit decodes to, and some slack; the
	// body itself was 4 MiB before the fix and 2.7 GB of records.
	const limit = 32 << 20
	if got := after.TotalAlloc - before.TotalAlloc; got > limit {
		t.Errorf("ingest allocated %d MiB for a batch of empty records; want under %d MiB", got>>20, limit>>20)
	}
}

// newHandler returns the API over a fresh store, accepting agentA's
// token, with cfg's limits.
func newHandler(t *testing.T, cfg collector.HandlerConfig) http.Handler {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg.Store = st
	if cfg.Auth, err = auth.ParseTokens([]byte("agent node-a " + agentA + "\n")); err != nil {
		t.Fatal(err)
	}
	h, err := collector.NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestIngestIsIdempotentAndRecordsAreProvable(t *testing.T) {
	srv := newServer(t)
	recs := chain(t, "node-a", 20, "prompt")
	for i, want := range []audit.IngestResult{{Accepted: 20}, {Duplicates: 20}} {
		status, body := post(t, srv, agentA, batch(t, recs))
		var got audit.IngestResult
		json.Unmarshal([]byte(body), &got)
		if status != 200 || got.Accepted != want.Accepted || got.Duplicates != want.Duplicates {
			t.Fatalf("ingest #%d: %d %s, want %+v", i+1, status, body, want)
		}
	}
	ctx := context.Background()
	cl, _ := client.New(srv.URL, reader, nil)
	var all []audit.Record
	f := store.Filter{Namespace: "shop", Limit: 7}
	for {
		page, err := cl.Records(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page.Records...)
		if page.NextCursor == "" {
			break
		}
		f.Cursor = page.NextCursor
	}
	if len(all) != 20 || all[0].ID != recs[19].ID || all[19].ID != recs[0].ID {
		t.Fatalf("paged query returned %d records, newest %s; want 20, newest %s", len(all), all[0].ID, recs[19].ID)
	}
	if page, _ := cl.Records(ctx, store.Filter{Workload: "web-1"}); len(page.Records) != 7 {
		t.Errorf("workload filter: %d records, want 7", len(page.Records))
	}
	if page, _ := cl.Records(ctx, store.Filter{Q: "PROMPT 13"}); len(page.Records) != 1 || page.Records[0].ID != recs[13].ID {
		t.Errorf("text query: %+v", page.Records)
	}

	key, err := cl.VerifierKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rp, err := cl.Record(ctx, recs[5].ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.VerifyInclusion(rp.Record, rp.Proof, key); err != nil {
		t.Fatalf("inclusion proof of a stored record: %v", err)
	}
	rp.Record.Request.Body = "forged"
	rp.Record.Seal(rp.Record.Seq, rp.Record.PrevHash)
	if _, err := client.VerifyInclusion(rp.Record, rp.Proof, key); err == nil {
		t.Fatal("a forged record verified against the checkpoint")
	}
	if _, err := cl.Record(ctx, "01ARZ3NDEKTSV4RRFFQ69G5FAV"); !client.IsStatus(err, 404) {
		t.Errorf("unknown record: %v, want 404", err)
	}
	rep, err := cl.Verify(ctx)
	if err != nil || !rep.OK || rep.Records != 20 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	if _, err := cl.Records(ctx, store.Filter{Cursor: "not a cursor"}); !client.IsStatus(err, 400) {
		t.Errorf("bad cursor: %v, want 400", err)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	srv := newServer(t)
	post(t, srv, agentA, batch(t, chain(t, "node-a", 2, "m")))
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/metrics": "promptrail_collector_ingested_records_total 2",
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Errorf("%s: %d, want %q in:\n%.400s", path, resp.StatusCode, want, b)
		}
	}
}

func TestParseFilter(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		query string
		ok    bool
		since time.Time
	}{
		{"since=2026-11-27T00:00:00Z", true, time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)},
		{"since=90m", true, now.Add(-90 * time.Minute)},
		{"since=7d", true, now.Add(-7 * 24 * time.Hour)},
		{"since=yesterday", false, time.Time{}},
		{"since=1h&until=2h", false, time.Time{}},
		{"limit=0", false, time.Time{}},
		{"limit=1001", false, time.Time{}},
		{"limit=10&model=gpt-4o", true, time.Time{}},
	} {
		v, _ := urlValues(c.query)
		f, err := collector.ParseFilter(v, now)
		if (err == nil) != c.ok || (c.ok && !f.Since.Equal(c.since)) {
			t.Errorf("%s: filter %+v err %v", c.query, f, err)
		}
	}
}

func urlValues(q string) (map[string][]string, error) {
	v, err := url.ParseQuery(q)
	return v, err
}

// FuzzParseFilter: any query string gets a filter or a clear error, never
// a panic, and an accepted limit is in range.
func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{"since=90m&until=2026-11-28T10:00:00Z", "limit=1000&q=%00", "since=7d&cursor=AAAA", "since=-5m", "since=99999999999d", "until=1h&since=2h"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, q string) {
		v, err := url.ParseQuery(q)
		if err != nil {
			return
		}
		flt, err := collector.ParseFilter(v, now)
		if err != nil {
			return
		}
		if flt.Limit < 0 || flt.Limit > 1000 {
			t.Fatalf("%q: limit %d accepted", q, flt.Limit)
		}
		if !flt.Since.IsZero() && !flt.Until.IsZero() && flt.Until.Before(flt.Since) {
			t.Fatalf("%q: until before since accepted", q)
		}
	})
}
