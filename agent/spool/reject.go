package spool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Rejected is a record the collector refused for good, as kept aside.
type Rejected struct {
	Seq    uint64          `json:"seq"`
	ID     string          `json:"id"`
	Code   string          `json:"code"`
	Reason string          `json:"reason"`
	Time   time.Time       `json:"time"`
	Record json.RawMessage `json:"record"`
}

// Reject moves the queued record seq aside: the collector will never take
// it (code and reason say why), so it must not hold up the records behind
// it, and it must not be lost either. It stays in the spool, counted in
// its bytes and in Stats.Rejected, until an operator removes it; the
// collector's chain shows the gap meanwhile. Rejecting a record no longer
// queued (acknowledged, or rejected already) is not an error.
func (s *Spool) Reject(ctx context.Context, seq uint64, code, reason string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("spool: rejecting record %d: %w", seq, err)
	}
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return fmt.Errorf("spool: rejecting record %d: %w", seq, ErrClosed)
	}
	if s.db == nil {
		return fmt.Errorf("spool: rejecting record %d: not open yet (disk full): %w", seq, ErrFull)
	}
	if err := s.checkRoom(fmt.Sprintf("moving record %d aside", seq), ackSlack, 0); err != nil {
		return err
	}
	// Ack deletes queue keys too; serialised with it, the key read here
	// is still there when the transaction commits.
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	var delta int64
	moved := false
	err := s.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(queueKey(seq))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		data, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		id, _, _ := entryMeta(data)
		v, err := json.Marshal(Rejected{Seq: seq, ID: id, Code: code, Reason: reason, Time: time.Now().UTC(), Record: data})
		if err != nil {
			return err
		}
		if err := txn.Set(rejectKey(seq), v); err != nil {
			return err
		}
		delta, moved = int64(len(v)-len(data)), true
		return txn.Delete(queueKey(seq))
	})
	if err != nil {
		s.metrics.writeErrors.Inc()
		return fmt.Errorf("spool: moving record %d aside in %s (is the disk full or failing?): %w", seq, s.db.Opts().Dir, err)
	}
	if moved {
		s.bytes.Add(delta)
		s.rejected.Add(1)
	}
	return nil
}

// RejectedRecords returns the records kept aside by Reject, oldest first.
func (s *Spool) RejectedRecords(ctx context.Context) ([]Rejected, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("spool: reading rejected records: %w", err)
	}
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return nil, fmt.Errorf("spool: reading rejected records: %w", ErrClosed)
	}
	if s.db == nil {
		return nil, nil
	}
	out, err := readRejected(ctx, s.db)
	if err != nil {
		return nil, fmt.Errorf("spool: reading rejected records in %s: %w", s.db.Opts().Dir, err)
	}
	return out, nil
}

// eachRejected calls fn with every r/ key and its value, both valid only
// during the call.
func eachRejected(txn *badger.Txn, fn func(key, value []byte) error) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = rejectPrefix
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Seek(rejectPrefix); it.ValidForPrefix(rejectPrefix); it.Next() {
		item := it.Item()
		if err := item.Value(func(v []byte) error { return fn(item.Key(), v) }); err != nil {
			return err
		}
	}
	return nil
}

// ReadRejected returns the records kept aside in the spool in dir, which
// no agent may be using (Badger locks it): it opens Badger read-only, so
// that looking changes nothing, not even the pending records a crash left.
func ReadRejected(ctx context.Context, dir string, logger *slog.Logger) ([]Rejected, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	db, err := badger.Open(badgerOptions(Config{Dir: dir, Logger: logger}).WithReadOnly(true))
	if err != nil {
		return nil, fmt.Errorf("spool: opening %s read-only (stop the agent that uses it first): %w", dir, err)
	}
	defer db.Close()
	out, err := readRejected(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("spool: reading rejected records in %s: %w", dir, err)
	}
	return out, nil
}

func readRejected(ctx context.Context, db *badger.DB) ([]Rejected, error) {
	var out []Rejected
	err := db.View(func(txn *badger.Txn) error {
		return eachRejected(txn, func(key, v []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			var r Rejected
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("reading %q: %w", key, err)
			}
			r.Seq = seqOf(key, rejectPrefix)
			r.ID, _, _ = entryMeta(r.Record) // "" if unreadable: the record is there all the same
			out = append(out, r)
			return nil
		})
	})
	return out, err
}
