package store

import (
	"bytes"
	"testing"
	"time"

	"github.com/promptrail/promptrail/audit"
)

func TestVerifyFindsTampering(t *testing.T) {
	tests := []struct {
		name string
		// tamper changes the store and returns the IDs Verify must name.
		tamper func(t *testing.T, s *Store, recs []audit.Record) []string
	}{
		{"untouched", func(*testing.T, *Store, []audit.Record) []string { return nil }},
		{"edited prompt", func(t *testing.T, s *Store, recs []audit.Record) []string {
			k := recordKeyOf(s, recs[4])
			raw := rawGet(t, s, k)
			edited := bytes.Replace(raw, []byte("question number 5"), []byte("question number 6"), 1)
			if bytes.Equal(edited, raw) {
				t.Fatal("prompt not found in stored record")
			}
			rawSet(t, s, k, edited)
			return []string{recs[4].ID}
		}},
		{"deleted record", func(t *testing.T, s *Store, recs []audit.Record) []string {
			rawDelete(t, s, recordKeyOf(s, recs[7]))
			return []string{recs[7].ID}
		}},
		{"swapped records", func(t *testing.T, s *Store, recs []audit.Record) []string {
			k1, k2 := recordKeyOf(s, recs[2]), recordKeyOf(s, recs[3])
			v1, v2 := rawGet(t, s, k1), rawGet(t, s, k2)
			rawSet(t, s, k1, v2)
			rawSet(t, s, k2, v1)
			return []string{recs[2].ID, recs[3].ID}
		}},
		{"record slipped in", func(t *testing.T, s *Store, recs []audit.Record) []string {
			extra := newChain(t, "agent-z", time.Now().Add(-time.Hour)).next(nil)
			enc, err := extra.Encode()
			if err != nil {
				t.Fatal(err)
			}
			rawSet(t, s, recordKeyOf(s, extra), enc)
			return []string{extra.ID}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTestStore(t, Config{})
			recs := newChain(t, "agent-a", time.Now().Add(-time.Hour)).take(10, nil)
			ingest(t, s, recs)
			if _, err := s.Checkpoint(t.Context()); err != nil {
				t.Fatal(err)
			}
			ids := tt.tamper(t, s, recs)
			rep := verifyStore(t, s)
			if len(ids) == 0 {
				if !rep.OK || rep.Records != 10 || rep.Leaves != 10 {
					t.Errorf("untouched store: %+v\n%s", rep, kinds(rep))
				}
				return
			}
			if rep.OK {
				t.Fatalf("Verify passed a tampered store")
			}
			for _, id := range ids {
				if len(problemsFor(rep, id)) == 0 {
					t.Errorf("no problem names %s:\n%s", id, kinds(rep))
				}
			}
		})
	}
}
