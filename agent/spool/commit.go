package spool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/dgraph-io/badger/v4"

	"github.com/promptrail/promptrail/audit"
)

// Limits of one committer transaction. Badger refuses a transaction over
// 15% of a memtable (2.4 MiB here); values over valueThreshold count only
// as pointers, so maxGroupBytes plus one record stays well under.
const (
	maxGroupRecords = 512
	maxGroupBytes   = 1 << 20
)

// writeReq is one Begin or Finish call waiting for the committer.
type writeReq struct {
	// begin: store rec's JSON (data) as pending. Otherwise seal rec.
	begin bool
	data  []byte
	rec   audit.Record // a copy, sealed by the committer
	done  chan error   // buffered; receives exactly one value
}

// Begin stores r as pending. When it returns nil, r is on disk: the
// request may go upstream. It returns an error wrapping ErrFull when r
// would take the spool over its size limit, and other errors when the
// record could not be stored (disk full or failing, spool closed).
func (s *Spool) Begin(ctx context.Context, r *audit.Record) error {
	if r.ID == "" {
		return errors.New("spool: record has no ID; set it with audit.NewID")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("spool: record %s not stored: %w", r.ID, err)
	}
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("spool: encoding record %s: %w", r.ID, err)
	}
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return fmt.Errorf("spool: record %s not stored: %w", r.ID, ErrClosed)
	}
	if s.db == nil {
		s.metrics.full.Inc()
		return fmt.Errorf("spool: record %s not stored: the spool's disk was full at start and has no room yet: %w", r.ID, ErrFull)
	}
	// Reserve the space first, so that concurrent Begins cannot together
	// overshoot the limit.
	size := int64(len(data))
	if n := s.bytes.Add(size); n > s.max {
		s.bytes.Add(-size)
		s.metrics.full.Inc()
		return fmt.Errorf("spool: record %s (%d bytes) refused, %d of %d bytes in use: %w",
			r.ID, size, n-size, s.max, ErrFull)
	}
	// Through the committer, not a transaction of our own: Badger syncs
	// its write-ahead log once per transaction, even when it writes
	// concurrent transactions together, so only one transaction for many
	// Begins shares the cost of the sync.
	req := &writeReq{begin: true, data: data, rec: audit.Record{ID: r.ID}, done: make(chan error, 1)}
	s.writeCh <- req
	if err := <-req.done; err != nil {
		s.bytes.Add(-size)
		return err
	}
	return nil
}

// Finish seals r (the next seq, linked to the previous sealed record; the
// spool's AgentID if r has none) and queues it for shipping, replacing its
// pending copy in the same transaction. r need not have been begun: a
// request refused before it went upstream is recorded with Finish alone.
// Finish is never refused for the spool's size limit, and a cancelled ctx
// does not abandon it: the exchange a cancelled request context ends is
// exactly one that must be recorded. Storage errors, Close and a disk
// with less than half the reserve free (an error wrapping ErrFull; a
// begun record's pending copy stays, sealed incomplete at the next start)
// make it fail; r is left unchanged then.
func (s *Spool) Finish(ctx context.Context, r *audit.Record) error {
	if r.ID == "" {
		return errors.New("spool: record has no ID; set it with audit.NewID")
	}
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return fmt.Errorf("spool: record %s not sealed: %w", r.ID, ErrClosed)
	}
	if s.db == nil {
		return fmt.Errorf("spool: record %s not sealed: the spool's disk was full at start and has no room yet: %w", r.ID, ErrFull)
	}
	req := &writeReq{rec: *r, done: make(chan error, 1)}
	// The committer drains writeCh until Close, which waits for us.
	s.writeCh <- req
	if err := <-req.done; err != nil {
		return err
	}
	*r = req.rec
	return nil
}

// commitLoop is the committer: it takes every Begin and Finish call queued
// while the previous group was being written and commits them as the next
// group, so that seqs are assigned in one order and a burst costs one sync.
func (s *Spool) commitLoop() {
	defer close(s.committerDone)
	group := make([]*writeReq, 0, maxGroupRecords)
	for req := range s.writeCh {
		group = append(group[:0], req)
	gather:
		for len(group) < maxGroupRecords {
			select {
			case more, ok := <-s.writeCh:
				if !ok {
					break gather
				}
				group = append(group, more)
			default:
				break gather
			}
		}
		s.commitGroup(group)
	}
}

// commitGroup seals the Finish requests of reqs in order and commits them
// with the Begin requests, in transactions of at most maxGroupBytes,
// answering each request.
func (s *Spool) commitGroup(reqs []*writeReq) {
	next := s.head
	// One look at the disk for the group; each write accepted takes its
	// share of what is free. A record may be written twice (log and value
	// log), so it counts twice.
	avail, err := room(s.cfg.Dir)
	if err != nil {
		s.log.Warn("spool cannot tell its free disk space; writing all the same", "err", err)
		avail = math.MaxInt64 / 2
	}
	var chunk []*writeReq
	chunkBytes := 0
	flush := func() {
		if len(chunk) == 0 {
			return
		}
		if err := s.commitChunk(chunk, next); err != nil {
			for _, req := range chunk {
				req.done <- err
			}
			// Later records link to the last committed one instead.
			next = s.head
		}
		chunk, chunkBytes = chunk[:0], 0
	}
	for _, req := range reqs {
		if !req.begin {
			if err := s.seal(req, next); err != nil {
				req.done <- err
				continue
			}
		}
		// Finish may go deeper into the reserve than Begin: it ends an
		// exchange already under way, and replaces its pending copy.
		need, keep, what := 2*int64(len(req.data)), s.reserve, "record "+req.rec.ID
		if !req.begin {
			keep /= 2
		}
		if avail-need < keep {
			if !req.begin {
				s.pendMu.Lock()
				_, begun := s.pending[req.rec.ID]
				if begun {
					s.orphans[req.rec.ID] = true
				}
				s.pendMu.Unlock()
				s.log.Error("record not sealed: the spool's disk is full; its pending copy, if any, is sealed incomplete once there is room",
					"id", req.rec.ID, "pending_copy", begun)
			}
			req.done <- s.spaceError(what, avail, need, keep)
			continue
		}
		avail -= need
		if !req.begin {
			next = chainHead{Seq: req.rec.Seq, Hash: req.rec.Hash}
		}
		chunk = append(chunk, req)
		chunkBytes += len(req.data)
		if chunkBytes >= maxGroupBytes {
			flush()
		}
	}
	flush()
}

