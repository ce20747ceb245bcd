package spool

import (
	"context"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Next returns the oldest sealed records not yet acknowledged, in seq
// order: at most maxRecords of them, and no more than maxBytes of Data
// together, except that the first is returned even if it alone is larger.
// It returns no entries when nothing is queued.
func (s *Spool) Next(ctx context.Context, maxRecords, maxBytes int) ([]Entry, error) {
	if maxRecords <= 0 {
		return nil, fmt.Errorf("spool: Next needs maxRecords > 0, got %d", maxRecords)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("spool: reading queued records: %w", err)
	}
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return nil, fmt.Errorf("spool: reading queued records: %w", ErrClosed)
	}
	if s.db == nil {
		return nil, nil // nothing is open, so nothing is queued yet
	}
	first := s.acked.Load() + 1
	if first > s.sealed.Load() {
		return nil, nil
	}
	var out []Entry
	err := s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = queuePrefix
		opts.PrefetchSize = min(maxRecords, 100)
		it := txn.NewIterator(opts)
		defer it.Close()
		total := 0
		// Seek past the acknowledged records rather than step over their
		// deletion markers.
		for it.Seek(queueKey(first)); it.ValidForPrefix(queuePrefix) && len(out) < maxRecords; it.Next() {
			item := it.Item()
			seq, ok := queueSeq(item.Key())
			if !ok {
				return fmt.Errorf("malformed key %q under %q", item.Key(), queuePrefix)
			}
			if len(out) > 0 && total+int(item.ValueSize()) > maxBytes {
				break // an estimate is enough to stop early
			}
			data, err := item.ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("reading record %d: %w", seq, err)
			}
			if len(out) > 0 && total+len(data) > maxBytes {
				break
			}
			id, start, err := entryMeta(data)
			if err != nil {
				return fmt.Errorf("record %d: %w", seq, err)
			}
			total += len(data)
			out = append(out, Entry{Seq: seq, ID: id, Start: start, Data: data})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("spool: reading queued records from %s: %w", s.db.Opts().Dir, err)
	}
	return out, nil
}

// Ack deletes the sealed records with seq <= through: the collector has
// them. Acknowledging what is already gone is not an error; acknowledging
// a seq not yet sealed is. When that empties the queue of a spool whose
// disk is short of space, Ack gives the space back (see reclaimIfEmpty).
func (s *Spool) Ack(ctx context.Context, through uint64) error {
	if err := s.ack(ctx, through); err != nil {
		return err
	}
	s.reclaimIfEmpty()
	return nil
}

func (s *Spool) ack(ctx context.Context, through uint64) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("spool: acknowledging through %d: %w", through, err)
	}
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return fmt.Errorf("spool: acknowledging through %d: %w", through, ErrClosed)
	}
	if s.db == nil {
		return fmt.Errorf("spool: acknowledging through %d: not open yet (disk full): %w", through, ErrFull)
	}
	if err := s.checkRoom(fmt.Sprintf("acknowledging through %d", through), ackSlack, 0); err != nil {
		return err
	}
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	acked := s.acked.Load()
	if through <= acked {
		return nil
	}
	if sealed := s.sealed.Load(); through > sealed {
		return fmt.Errorf("spool: acknowledging through %d, but only records up to %d are sealed (a shipper bug?)", through, sealed)
	}

	type victim struct {
		seq  uint64
		size int
	}
	var victims []victim
	err := s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = queuePrefix
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek(queueKey(acked + 1)); it.ValidForPrefix(queuePrefix); it.Next() {
			seq, ok := queueSeq(it.Item().Key())
			if !ok || seq > through {
				break
			}
			// The exact size, which Finish added: ValueSize only
			// estimates values kept in the value log.
			size := 0
			if err := it.Item().Value(func(v []byte) error { size = len(v); return nil }); err != nil {
				return fmt.Errorf("reading record %d: %w", seq, err)
			}
			victims = append(victims, victim{seq, size})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("spool: acknowledging through %d in %s: %w", through, s.db.Opts().Dir, err)
	}

	// Delete in transactions as large as Badger takes; the counters follow
	// each commit, so a failure leaves them true to what is on disk.
	for len(victims) > 0 {
		txn := s.db.NewTransaction(true)
		n, freed := 0, int64(0)
		for _, v := range victims {
			err := txn.Delete(queueKey(v.seq))
			if errors.Is(err, badger.ErrTxnTooBig) && n > 0 {
				break
			}
			if err != nil {
				txn.Discard()
				return s.ackError(through, err)
			}
			n++
			freed += int64(v.size)
		}
		if err := txn.Commit(); err != nil {
			return s.ackError(through, err)
		}
		s.acked.Store(victims[n-1].seq)
		s.bytes.Add(-freed)
		victims = victims[n:]
	}
	s.acked.Store(through)
	return nil
}

func (s *Spool) ackError(through uint64, err error) error {
	s.metrics.writeErrors.Inc()
	return fmt.Errorf("spool: deleting acknowledged records through %d in %s (is the disk failing?): %w",
		through, s.db.Opts().Dir, err)
}
