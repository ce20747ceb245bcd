package store

import (
	"bytes"
	"fmt"
	"sort"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/oklog/ulid/v2"
)

// idStream yields, newest first, the IDs of one bucket's postings of one
// index value. Postings are walked in descending order of their newest ID;
// as those of concurrent commits overlap in time, several may be open at
// once, and an ID is yielded only when no posting not yet opened can hold
// a newer one.
type idStream struct {
	it     *badger.Iterator
	prefix []byte
	lo     ulid.ULID // inclusive
	open   []cursor
	done   bool // no posting left that may hold an ID at or above lo
}

// cursor is an open posting: IDs ascending, n of them not yet passed.
type cursor struct {
	ids []byte
	n   int
}

func (c *cursor) top() []byte { return c.ids[(c.n-1)*rawLen : c.n*rawLen] }

// dropAbove passes the IDs above bound.
func (c *cursor) dropAbove(bound []byte) {
	c.n = sort.Search(c.n, func(i int) bool {
		return bytes.Compare(c.ids[i*rawLen:(i+1)*rawLen], bound) > 0
	})
}

func newIDStream(txn *badger.Txn, prefix []byte, lo ulid.ULID) *idStream {
	opts := badger.DefaultIteratorOptions
	opts.Reverse, opts.PrefetchValues, opts.Prefix = true, false, prefix
	st := &idStream{it: txn.NewIterator(opts), prefix: prefix, lo: lo}
	st.it.Seek(append(append([]byte(nil), prefix...), bytes.Repeat([]byte{0xff}, 2*rawLen+1)...))
	return st
}

func (st *idStream) Close() { st.it.Close() }

// next returns the newest ID at or below bound (and at or above lo),
// leaving it in place. Bounds must not increase from call to call.
func (st *idStream) next(bound ulid.ULID) (ulid.ULID, bool, error) {
	for {
		open := st.open[:0]
		for _, c := range st.open {
			c.dropAbove(bound[:])
			if c.n > 0 {
				open = append(open, c)
			}
		}
		st.open = open
		var top []byte
		for i := range st.open {
			if t := st.open[i].top(); top == nil || bytes.Compare(t, top) > 0 {
				top = t
			}
		}
		more, err := st.openNext(bound, top)
		if err != nil {
			return ulid.ULID{}, false, err
		}
		if more {
			continue
		}
		if top == nil || bytes.Compare(top, st.lo[:]) < 0 {
			return ulid.ULID{}, false, nil
		}
		var id ulid.ULID
		copy(id[:], top)
		return id, true, nil
	}
}

// openNext opens the next posting if it may hold an ID newer than top
// (nil: none open) and not above bound. It says whether it moved on.
func (st *idStream) openNext(bound ulid.ULID, top []byte) (bool, error) {
	for !st.done {
		if !st.it.ValidForPrefix(st.prefix) {
			st.done = true
			return false, nil
		}
		item := st.it.Item()
		key := item.Key()
		if len(key) != len(st.prefix)+2*rawLen {
			st.it.Next() // a longer value sharing the prefix
			continue
		}
		hi, lo := key[len(st.prefix):len(st.prefix)+rawLen], key[len(st.prefix)+rawLen:]
		if bytes.Compare(hi, st.lo[:]) < 0 {
			st.done = true // every posting left is older than the range
			return false, nil
		}
		if top != nil && bytes.Compare(hi, top) < 0 {
			return false, nil // top is newer than anything left
		}
		if bytes.Compare(lo, bound[:]) > 0 {
			st.it.Next() // wholly newer than any bound to come
			return true, nil
		}
		ids, err := item.ValueCopy(nil)
		if err != nil {
			return false, err
		}
		if len(ids)%rawLen != 0 {
			return false, fmt.Errorf("index posting %q is %d bytes, not a multiple of %d (run Verify)", key, len(ids), rawLen)
		}
		st.open = append(st.open, cursor{ids: ids, n: len(ids) / rawLen})
		st.it.Next()
		return true, nil
	}
	return false, nil
}

// intersect returns the newest ID at or below bound that every stream
// holds, leapfrogging: each stream skips to at or below the candidate of
// the one before, until all of them agree.
func intersect(streams []*idStream, bound ulid.ULID) (ulid.ULID, bool, error) {
	target, agree := bound, 0
	for i := 0; agree < len(streams); i = (i + 1) % len(streams) {
		id, ok, err := streams[i].next(target)
		if err != nil || !ok {
			return ulid.ULID{}, false, err
		}
		if id == target {
			agree++
		} else {
			target, agree = id, 1
		}
	}
	return target, true, nil
}

// below returns the ID just below id, and false for the zero ID.
func below(id ulid.ULID) (ulid.ULID, bool) {
	for i := len(id) - 1; i >= 0; i-- {
		if id[i] > 0 {
			id[i]--
			return id, true
		}
		id[i] = 0xff
	}
	return id, false
}
