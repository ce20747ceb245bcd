package store

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/promptrail/promptrail/audit"
)

func TestIngestGetRoundTrip(t *testing.T) {
	s := openTestStore(t, Config{})
	recs := newChain(t, "agent-a", time.Now().Add(-time.Hour)).take(10, nil)
	res := ingest(t, s, recs)
	if res.Accepted != 10 || res.Duplicates != 0 || len(res.ChainIssues) != 0 {
		t.Fatalf("Ingest = %+v, want 10 accepted, no duplicates or issues", res)
	}
	for _, want := range recs {
		got, p, err := s.Get(context.Background(), want.ID)
		if err != nil {
			t.Fatalf("Get(%s): %v", want.ID, err)
		}
		if !reflect.DeepEqual(*got, want) {
			t.Errorf("Get(%s) = %+v, want %+v", want.ID, *got, want)
		}
		if p == nil || p.TreeSize != 10 {
			t.Errorf("Get(%s) proof = %+v, want one against a tree of 10", want.ID, p)
		}
	}
	if _, _, err := s.Get(context.Background(), audit.NewID(time.Now())); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(unknown) error = %v, want ErrNotFound", err)
	}
	if _, _, err := s.Get(context.Background(), "not-a-ulid"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(not-a-ulid) error = %v, want ErrNotFound", err)
	}
}

func TestIngestDuplicateBatchIsIdempotent(t *testing.T) {
	s := openTestStore(t, Config{})
	recs := newChain(t, "agent-a", time.Now().Add(-time.Hour)).take(20, nil)
	ingest(t, s, recs)
	res := ingest(t, s, recs)
	if res.Accepted != 0 || res.Duplicates != 20 || len(res.ChainIssues) != 0 {
		t.Fatalf("re-Ingest = %+v, want 0 accepted, 20 duplicates, no issues", res)
	}
	page, err := s.Query(context.Background(), Filter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Records) != 20 {
		t.Errorf("Query found %d records, want 20", len(page.Records))
	}
	rep := verifyStore(t, s)
	if !rep.OK || rep.Leaves != 20 {
		t.Errorf("Verify = OK %v, %d leaves; want OK with 20 leaves:\n%s", rep.OK, rep.Leaves, kinds(rep))
	}
}