// seal links req's record after prev and sets req.data to its encoding.
func (s *Spool) seal(req *writeReq, prev chainHead) error {
	r := &req.rec
	if r.AgentID == "" {
		r.AgentID = s.agentID
	}
	if err := r.Seal(prev.Seq+1, prev.Hash); err != nil {
		return fmt.Errorf("spool: sealing record %s: %w", r.ID, err)
	}
	data, err := r.Encode()
	if err != nil {
		return fmt.Errorf("spool: sealing record %s: %w", r.ID, err)
	}
	req.data = data
	return nil
}

// commitChunk writes pending records, writes sealed records and deletes
// their pending copies, and moves the chain head to head, all in one
// transaction. The in-memory state follows only a successful commit.
func (s *Spool) commitChunk(chunk []*writeReq, head chainHead) error {
	// Sizes of the pending copies that sealing replaces; -1: none.
	pendSizes := make([]int, len(chunk))
	s.pendMu.Lock()
	for i, req := range chunk {
		pendSizes[i] = -1
		if n, ok := s.pending[req.rec.ID]; ok && !req.begin {
			pendSizes[i] = n
		}
	}
	s.pendMu.Unlock()

	if err := s.writeChunk(chunk, pendSizes, head); err != nil {
		s.metrics.writeErrors.Inc()
		if isNoSpace(err) {
			err = fmt.Errorf("%w: %w", ErrFull, err)
		}
		return fmt.Errorf("spool: committing %d records (first %s) to %s (is the disk full or failing?): %w",
			len(chunk), chunk[0].rec.ID, s.db.Opts().Dir, err)
	}

	var delta int64 // Begin reserved its own bytes already
	s.pendMu.Lock()
	for i, req := range chunk {
		id := req.rec.ID
		switch {
		case req.begin:
			if old, ok := s.pending[id]; ok {
				delta -= int64(old) // begun twice: the new value replaced the old
			}
			s.pending[id] = len(req.data)
		case pendSizes[i] >= 0:
			delta += int64(len(req.data) - pendSizes[i])
			delete(s.pending, id)
		default:
			delta += int64(len(req.data))
		}
	}
	s.pendMu.Unlock()
	s.bytes.Add(delta)
	if head != s.head {
		s.head = head
		s.sealed.Store(head.Seq)
		defer s.notify()
	}
	for _, req := range chunk {
		req.done <- nil
	}
	return nil
}

func (s *Spool) writeChunk(chunk []*writeReq, pendSizes []int, head chainHead) error {
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	for i, req := range chunk {
		if req.begin {
			if err := txn.Set(pendingKey(req.rec.ID), req.data); err != nil {
				return err
			}
			continue
		}
		if err := txn.Set(queueKey(req.rec.Seq), req.data); err != nil {
			return err
		}
		if pendSizes[i] >= 0 {
			if err := txn.Delete(pendingKey(req.rec.ID)); err != nil {
				return err
			}
		}
	}
	if head != s.head {
		headVal, err := json.Marshal(head)
		if err != nil {
			return fmt.Errorf("encoding chain head: %w", err)
		}
		if err := txn.Set(headKey, headVal); err != nil {
			return err
		}
	}
	return txn.Commit()
}

// orphanError is the Error of a record sealed from its pending copy after
// a full disk refused its Finish.
const orphanError = "the spool's disk was full when the exchange finished; what it returned is not on record"

// sealOrphans seals the pending copies of records whose Finish a full
// disk refused, marked incomplete, so that they ship without waiting for
// a restart. Records still refused stay orphans for the next call.
func (s *Spool) sealOrphans() {
	s.pendMu.Lock()
	ids := make([]string, 0, len(s.orphans))
	for id := range s.orphans {
		ids = append(ids, id)
	}
	s.pendMu.Unlock()
	if len(ids) == 0 {
		return
	}
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed || s.db == nil {
		return
	}
	for _, id := range ids {
		var data []byte
		err := s.db.View(func(txn *badger.Txn) error {
			item, err := txn.Get(pendingKey(id))
			if err != nil {
				return err
			}
			data, err = item.ValueCopy(nil)
			return err
		})
		if errors.Is(err, badger.ErrKeyNotFound) {
			s.forgetOrphan(id) // finished after all
			continue
		}
		if err != nil {
			s.log.Warn("spool cannot read a pending record to seal it", "id", id, "err", err)
			continue
		}
		rec := recovered(id, data)
		if rec.Error == recoveredError {
			rec.Error = orphanError
		}
		req := &writeReq{rec: rec, done: make(chan error, 1)}
		s.writeCh <- req
		if err := <-req.done; err != nil {
			return // still no room; the next call tries again
		}
		s.forgetOrphan(id)
		s.log.Info("sealed a record whose end a full disk kept off the record, marked incomplete", "id", id)
	}
}

func (s *Spool) forgetOrphan(id string) {
	s.pendMu.Lock()
	delete(s.orphans, id)
	s.pendMu.Unlock()
}
