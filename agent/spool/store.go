package spool

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/promptrail/promptrail/audit"
)

// Key prefixes; see the package comment for the layout.
var (
	pendingPrefix = []byte("p/")
	queuePrefix   = []byte("q/")
	headKey       = []byte("h")
	rejectPrefix  = []byte("r/")
)

// recoveredError is the Error of a record left pending by a crash.
const recoveredError = "agent stopped before the exchange finished"

func pendingKey(id string) []byte {
	k := make([]byte, 0, len(pendingPrefix)+len(id))
	return append(append(k, pendingPrefix...), id...)
}

func queueKey(seq uint64) []byte {
	k := make([]byte, len(queuePrefix)+8)
	copy(k, queuePrefix)
	binary.BigEndian.PutUint64(k[len(queuePrefix):], seq)
	return k
}

func rejectKey(seq uint64) []byte {
	k := make([]byte, len(rejectPrefix)+8)
	copy(k, rejectPrefix)
	binary.BigEndian.PutUint64(k[len(rejectPrefix):], seq)
	return k
}

func queueSeq(key []byte) (uint64, bool) {
	if len(key) != len(queuePrefix)+8 || !bytes.HasPrefix(key, queuePrefix) {
		return 0, false
	}
	return seqOf(key, queuePrefix), true
}

// seqOf reads the seq of a key prefix + 8 bytes; 0 for another shape.
func seqOf(key, prefix []byte) uint64 {
	if len(key) != len(prefix)+8 {
		return 0
	}
	return binary.BigEndian.Uint64(key[len(prefix):])
}

// load reads the chain head, the pending records' sizes and the queue's
// extent and size, which the spool then keeps in memory.
func (s *Spool) load() error {
	first := uint64(0) // lowest seq under q/; 0 if none
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(headKey)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
			// Perhaps a crash cut a reclaim short: it saved the head.
			h, ok, err := loadHeadFile(s.cfg.Dir)
			if err != nil {
				return err
			}
			if ok {
				s.head = h
			}
		case err != nil:
			return err
		default:
			if err := item.Value(func(v []byte) error { return json.Unmarshal(v, &s.head) }); err != nil {
				return fmt.Errorf("chain head: %w", err)
			}
		}
		if err := s.scan(txn, pendingPrefix, func(key []byte, size int) {
			s.pending[string(key[len(pendingPrefix):])] = size
		}); err != nil {
			return err
		}
		if err := s.scan(txn, rejectPrefix, func([]byte, int) { s.rejected.Add(1) }); err != nil {
			return err
		}
		return s.scan(txn, queuePrefix, func(key []byte, _ int) {
			if seq, ok := queueSeq(key); ok && first == 0 {
				first = seq
			}
		})
	})
	if err != nil {
		return fmt.Errorf("spool: reading %s (delete the directory only if losing its unsent records is acceptable): %w", s.db.Opts().Dir, err)
	}
	s.sealed.Store(s.head.Seq)
	if first == 0 || first > s.head.Seq {
		// An empty queue: everything sealed was acknowledged.
		s.acked.Store(s.head.Seq)
	} else {
		s.acked.Store(first - 1)
	}
	return nil
}

// scan calls fn for every key under prefix with its value's size, and adds
// the sizes to s.bytes. It reads values: Item.ValueSize is only an estimate
// for values in the value log, and Ack must subtract what was added.
func (s *Spool) scan(txn *badger.Txn, prefix []byte, fn func(key []byte, size int)) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		size := 0
		if err := item.Value(func(v []byte) error { size = len(v); return nil }); err != nil {
			return fmt.Errorf("reading %q: %w", item.Key(), err)
		}
		s.bytes.Add(int64(size))
		fn(item.Key(), size)
	}
	return nil
}

// recover seals the records a crash left pending, marked incomplete, so
// that they ship like any other.
func (s *Spool) recover() error {
	if len(s.pending) == 0 {
		return nil
	}
	var reqs []*writeReq
	err := s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = pendingPrefix
		it := txn.NewIterator(opts)
		defer it.Close()
		// Keys are ULIDs: key order is start order.
		for it.Seek(pendingPrefix); it.ValidForPrefix(pendingPrefix); it.Next() {
			id := string(it.Item().Key()[len(pendingPrefix):])
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("reading pending record %s: %w", id, err)
			}
			reqs = append(reqs, &writeReq{rec: recovered(id, v), done: make(chan error, 1)})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("spool: recovering pending records: %w", err)
	}
	s.commitGroup(reqs)
	for _, r := range reqs {
		if err := <-r.done; err != nil {
			return fmt.Errorf("spool: sealing record %s left pending by a crash: %w", r.rec.ID, err)
		}
	}
	s.log.Warn("sealed records left pending by an agent stop; they ship marked incomplete",
		"records", len(reqs), "dir", s.db.Opts().Dir)
	return nil
}

// recovered turns a pending record's bytes into the record to seal.
func recovered(id string, data []byte) audit.Record {
	var r audit.Record
	if err := json.Unmarshal(data, &r); err != nil || r.ID != id {
		// Keep what there is rather than drop the prompt.
		r = audit.Record{
			ID:      id,
			Request: audit.Request{Body: string(data), Size: int64(len(data))},
			Error:   fmt.Sprintf("%s; its pending copy was unreadable (%v)", recoveredError, err),
		}
	}
	r.Incomplete = true
	if r.Error == "" {
		r.Error = recoveredError
	}
	return r
}

// entryMeta reads a sealed record's id and start without decoding the
// whole record: both come near the start of its JSON.
func entryMeta(data []byte) (id string, start time.Time, err error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", time.Time{}, fmt.Errorf("spool: sealed record is not a JSON object: %v", err)
	}
	haveStart := false
	for dec.More() && (id == "" || !haveStart) {
		t, err := dec.Token()
		if err != nil {
			return "", time.Time{}, fmt.Errorf("spool: decoding sealed record: %w", err)
		}
		switch t {
		case "id":
			err = dec.Decode(&id)
		case "start":
			err = dec.Decode(&start)
			haveStart = true
		default:
			var skip json.RawMessage
			err = dec.Decode(&skip)
		}
		if err != nil {
			return "", time.Time{}, fmt.Errorf("spool: decoding sealed record: %w", err)
		}
	}
	return id, start, nil
}
