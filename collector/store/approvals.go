package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/promptrail/promptrail/audit"
)

// Approval state, outside the time buckets (an approval outlives the
// retention of nothing: it is small and its steps are records too):
//
//	p/<id>       audit.Approval, JSON: its current state
//	g/<digest>   id of the newest approval asked for that request digest
//
// The state is a convenience for the API; the trail is the approval
// records (kind approval) in the collector's own chain.

func approvalKey(id string) []byte      { return append([]byte("p/"), id...) }
func approvalDigestKey(d string) []byte { return append([]byte("g/"), d...) }

// PutApproval stores an approval's state and points its digest at it.
func (s *Store) PutApproval(ctx context.Context, a *audit.Approval) error {
	v, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("store: encoding approval %s: %w", a.ID, err)
	}
	err = s.db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(approvalKey(a.ID), v); err != nil {
			return err
		}
		return txn.Set(approvalDigestKey(a.Digest), []byte(a.ID))
	})
	if err != nil {
		return fmt.Errorf("store: writing approval %s: %w", a.ID, err)
	}
	return nil
}

// GetApproval returns an approval's state; ErrNotFound if there is none.
func (s *Store) GetApproval(ctx context.Context, id string) (*audit.Approval, error) {
	var a audit.Approval
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(approvalKey(id))
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error { return json.Unmarshal(v, &a) })
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: reading approval %s: %w", id, err)
	}
	return &a, nil
}

// ApprovalByDigest returns the newest approval asked for a request
// digest; ErrNotFound if there is none.
func (s *Store) ApprovalByDigest(ctx context.Context, digest string) (*audit.Approval, error) {
	var id string
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(approvalDigestKey(digest))
		if err != nil {
			return err
		}
		v, err := it.ValueCopy(nil)
		id = string(v)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: reading approval digest: %w", err)
	}
	return s.GetApproval(ctx, id)
}

// Approvals returns the approvals for which keep is true, oldest first
// (IDs are ULIDs).
func (s *Store) Approvals(ctx context.Context, keep func(*audit.Approval) bool) ([]audit.Approval, error) {
	var out []audit.Approval
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("p/")})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			var a audit.Approval
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &a) }); err != nil {
				return err
			}
			if keep(&a) {
				out = append(out, a)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: listing approvals: %w", err)
	}
	return out, nil
}

// ChainHead returns the seq and hash of the newest record of an agent's
// chain (0, "" for none): where a writer of that chain resumes.
func (s *Store) ChainHead(ctx context.Context, agent string) (uint64, string, error) {
	var h head
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(headKey(agent))
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error { return json.Unmarshal(v, &h) })
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("store: reading chain head of %s: %w", agent, err)
	}
	return h.Seq, h.Hash, nil
}
