package store

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/promptrail/promptrail/agent/openai"
	"github.com/promptrail/promptrail/audit"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// openTestStore opens a store in dir (a fresh temporary one when empty),
// closed when the test ends.
func openTestStore(tb testing.TB, cfg Config) *Store {
	tb.Helper()
	if cfg.Dir == "" {
		cfg.Dir = tb.TempDir()
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

// agentChain makes sealed records for one agent, linking each to the last.
type agentChain struct {
	tb    testing.TB
	agent string
	seq   uint64
	prev  string
	at    time.Time
	step  time.Duration
}

func newChain(tb testing.TB, agent string, start time.Time) *agentChain {
	return &agentChain{tb: tb, agent: agent, at: start, step: time.Second}
}

// next returns the chain's next record, changed by edit before sealing.
func (c *agentChain) next(edit func(*audit.Record)) audit.Record {
	c.tb.Helper()
	c.seq++
	r := baseRecord(c.agent, c.at, int(c.seq))
	c.at = c.at.Add(c.step)
	if edit != nil {
		edit(&r)
	}
	if err := r.Seal(c.seq, c.prev); err != nil {
		c.tb.Fatalf("Seal: %v", err)
	}
	c.prev = r.Hash
	return r
}

func (c *agentChain) take(n int, edit func(i int, r *audit.Record)) []audit.Record {
	out := make([]audit.Record, n)
	for i := range out {
		out[i] = c.next(func(r *audit.Record) {
			if edit != nil {
				edit(i, r)
			}
		})
	}
	return out
}

func baseRecord(agent string, at time.Time, n int) audit.Record {
	return audit.Record{
		ID:      audit.NewID(at),
		AgentID: agent,
		Node:    "node-1",
		Start:   at,
		End:     at.Add(300 * time.Millisecond),
		Workload: audit.Workload{
			Kind: "pod", Identity: "k8s:default/web", Namespace: "default",
			Pod: "web-7d9f", Owner: "Deployment/web", Container: "app", Comm: "python3",
		},
		Connection: audit.Connection{Mode: "transparent", Client: "10.0.0.5:41000"},
		Request: audit.Request{
			Method: "POST", Host: "api.openai.com", Path: "/v1/chat/completions",
			Endpoint: openai.Endpoint("chat.completions"), Model: "gpt-4o",
			Messages: []openai.Message{{Role: "user", Content: fmt.Sprintf("question number %d", n)}},
			Size:     120,
		},
		Response: &audit.Response{
			Status: 200, Model: "gpt-4o",
			Choices: []openai.Choice{{Index: 0, Role: "assistant", Content: fmt.Sprintf("answer number %d", n)}},
			Size:    200,
		},
		Decision: audit.Decision{Action: "allow"},
	}
}

func ingest(tb testing.TB, s *Store, recs []audit.Record) audit.IngestResult {
	tb.Helper()
	res, err := s.Ingest(context.Background(), recs)
	if err != nil {
		tb.Fatalf("Ingest: %v", err)
	}
	return res
}

// rawSet writes a key straight into the store's database, as an attacker
// with disk access would.
func rawSet(tb testing.TB, s *Store, key, val []byte) {
	tb.Helper()
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(key, val) }); err != nil {
		tb.Fatalf("raw set: %v", err)
	}
}

func rawDelete(tb testing.TB, s *Store, key []byte) {
	tb.Helper()
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(key) }); err != nil {
		tb.Fatalf("raw delete: %v", err)
	}
}

func rawGet(tb testing.TB, s *Store, key []byte) []byte {
	tb.Helper()
	var v []byte
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(key)
		if err != nil {
			return err
		}
		v, err = it.ValueCopy(nil)
		return err
	})
	if err != nil {
		tb.Fatalf("raw get %q: %v", key, err)
	}
	return v
}

// recordKeyOf returns the r/ key of a record in s.
func recordKeyOf(s *Store, r audit.Record) []byte {
	return recordKey(s.bucketOfTime(uint64(r.Start.UnixMilli())), r.ID)
}

func problemsFor(rep Report, id string) []string {
	var out []string
	for _, p := range rep.Problems {
		if p.ID == id {
			out = append(out, p.Kind)
		}
	}
	return out
}

func kinds(rep Report) string {
	var ks []string
	for _, p := range rep.Problems {
		ks = append(ks, p.Kind+"("+p.ID+"): "+p.Detail)
	}
	return strings.Join(ks, "\n")
}

func verifyStore(tb testing.TB, s *Store) Report {
	tb.Helper()
	rep, err := s.Verify(context.Background())
	if err != nil {
		tb.Fatalf("Verify: %v", err)
	}
	return rep
}
