package client

import (
	"errors"
	"fmt"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/collector/store"
)

// VerifyInclusion checks, without trusting the collector, that rec is in
// the Merkle log whose checkpoint p carries: the checkpoint's signature
// against verifierKey (a note verifier key), the record's own hash, and
// the inclusion proof of its leaf against the checkpoint's root. It
// returns the verified checkpoint.
func VerifyInclusion(rec *audit.Record, p *store.Proof, verifierKey string) (*log.Checkpoint, error) {
	if rec == nil || p == nil {
		return nil, errors.New("no record or no proof")
	}
	v, err := note.NewVerifier(verifierKey)
	if err != nil {
		return nil, fmt.Errorf("checkpoint key: %w", err)
	}
	n, err := note.Open(p.Checkpoint, note.VerifierList(v))
	if err != nil {
		return nil, fmt.Errorf("checkpoint signature: %w", err)
	}
	cp := &log.Checkpoint{}
	if _, err := cp.Unmarshal([]byte(n.Text)); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	if cp.Size != p.TreeSize {
		return nil, fmt.Errorf("proof is for a tree of %d leaves, the checkpoint for %d", p.TreeSize, cp.Size)
	}
	if err := rec.CheckHash(); err != nil {
		return nil, err
	}
	data, err := rec.Encode()
	if err != nil {
		return nil, err
	}
	leaf := rfc6962.DefaultHasher.HashLeaf(data)
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, p.LeafIndex, p.TreeSize, leaf, p.Hashes, cp.Hash); err != nil {
		return nil, fmt.Errorf("inclusion proof: %w", err)
	}
	return cp, nil
}
