package store

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/promptrail/promptrail/audit"
)

// checkProof verifies a Get's proof as a client would: with nothing but
// the record, the proof and the verifier key.
func checkProof(t *testing.T, vkey, origin string, rec *audit.Record, p *Proof) {
	t.Helper()
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	if _, err := note.Open(p.Checkpoint, note.VerifierList(v)); err != nil {
		t.Fatalf("checkpoint signature: %v", err)
	}
	cp, _, _, err := log.ParseCheckpoint(p.Checkpoint, origin, v)
	if err != nil {
		t.Fatalf("ParseCheckpoint: %v", err)
	}
	if cp.Size != p.TreeSize {
		t.Fatalf("proof is for a tree of %d, checkpoint of %d", p.TreeSize, cp.Size)
	}
	enc, err := rec.Encode()
	if err != nil {
		t.Fatal(err)
	}
	leaf := rfc6962.DefaultHasher.HashLeaf(enc)
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, p.LeafIndex, p.TreeSize, leaf, p.Hashes, cp.Hash); err != nil {
		t.Fatalf("inclusion proof of %s (leaf %d of %d): %v", rec.ID, p.LeafIndex, p.TreeSize, err)
	}
}

func TestInclusionProofsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	c := newChain(t, "agent-a", time.Now().Add(-time.Hour))
	s, err := Open(ctx, Config{Dir: dir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	var all []audit.Record
	// Odd batch sizes leave imperfect subtrees at every restart.
	for _, n := range []int{1, 6, 13} {
		b := c.take(n, nil)
		ingest(t, s, b)
		all = append(all, b...)
	}
	vkey := s.VerifierKey()
	for _, r := range all {
		rec, p, err := s.Get(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		checkProof(t, vkey, DefaultOrigin, rec, p)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTestStore(t, Config{Dir: dir})
	if s.VerifierKey() != vkey {
		t.Fatalf("key changed across restart")
	}
	for _, n := range []int{3, 9} {
		b := c.take(n, nil)
		if res := ingest(t, s, b); len(res.ChainIssues) != 0 {
			t.Fatalf("chain issues after restart: %q", res.ChainIssues)
		}
		all = append(all, b...)
	}
	// Proofs are against the latest checkpoint: old records keep the one
	// of 20 until a new one is signed.
	if _, p, err := s.Get(ctx, all[0].ID); err != nil || p.TreeSize != 20 {
		t.Fatalf("proof of an old record: %+v, %v; want one against the checkpoint of 20", p, err)
	}
	if _, err := s.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range all {
		rec, p, err := s.Get(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if p.TreeSize != uint64(len(all)) {
			t.Errorf("proof against tree of %d, want %d", p.TreeSize, len(all))
		}
		// The proof survives the JSON an API sends.
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		var back Proof
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		checkProof(t, vkey, DefaultOrigin, rec, &back)
	}
	if rep := verifyStore(t, s); !rep.OK || rep.Leaves != len(all) || rep.Checkpoint == nil {
		t.Errorf("Verify = %+v:\n%s", rep, kinds(rep))
	}
}

func TestCheckpointFollowsTree(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t, Config{Origin: "test log"})
	v, err := note.NewVerifier(s.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	c := newChain(t, "agent-a", time.Now())
	for want := uint64(0); want <= 10; want += 5 {
		raw, err := s.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cp, _, _, err := log.ParseCheckpoint(raw, "test log", v)
		if err != nil {
			t.Fatal(err)
		}
		if cp.Size != want {
			t.Errorf("checkpoint size %d, want %d", cp.Size, want)
		}
		ingest(t, s, c.take(5, nil))
	}
}

func TestLoadOrCreateSignerKeepsKey(t *testing.T) {
	dir := t.TempDir()
	s1, v1, err := LoadOrCreateSigner(dir, "my log")
	if err != nil {
		t.Fatal(err)
	}
	s2, v2, err := LoadOrCreateSigner(dir, "my log")
	if err != nil {
		t.Fatal(err)
	}
	if s1.KeyHash() != s2.KeyHash() || v1.KeyHash() != v2.KeyHash() {
		t.Fatal("a second call made a new key")
	}
	msg, err := note.Sign(&note.Note{Text: "hello\n"}, s2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(msg, note.VerifierList(v1)); err != nil {
		t.Fatalf("note signed with the reloaded key does not verify: %v", err)
	}
}