func TestIngestInvalidRecordStoresNothing(t *testing.T) {
	tests := []struct {
		name   string
		breakR func(r *audit.Record)
		reason string
	}{
		{"bad ULID", func(r *audit.Record) { r.ID = "nope" }, "ULID"},
		{"lower-case ULID", func(r *audit.Record) { r.ID = strings.ToLower(r.ID) }, "canonical"},
		{"empty agent", func(r *audit.Record) { r.AgentID = "" }, "agent_id"},
		{"seq 0", func(r *audit.Record) { r.Seq = 0 }, "seq"},
		{"edited after sealing", func(r *audit.Record) { r.Request.Model = "gpt-5" }, "hash"},
		{"no hash", func(r *audit.Record) { r.Hash = "" }, "hash"},
		{"oversize", func(r *audit.Record) {
			r.Request.Body = strings.Repeat("x", MaxBatchBytes)
			if err := r.Seal(r.Seq, r.PrevHash); err != nil {
				panic(err)
			}
		}, "oversize"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTestStore(t, Config{})
			c := newChain(t, "agent-a", time.Now().Add(-time.Hour))
			ingest(t, s, c.take(3, nil))
			before, err := s.Checkpoint(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			batch := c.take(5, nil)
			tt.breakR(&batch[2])
			_, err = s.Ingest(context.Background(), batch)
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Index != 2 || !strings.Contains(ve.Reason, tt.reason) {
				t.Fatalf("Ingest error = %v, want a ValidationError for record 2 mentioning %q", err, tt.reason)
			}
			page, err := s.Query(context.Background(), Filter{Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Records) != 3 {
				t.Errorf("Query found %d records after a refused batch, want the 3 from before", len(page.Records))
			}
			after, err := s.Checkpoint(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if string(after) != string(before) {
				t.Errorf("tree changed after a refused batch:\n%s\nthen\n%s", before, after)
			}
			if rep := verifyStore(t, s); !rep.OK || rep.Leaves != 3 {
				t.Errorf("Verify = OK %v, %d leaves; want OK with 3:\n%s", rep.OK, rep.Leaves, kinds(rep))
			}
		})
	}
}

func TestIngestBatchTooLarge(t *testing.T) {
	s := openTestStore(t, Config{})
	c := newChain(t, "agent-a", time.Now().Add(-time.Hour))
	batch := c.take(5, func(i int, r *audit.Record) { r.Request.Body = strings.Repeat("y", MaxBatchBytes/4) })
	_, err := s.Ingest(context.Background(), batch)
	if !errors.Is(err, ErrBatchTooLarge) {
		t.Fatalf("Ingest error = %v, want ErrBatchTooLarge", err)
	}
}

func TestChainIssues(t *testing.T) {
	start := time.Now().Add(-time.Hour)
	tests := []struct {
		name string
		// batches returns the batches to ingest; the last one holds the
		// record with the issue, whose ID is returned.
		batches func(c *agentChain) ([][]audit.Record, string)
		kind    string
	}{
		{"gap", func(c *agentChain) ([][]audit.Record, string) {
			first := c.take(3, nil)
			c.take(2, nil) // lost between agent and store
			last := c.take(2, nil)
			return [][]audit.Record{first, last}, last[0].ID
		}, IssueGap},
		{"fork: replayed seq", func(c *agentChain) ([][]audit.Record, string) {
			first := c.take(3, nil)
			c.seq, c.prev = 1, first[0].Hash
			other := c.next(func(r *audit.Record) { r.Request.Model = "other" })
			return [][]audit.Record{first, {other}}, other.ID
		}, IssueFork},
		{"fork: wrong prev_hash", func(c *agentChain) ([][]audit.Record, string) {
			first := c.take(3, nil)
			c.prev = strings.Repeat("0", 64)
			r := c.next(nil)
			return [][]audit.Record{first, {r}}, r.ID
		}, IssueFork},
		{"restart", func(c *agentChain) ([][]audit.Record, string) {
			first := c.take(3, nil)
			c.seq, c.prev = 0, ""
			again := c.take(2, nil)
			return [][]audit.Record{first, again}, again[0].ID
		}, IssueRestart},
		{"conflict", func(c *agentChain) ([][]audit.Record, string) {
			first := c.take(3, nil)
			evil := first[1]
			evil.Request.Model = "tampered"
			if err := evil.Seal(evil.Seq, evil.PrevHash); err != nil {
				panic(err)
			}
			return [][]audit.Record{first, {evil}}, evil.ID
		}, IssueConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTestStore(t, Config{})
			batches, id := tt.batches(newChain(t, "agent-a", start))
			var res audit.IngestResult
			for _, b := range batches {
				res = ingest(t, s, b)
			}
			if len(res.ChainIssues) != 1 || !strings.HasPrefix(res.ChainIssues[0], tt.kind+":") ||
				!strings.Contains(res.ChainIssues[0], id) {
				t.Fatalf("ChainIssues = %q, want one %s naming %s", res.ChainIssues, tt.kind, id)
			}
			rec, _, err := s.Get(context.Background(), id)
			if tt.kind == IssueConflict {
				if err != nil || rec.Request.Model == "tampered" {
					t.Errorf("conflicting record replaced the stored one (err %v)", err)
				}
			} else if err != nil {
				t.Errorf("record with a chain issue was not stored: %v", err)
			}
			rep := verifyStore(t, s)
			if rep.OK || !contains(problemsFor(rep, id), tt.kind) {
				t.Errorf("Verify problems for %s = %q, want %s stored:\n%s", id, problemsFor(rep, id), tt.kind, kinds(rep))
			}
		})
	}
}

func TestHashMatchesAgreesWithCheckHash(t *testing.T) {
	c := newChain(t, "agent-a", time.Now())
	good := c.next(func(r *audit.Record) { r.Node = `tricky ,"hash":"` })
	edited := good
	edited.Request.Prompt = "changed"
	for _, r := range []audit.Record{good, edited} {
		enc, err := r.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := hashMatches(enc, r.Hash), r.CheckHash() == nil; got != want {
			t.Errorf("hashMatches = %v, CheckHash ok = %v", got, want)
		}
	}
}
