package store

import (
	"encoding/binary"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// The Merkle log is stored one segment per commit (see keys.go): Badger's
// cost is mostly per key, and a key per leaf and per node was two keys a
// record. A node (level, index) spans leaves [index<<level, (index+1)<<level)
// and is created when its last leaf is appended, so it lives in the
// segment holding that leaf: a reverse seek to the greatest segment key
// at or before that leaf finds it.

const (
	// leafEntryLen is one leaf in a segment: hash, then record ID.
	leafEntryLen = 32 + idLen
	segHeaderLen = 8 // leaf count
)

var prefixTree = []byte("m/t/")

func segmentKey(first uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), prefixTree...), first)
}

// levelNodes is how many nodes of level appending leaves [a, b) creates:
// one for each multiple of 2^level in (a, b]. It never grows with level.
func levelNodes(a, b uint64, level uint) uint64 {
	return b>>level - a>>level
}

// segment is one commit's part of the log, as stored.
type segment struct {
	first, n uint64
	leaves   []byte // n entries of leafEntryLen
	nodes    []byte // interior nodes, 32 bytes each, by level, then index
}

// parseSegment checks a segment's key and value against each other; it
// keeps slices of val.
func parseSegment(key, val []byte) (segment, error) {
	if len(key) != len(prefixTree)+8 {
		return segment{}, fmt.Errorf("malformed log key %q", key)
	}
	if len(val) < segHeaderLen {
		return segment{}, fmt.Errorf("log segment of %d bytes", len(val))
	}
	s := segment{first: binary.BigEndian.Uint64(key[len(prefixTree):]), n: binary.BigEndian.Uint64(val)}
	var nodes uint64
	for l := uint(1); l < 64 && levelNodes(s.first, s.first+s.n, l) > 0; l++ {
		nodes += levelNodes(s.first, s.first+s.n, l)
	}
	if s.n == 0 || s.first+s.n < s.first || s.n > uint64(len(val))/leafEntryLen ||
		uint64(len(val)) != segHeaderLen+s.n*leafEntryLen+nodes*32 {
		return segment{}, fmt.Errorf("log segment at leaf %d: %d leaves do not fit its %d bytes", s.first, s.n, len(val))
	}
	s.leaves = val[segHeaderLen : segHeaderLen+s.n*leafEntryLen]
	s.nodes = val[segHeaderLen+s.n*leafEntryLen:]
	return s, nil
}

func (s *segment) end() uint64 { return s.first + s.n }

// leaf returns the hash and ID of a leaf of the segment.
func (s *segment) leaf(index uint64) (hash []byte, id string) {
	e := s.leaves[(index-s.first)*leafEntryLen:][:leafEntryLen]
	return e[:32], string(e[32:])
}

// node returns the hash of a node the segment holds, or nil.
func (s *segment) node(level uint, index uint64) []byte {
	if level == 0 {
		if index < s.first || index >= s.end() {
			return nil
		}
		h, _ := s.leaf(index)
		return h
	}
	var off uint64
	for l := uint(1); l < level; l++ {
		off += levelNodes(s.first, s.end(), l)
	}
	lo, hi := s.first>>level, s.end()>>level
	if index < lo || index >= hi {
		return nil
	}
	off += index - lo
	return s.nodes[off*32 : off*32+32]
}

// segmentWriter gathers the leaves and nodes one commit appends.
type segmentWriter struct {
	first  uint64
	leaves []byte
	levels [][]byte // by level; level 0 unused
}

func (w *segmentWriter) addLeaf(hash []byte, id string) {
	w.leaves = append(append(w.leaves, hash...), id...)
}

// addNode keeps an interior node: nodes of a level arrive in index order.
func (w *segmentWriter) addNode(level uint, hash []byte) {
	for uint(len(w.levels)) <= level {
		w.levels = append(w.levels, nil)
	}
	w.levels[level] = append(w.levels[level], hash...)
}

// value returns the segment's value for leaves [first, end), checking that
// every node those leaves create was visited.
func (w *segmentWriter) value(end uint64) ([]byte, error) {
	n := end - w.first
	if uint64(len(w.leaves)) != n*leafEntryLen {
		return nil, fmt.Errorf("store: log segment at %d: %d bytes of leaves for %d leaves", w.first, len(w.leaves), n)
	}
	v := binary.BigEndian.AppendUint64(make([]byte, 0, segHeaderLen+len(w.leaves)+2*int(n)*32), n)
	v = append(v, w.leaves...)
	for l := uint(1); l < 64 && levelNodes(w.first, end, l) > 0; l++ {
		var got []byte
		if l < uint(len(w.levels)) {
			got = w.levels[l]
		}
		if uint64(len(got)) != 32*levelNodes(w.first, end, l) {
			return nil, fmt.Errorf("store: log segment at %d: %d bytes of level %d nodes", w.first, len(got), l)
		}
		v = append(v, got...)
	}
	return v, nil
}

// treeReader finds stored nodes by reverse seeks over the segments.
type treeReader struct {
	it *badger.Iterator
}

func newTreeReader(txn *badger.Txn) *treeReader {
	return &treeReader{it: txn.NewIterator(badger.IteratorOptions{Prefix: prefixTree, Reverse: true})}
}

func (r *treeReader) Close() { r.it.Close() }

var errNoSegment = errors.New("no log segment holds it")

// with calls fn with the segment holding leaf, valid only during fn.
func (r *treeReader) with(leaf uint64, fn func(*segment) error) error {
	r.it.Seek(segmentKey(leaf))
	if !r.it.ValidForPrefix(prefixTree) {
		return errNoSegment
	}
	item := r.it.Item()
	return item.Value(func(v []byte) error {
		s, err := parseSegment(item.Key(), v)
		if err != nil {
			return err
		}
		if leaf >= s.end() {
			return errNoSegment
		}
		return fn(&s)
	})
}

// node returns a copy of the stored hash of node (level, index).
func (r *treeReader) node(level uint, index uint64) ([]byte, error) {
	var out []byte
	err := r.with((index+1)<<level-1, func(s *segment) error {
		h := s.node(level, index)
		if h == nil {
			return errNoSegment
		}
		out = append([]byte(nil), h...)
		return nil
	})
	return out, err
}

// leaf returns the ID the log holds for a leaf.
func (r *treeReader) leaf(index uint64) (string, error) {
	var id string
	err := r.with(index, func(s *segment) error {
		_, id = s.leaf(index)
		return nil
	})
	return id, err
}
