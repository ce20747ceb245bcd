package spool

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/promptrail/promptrail/audit"
)

func TestRejectKeepsTheRecordAsideAndTheRestFlows(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, Config{Dir: dir})
	ctx := context.Background()
	for range 5 {
		beginFinish(t, s, newRecord(1000))
	}
	before := s.Stats()
	if err := s.Reject(ctx, 3, "record_too_large", "oversize: 9 MB"); err != nil {
		t.Fatal(err)
	}
	if err := s.Reject(ctx, 3, "record_too_large", "again"); err != nil {
		t.Errorf("rejecting a record rejected already: %v", err)
	}
	entries, err := s.Next(ctx, 100, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, e := range entries {
		seqs = append(seqs, e.Seq)
	}
	if want := []uint64{1, 2, 4, 5}; !equal(seqs, want) {
		t.Fatalf("Next after rejecting 3 = seqs %v, want %v", seqs, want)
	}
	if err := s.Ack(ctx, 5); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.Queued != 0 || st.Rejected != 1 || st.Bytes <= 0 || st.Bytes >= before.Bytes {
		t.Fatalf("Stats after acknowledging the rest = %+v (before %+v); want nothing queued, 1 rejected, its bytes counted", st, before)
	}
	s.Close()

	// The rejected record survives a restart, whole, with its reason.
	s = openSpool(t, Config{Dir: dir})
	if got := s.Stats(); got.Rejected != 1 || got.Bytes != st.Bytes {
		t.Errorf("Stats after reopen = %+v, want 1 rejected and %d bytes", got, st.Bytes)
	}
	rej, err := s.RejectedRecords(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rej) != 1 || rej[0].Seq != 3 || rej[0].Code != "record_too_large" || rej[0].Reason != "oversize: 9 MB" {
		t.Fatalf("RejectedRecords = %+v, want seq 3 with its code and reason", rej)
	}
	var r audit.Record
	if err := json.Unmarshal(rej[0].Record, &r); err != nil || r.Seq != 3 || r.CheckHash() != nil {
		t.Errorf("the kept record does not decode to seq 3 with a valid hash: %v", err)
	}
	next := newRecord(10)
	beginFinish(t, s, next)
	if next.Seq != 6 {
		t.Errorf("next record after reopen has seq %d, want 6", next.Seq)
	}
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
