package store

import (
	"bytes"
	"testing"
	"time"

	"github.com/promptrail/promptrail/audit"
)

// Segments of uneven sizes put a proof's nodes in many segments, at their
// edges too; every record's proof must verify, after each commit.
func TestProofsAcrossSegments(t *testing.T) {
	s := openTestStore(t, Config{})
	c := newChain(t, "agent-a", time.Now().Add(-time.Hour))
	var all []audit.Record
	for _, n := range []int{1, 1, 2, 3, 5, 8, 1, 16, 7, 31, 2, 33} {
		b := c.take(n, nil)
		ingest(t, s, b)
		all = append(all, b...)
		for _, r := range all {
			got, p, err := s.Get(t.Context(), r.ID)
			if err != nil {
				t.Fatalf("Get %s: %v", r.ID, err)
			}
			checkProof(t, s.VerifierKey(), DefaultOrigin, got, p)
		}
	}
	if rep := verifyStore(t, s); !rep.OK || rep.Leaves != len(all) {
		t.Fatalf("Verify: %+v\n%s", rep, kinds(rep))
	}
}

// A changed interior node would only show in proofs; Verify must find it
// and name a record whose proofs it spoils.
func TestVerifyFindsChangedNode(t *testing.T) {
	s := openTestStore(t, Config{})
	c := newChain(t, "agent-a", time.Now().Add(-time.Hour))
	recs := c.take(4, nil)
	ingest(t, s, recs)
	ingest(t, s, c.take(3, nil))
	key := segmentKey(0)
	val := rawGet(t, s, key)
	seg, err := parseSegment(key, val)
	if err != nil {
		t.Fatal(err)
	}
	n := seg.node(2, 0) // root of the first four leaves
	if n == nil {
		t.Fatal("segment 0 lacks node 2/0")
	}
	bad := bytes.Clone(val)
	bad[len(val)-32] ^= 1 // node 2/0 is the segment's last
	rawSet(t, s, key, bad)
	rep := verifyStore(t, s)
	if rep.OK || len(problemsFor(rep, recs[3].ID)) == 0 {
		t.Fatalf("Verify missed a changed node:\n%s", kinds(rep))
	}
	// The proof of leaf 0 in the tree of 7 uses no node under 2/0 but
	// leaf 1 and node 1/1, so it still verifies.
	got, p, err := s.Get(t.Context(), recs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	checkProof(t, s.VerifierKey(), DefaultOrigin, got, p)
}

func TestSegmentNodeLayout(t *testing.T) {
	// Leaves [5, 13): level 1 creates nodes 2..5, level 2 nodes 1..2,
	// level 3 node 0 (ending at leaf 7 and 11, 7 respectively).
	w := segmentWriter{first: 5}
	for range 8 {
		w.addLeaf(make([]byte, 32), "01ARZ3NDEKTSV4RRFFQ69G5FAV")
	}
	for l, count := range []int{0, 4, 2, 1} {
		for i := range count {
			w.addNode(uint(l), bytes.Repeat([]byte{byte(10*l + i)}, 32))
		}
	}
	v, err := w.value(13)
	if err != nil {
		t.Fatal(err)
	}
	seg, err := parseSegment(segmentKey(5), v)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		level uint
		index uint64
		want  byte
	}{{1, 2, 10}, {1, 5, 13}, {2, 1, 20}, {2, 2, 21}, {3, 0, 30}} {
		if h := seg.node(tc.level, tc.index); h == nil || h[0] != tc.want {
			t.Errorf("node %d/%d = %v, want %d", tc.level, tc.index, h, tc.want)
		}
	}
	if seg.node(1, 6) != nil || seg.node(2, 3) != nil || seg.node(1, 1) != nil {
		t.Error("segment returned a node it does not hold")
	}
	if _, err := parseSegment(segmentKey(5), v[:len(v)-1]); err == nil {
		t.Error("parseSegment accepted a truncated segment")
	}
	if _, err := w.value(14); err == nil {
		t.Error("value accepted a leaf count it was not given")
	}
}
