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

func TestIngestRejectsABadRecordAndStoresTheRest(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		breakR func(r *audit.Record)
		code   string
		reason string
	}{
		{"bad ULID", Config{}, func(r *audit.Record) { r.ID = "nope" }, RejectInvalid, "ULID"},
		{"lower-case ULID", Config{}, func(r *audit.Record) { r.ID = strings.ToLower(r.ID) }, RejectInvalid, "canonical"},
		{"empty agent", Config{}, func(r *audit.Record) { r.AgentID = "" }, RejectInvalid, "agent_id"},
		{"edited after sealing", Config{}, func(r *audit.Record) { r.Request.Model = "gpt-5" }, RejectInvalid, "hash"},
		{"no hash", Config{}, func(r *audit.Record) { r.Hash = "" }, RejectInvalid, "hash"},
		{"oversize", Config{}, func(r *audit.Record) {
			r.Request.Body = strings.Repeat("x", audit.MaxRecordBytes)
			reseal(r)
		}, RejectTooLarge, "oversize"},
		{"start in the future", Config{MaxClockSkew: 90 * time.Minute}, func(r *audit.Record) {
			r.Start = time.Now().Add(2 * time.Hour)
			reseal(r)
		}, RejectClockSkew, "clock"},
		{"start long ago", Config{}, func(r *audit.Record) {
			r.Start = time.Now().Add(-DefaultMaxClockSkew - time.Hour)
			reseal(r)
		}, RejectClockSkew, "clock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTestStore(t, tt.cfg)
			c := newChain(t, "agent-a", time.Now().Add(-time.Hour))
			ingest(t, s, c.take(3, nil))
			batch := c.take(5, nil)
			tt.breakR(&batch[2])
			res := ingest(t, s, batch)
			if res.Accepted != 4 || len(res.Rejected) != 1 {
				t.Fatalf("Ingest = %+v, want 4 accepted and record 2 rejected", res)
			}
			if rj := res.Rejected[0]; rj.Index != 2 || rj.ID != batch[2].ID || rj.Seq != 6 || rj.Code != tt.code || !strings.Contains(rj.Reason, tt.reason) {
				t.Errorf("Rejected = %+v, want index 2, seq 6, code %s, a reason mentioning %q", rj, tt.code, tt.reason)
			}
			if len(res.ChainIssues) != 1 || !strings.Contains(res.ChainIssues[0], "record 6 is missing") {
				t.Errorf("ChainIssues = %q, want the gap at seq 6", res.ChainIssues)
			}
			page, err := s.Query(context.Background(), Filter{Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Records) != 7 {
				t.Errorf("Query found %d records, want the 3 from before and 4 of the batch", len(page.Records))
			}
			rep := verifyStore(t, s)
			if rep.OK || rep.Leaves != 7 || !strings.Contains(kinds(rep), "gap") {
				t.Errorf("Verify = OK %v, %d leaves; want the gap reported over 7 leaves:\n%s", rep.OK, rep.Leaves, kinds(rep))
			}
		})
	}
}

func reseal(r *audit.Record) {
	if err := r.Seal(r.Seq, r.PrevHash); err != nil {
		panic(err)
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
