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

func TestReadRejectedWhileNoAgentRuns(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, Config{Dir: dir})
	ctx := context.Background()
	for range 3 {
		beginFinish(t, s, newRecord(100))
	}
	if err := s.Reject(ctx, 2, "clock_skew", "start is 9 days off"); err != nil {
		t.Fatal(err)
	}
	pending := newRecord(10)
	if err := s.Begin(ctx, pending); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadRejected(ctx, dir, quietLogger()); err == nil {
		t.Error("ReadRejected opened a spool an agent is using")
	}
	s.Close()

	for range 2 { // reading changes nothing, so it reads the same twice
		rej, err := ReadRejected(ctx, dir, quietLogger())
		if err != nil {
			t.Fatal(err)
		}
		if len(rej) != 1 || rej[0].Seq != 2 || rej[0].Code != "clock_skew" {
			t.Fatalf("ReadRejected = %+v, want seq 2 refused for clock_skew", rej)
		}
	}
	s = openSpool(t, Config{Dir: dir})
	var seqs []uint64
	for _, r := range drain(t, s) {
		seqs = append(seqs, r.Seq)
	}
	if want := []uint64{1, 3, 4}; !equal(seqs, want) || s.Stats().Rejected != 1 {
		t.Errorf("after reading, the spool queues seqs %v (want %v: the pending record sealed by this start) and %d rejected (want 1)",
			seqs, want, s.Stats().Rejected)
	}
}
