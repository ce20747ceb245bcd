package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// ApplyRetention drops the buckets that ended before now-Retention, whole,
// and returns how many it dropped. The Merkle log and the chains keep
// their entries for the dropped records: Verify counts those as expired.
// Run calls it every few minutes; it does nothing when Retention is 0.
func (s *Store) ApplyRetention(ctx context.Context, now time.Time) (int, error) {
	if s.cfg.Retention == 0 {
		return 0, nil
	}
	horizon := now.Add(-s.cfg.Retention).Unix()
	if horizon <= 0 {
		return 0, nil
	}
	// The first bucket kept is the one holding the horizon: every bucket
	// before it ended at or before the horizon.
	cut := s.bucketOfTime(uint64(horizon) * 1000)
	var old [][]byte
	err := s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek(prefixBuckets); it.ValidForPrefix(prefixBuckets); {
			bkt, ok := bucketOf(it.Item().Key())
			if !ok || bkt >= cut {
				return nil
			}
			old = append(old, bucketPrefix(bkt))
			it.Seek(bucketPrefix(bkt + 1))
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: listing expired buckets: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	// The cut goes first: should the drop fail half way, Verify already
	// knows that records before it may be gone.
	err = s.db.Update(func(txn *badger.Txn) error {
		prev, err := s.retentionCut(txn)
		if err != nil || prev >= cut {
			return err
		}
		return txn.Set(keyRetention, u64(cut))
	})
	if err != nil {
		return 0, fmt.Errorf("store: saving retention cut: %w", err)
	}
	if len(old) == 0 {
		return 0, nil
	}
	if err := s.db.DropPrefix(old...); err != nil {
		return 0, fmt.Errorf("store: dropping %d expired buckets: %w", len(old), err)
	}
	return len(old), nil
}

// retentionCut returns the oldest bucket retention keeps; 0 if none.
func (s *Store) retentionCut(txn *badger.Txn) (uint64, error) {
	cut, err := getU64(txn, keyRetention)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading retention cut: %w", err)
	}
	return cut, nil
}
