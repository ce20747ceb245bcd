package store

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestRetentionDropsOldBuckets(t *testing.T) {
	ctx := context.Background()
	// Records of ten days ago: older than the default clock skew allows.
	s := openTestStore(t, Config{Retention: 72 * time.Hour, MaxClockSkew: -1})
	c := newChain(t, "agent-a", time.Now().Add(-10*24*time.Hour))
	old := c.take(5, nil)
	ingest(t, s, old)
	c.at = time.Now().Add(-time.Hour)
	recent := c.take(5, nil)
	ingest(t, s, recent)
	if _, err := s.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}

	n, err := s.ApplyRetention(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("dropped %d buckets, want 1", n)
	}
	got := queryAll(t, s, Filter{}, 100)
	if len(got) != len(recent) {
		t.Errorf("Query after retention: %d records, want the %d recent ones", len(got), len(recent))
	}
	if got := queryAll(t, s, Filter{Agent: "agent-a"}, 100); len(got) != len(recent) {
		t.Errorf("indexed Query after retention: %d records, want %d", len(got), len(recent))
	}
	if _, _, err := s.Get(ctx, old[0].ID); err == nil {
		t.Error("Get of an expired record succeeded")
	}
	rep := verifyStore(t, s)
	if !rep.OK || rep.Expired != len(old) || rep.Records != len(recent) || rep.Leaves != 10 {
		t.Errorf("Verify after retention: OK %v, expired %d, records %d, leaves %d; want OK, 5, 5, 10:\n%s",
			rep.OK, rep.Expired, rep.Records, rep.Leaves, kinds(rep))
	}
	// Proofs of kept records still verify.
	rec, p, err := s.Get(ctx, recent[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	checkProof(t, s.VerifierKey(), DefaultOrigin, rec, p)
}

func TestRunSignsAndStops(t *testing.T) {
	s := openTestStore(t, Config{})
	ingest(t, s, newChain(t, "agent-a", time.Now()).take(3, nil))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background()); err == nil {
		t.Error("Run on a closed store returned nil")
	}
}

func TestRunSignsCheckpointsWhileIdle(t *testing.T) {
	s := openTestStore(t, Config{CheckpointEvery: 20 * time.Millisecond})
	ingest(t, s, newChain(t, "agent-a", time.Now()).take(3, nil))
	first, err := s.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		cp, err := s.Checkpoint(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if string(cp) != string(first) {
			if !strings.Contains(string(cp), "\n3\n") || !strings.Contains(string(cp), "\ntimestamp ") {
				t.Fatalf("idle checkpoint:\n%s", cp)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no new checkpoint was signed while the log was idle")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
