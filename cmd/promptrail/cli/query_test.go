package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/promptrail/promptrail/agent/openai"
	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/collector"
	"github.com/promptrail/promptrail/collector/auth"
	"github.com/promptrail/promptrail/collector/store"
)

const readerToken = "reader-token-for-cli-tests"

// collectorFixture is a collector API over a real store, and a reader
// token file for the commands.
type collectorFixture struct {
	url, tokenFile string
	st             *store.Store
	prev           map[string]string // agent -> last hash
	seq            map[string]uint64
}

// newCollectorFixture is a collector with a reader token (in tokenFile)
// and the tokens file lines extra.
func newCollectorFixture(t *testing.T, extra ...string) *collectorFixture {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tok, err := auth.ParseTokens([]byte("reader cli " + readerToken + "\n" + strings.Join(extra, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	h, err := collector.NewHandler(collector.HandlerConfig{Store: st, Auth: tok})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	f := &collectorFixture{url: srv.URL, tokenFile: filepath.Join(t.TempDir(), "reader.token"), st: st,
		prev: map[string]string{}, seq: map[string]uint64{}}
	if err := os.WriteFile(f.tokenFile, []byte(readerToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// add stores n records of a pod in namespace ns, the newest now.
func (f *collectorFixture) add(t *testing.T, n int, ns, prompt string) {
	t.Helper()
	f.addEdited(t, n, ns, prompt, nil)
}

// addEdited is add with each record changed by edit (if not nil) before
// it is sealed.
func (f *collectorFixture) addEdited(t *testing.T, n int, ns, prompt string, edit func(*audit.Record)) {
	t.Helper()
	const agent = "node-1"
	var recs []audit.Record
	for i := range n {
		at := time.Now().Add(-time.Duration(n-i) * time.Millisecond)
		r := audit.Record{ID: audit.NewID(at), AgentID: agent, Node: agent, Start: at.UTC(), End: at.UTC(),
			Workload: audit.Workload{Kind: "pod", Namespace: ns, Pod: "web-1", Identity: "k8s:" + ns + "/web"},
			Request: audit.Request{Method: "POST", Path: "/v1/chat/completions", Model: "gpt-4o",
				Messages: []openai.Message{{Role: "user", Content: fmt.Sprintf("%s %d", prompt, i)}}},
			Response: &audit.Response{Status: 200}, Decision: audit.Decision{Action: "allow"}}
		if edit != nil {
			edit(&r)
		}
		f.seq[agent]++
		if err := r.Seal(f.seq[agent], f.prev[agent]); err != nil {
			t.Fatal(err)
		}
		f.prev[agent] = r.Hash
		recs = append(recs, r)
	}
	for len(recs) > 0 {
		k := min(len(recs), 500)
		if _, err := f.st.Ingest(context.Background(), recs[:k]); err != nil {
			t.Fatal(err)
		}
		recs = recs[k:]
	}
}

func (f *collectorFixture) args(cmd string, extra ...string) []string {
	return append([]string{cmd, "--collector", f.url, "--token-file", f.tokenFile}, extra...)
}

func TestQueryPrintsRecordsAsTableAndJSONLines(t *testing.T) {
	f := newCollectorFixture(t)
	f.add(t, 3, "shop", "summarise the order")
	f.add(t, 2, "billing", "draft the invoice")

	out := capture(t)
	if err := Run(context.Background(), f.args("query", "--namespace", "shop")); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "TIME") || !strings.Contains(lines[1], "shop/web-1") ||
		!strings.Contains(lines[1], "gpt-4o") || !strings.Contains(lines[1], "summarise the order 2") {
		t.Fatalf("table:\n%s", out)
	}

	out = capture(t)
	if err := Run(context.Background(), f.args("query", "--jsonl", "--q", "INVOICE")); err != nil {
		t.Fatal(err)
	}
	var n int
	for sc := bufio.NewScanner(out); sc.Scan(); n++ {
		var r audit.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil || r.Workload.Namespace != "billing" {
			t.Fatalf("jsonl line %q: %v", sc.Text(), err)
		}
	}
	if n != 2 {
		t.Fatalf("--jsonl --q INVOICE printed %d records, want 2", n)
	}
}

func TestExportWritesEveryPage(t *testing.T) {
	f := newCollectorFixture(t)
	f.add(t, 1203, "shop", "bulk")
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	capture(t)
	if err := Run(context.Background(), f.args("export", "--since", "1h", "--output", path)); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var r audit.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		if seen[r.ID] {
			t.Fatalf("record %s exported twice", r.ID)
		}
		seen[r.ID] = true
	}
	if len(seen) != 1203 {
		t.Fatalf("exported %d records, want 1203", len(seen))
	}
}

func TestVerify(t *testing.T) {
	f := newCollectorFixture(t)
	f.add(t, 5, "shop", "prove me")
	page, err := f.st.Query(context.Background(), store.Filter{Limit: 1})
	if err != nil || len(page.Records) != 1 {
		t.Fatal(err)
	}
	id := page.Records[0].ID

	out := capture(t)
	if err := Run(context.Background(), f.args("verify")); err != nil || !strings.Contains(out.String(), "OK:") {
		t.Fatalf("verify of an untouched store: %v\n%s", err, out)
	}
	out = capture(t)
	if err := Run(context.Background(), f.args("verify", "--record", id)); err != nil || !strings.Contains(out.String(), "OK: record "+id) {
		t.Fatalf("verify --record: %v\n%s", err, out)
	}
	capture(t)
	// A key the checkpoint was not signed with.
	other := "other+12345678+AZXCvbnmASDFghjklQWERtyuiop1234567890zxcvbnmasd"
	if err := Run(context.Background(), f.args("verify", "--record", id, "--checkpoint-key", other)); err == nil {
		t.Fatal("verify --record accepted a checkpoint under a key that did not sign it")
	}
}

func TestVerifyFailsAndNamesTheRecord(t *testing.T) {
	// A collector whose verification found a deleted record.
	rep := store.Report{Records: 9, Leaves: 10, TreeSize: 10, Problems: []store.Problem{
		{Kind: "missing", ID: "01JDELETEDRECORD0000000000", Agent: "node-1", Seq: 4, Detail: "in the log but not in the store"}}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(rep)
	}))
	t.Cleanup(srv.Close)
	out := capture(t)
	err := Run(context.Background(), []string{"verify", "--collector", srv.URL})
	if err == nil || !strings.Contains(out.String(), "FAIL missing: 01JDELETEDRECORD0000000000 (agent node-1, seq 4)") {
		t.Fatalf("verify of a failing store: err %v\n%s", err, out)
	}
}

// cancelOn is an output that cancels when it has seen want.
type cancelOn struct {
	mu     sync.Mutex
	buf    strings.Builder
	want   string
	cancel func()
}

func (c *cancelOn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	if strings.Contains(c.buf.String(), c.want) {
		c.cancel()
	}
	return len(p), nil
}

func TestQueryFollowPrintsNewRecords(t *testing.T) {
	f := newCollectorFixture(t)
	f.add(t, 1, "shop", "before following")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := &cancelOn{want: "while following", cancel: cancel}
	oldOut := Stdout
	Stdout = out
	t.Cleanup(func() { Stdout = oldOut })
	// The new record is stored once the first page has been printed.
	go func() {
		for {
			out.mu.Lock()
			started := strings.Contains(out.buf.String(), "before following")
			out.mu.Unlock()
			if started || ctx.Err() != nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		f.add(t, 1, "shop", "while following")
	}()
	if err := Run(ctx, f.args("query", "--follow", "--follow-interval", "50ms", "--jsonl")); err != nil {
		t.Fatal(err)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("--follow never printed the new record:\n%s", out.buf.String())
	}
	got := out.buf.String()
	if strings.Count(got, "\n") != 2 || strings.Index(got, "before following") > strings.Index(got, "while following") {
		t.Fatalf("--follow printed:\n%s", got)
	}
}

func TestCollectorNeedsTokens(t *testing.T) {
	capture(t)
	err := Run(context.Background(), []string{"collector", "--data-dir", t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "--tokens-file") {
		t.Fatalf("collector without tokens: %v", err)
	}
}

func TestQueryShowsConnectionRecords(t *testing.T) {
	f := newCollectorFixture(t)
	f.addEdited(t, 1, "shop", "", func(r *audit.Record) {
		r.Kind, r.Request = audit.KindConnection, audit.Request{}
		r.Connection = audit.Connection{Mode: "transparent", OrigDst: "104.18.7.192:443", SNI: "fronted.example", BytesSent: 517, BytesReceived: 4096}
		r.Decision = audit.Decision{Action: "splice", Rule: "other-sni"}
		r.Response = nil
	})
	out := capture(t)
	if err := Run(context.Background(), f.args("query", "--action", "splice")); err != nil {
		t.Fatal(err)
	}
	want := `[connection 104.18.7.192:443 other-sni sni="fronted.example"]`
	if !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "splice") {
		t.Fatalf("table:\n%s\nwant a row with %s", out, want)
	}
}
