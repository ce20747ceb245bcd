package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/oklog/ulid/v2"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/promptrail/promptrail/audit"
)

// maxProblems bounds Report.Problems; the rest are only counted, so a
// badly damaged store does not exhaust memory.
const maxProblems = 10000

// Report is the result of Verify.
type Report struct {
	// OK says that no problem was found.
	OK bool `json:"ok"`
	// Records counts the records checked against their leaves; Leaves the
	// log's leaves walked; Expired the leaves whose records retention
	// dropped.
	Records int `json:"records"`
	Leaves  int `json:"leaves"`
	Expired int `json:"expired"`
	// TreeSize and Root (hex) are the stored tree's.
	TreeSize   uint64            `json:"tree_size"`
	Root       string            `json:"root"`
	Checkpoint *CheckpointReport `json:"checkpoint,omitempty"`
	Problems   []Problem         `json:"problems,omitempty"`
	// MoreProblems counts problems beyond those listed.
	MoreProblems int `json:"more_problems,omitempty"`
}

// CheckpointReport describes the latest signed checkpoint Verify checked.
type CheckpointReport struct {
	Size uint64 `json:"size"`
	Root string `json:"root"` // hex
	Note string `json:"note"`
}

// Problem is one thing Verify found wrong. Kind is one of the chain issue
// kinds (gap, fork, restart, conflict: stored by Ingest) or missing,
// leaf_mismatch, undecodable, id_mismatch, bad_hash, not_in_chain,
// chain_mismatch, chain_gap, unlogged, leaf_order, node_mismatch,
// root_mismatch, checkpoint.
type Problem struct {
	Kind   string `json:"kind"`
	ID     string `json:"id,omitempty"`
	Agent  string `json:"agent,omitempty"`
	Seq    uint64 `json:"seq,omitempty"`
	Detail string `json:"detail"`
}

// verification is one Verify in progress. Workers share the read-only
// transaction: its Get path mutates nothing.
type verification struct {
	s       *Store
	txn     *badger.Txn
	cut     uint64
	covered map[string]bool // agent\x00seq and agent\x00seq\x00id with a stored issue
	mu      sync.Mutex
	rep     Report
	records atomic.Int64
	expired atomic.Int64
	logged  idSums // the IDs of the records the leaves name, by bucket
}

type leafJob struct {
	index uint64
	hash  []byte
	id    string
}

// Verify checks the whole store against its Merkle log, its checkpoint
// and the agents' chains, streaming through it. Every problem names the
// record it concerns.
func (s *Store) Verify(ctx context.Context) (Report, error) {
	v := &verification{s: s, covered: map[string]bool{}, logged: idSums{}}
	err := s.db.View(func(txn *badger.Txn) error {
		v.txn = txn
		var err error
		if v.cut, err = s.retentionCut(txn); err != nil {
			return err
		}
		steps := []func(context.Context) error{v.issues, v.leaves, v.chains, v.unlogged}
		for _, step := range steps {
			if err := step(ctx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return Report{}, fmt.Errorf("store: verify: %w", err)
	}
	v.rep.Records, v.rep.Expired = int(v.records.Load()), int(v.expired.Load())
	v.rep.OK = len(v.rep.Problems) == 0 && v.rep.MoreProblems == 0
	return v.rep, nil
}

func (v *verification) problem(p Problem) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.rep.Problems) >= maxProblems {
		v.rep.MoreProblems++
		return
	}
	v.rep.Problems = append(v.rep.Problems, p)
}

func seqTag(agent string, seq uint64) string { return fmt.Sprintf("%s\x00%d", agent, seq) }

// issues reports the chain issues Ingest stored, and notes where they
// are so the chain walks do not report the same break twice.
func (v *verification) issues(ctx context.Context) error {
	it := v.txn.NewIterator(badger.IteratorOptions{Prefix: prefixIssues, PrefetchValues: true, PrefetchSize: 100})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		var is ChainIssue
		if err := it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &is) }); err != nil {
			v.problem(Problem{Kind: "undecodable", Detail: fmt.Sprintf("chain issue %q: %v", it.Item().Key(), err)})
			continue
		}
		v.covered[seqTag(is.Agent, is.Seq)] = true
		v.covered[seqTag(is.Agent, is.Seq)+"\x00"+is.ID] = true
		v.problem(Problem{Kind: is.Kind, ID: is.ID, Agent: is.Agent, Seq: is.Seq, Detail: is.Detail})
	}
	return ctx.Err()
}

// leaves walks the log in order, recomputing its root, and hands each
// leaf's record to workers to check.
func (v *verification) leaves(ctx context.Context) error {
	rng, err := loadRange(v.txn, v.s.rf)
	if err != nil {
		return err
	}
	storedRoot, err := rootOf(rng)
	if err != nil {
		return err
	}
	v.rep.TreeSize, v.rep.Root = rng.End(), hex.EncodeToString(storedRoot)
	cp, err := v.checkpoint()
	if err != nil {
		return err
	}
	jobs := make(chan []leafJob, 4)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			sum := idSums{}
			for batch := range jobs {
				for _, j := range batch {
					v.leaf(j, sum)
				}
			}
			v.mu.Lock()
			v.logged.merge(sum)
			v.mu.Unlock()
		})
	}
	walked := v.s.rf.NewEmptyRange(0)
	err = v.walkLeaves(ctx, walked, cp, jobs)
	close(jobs)
	wg.Wait()
	if err != nil {
		return err
	}
	v.rep.Leaves = int(walked.End())
	root, err := rootOf(walked)
	if err != nil {
		return err
	}
	if walked.End() != rng.End() || !bytes.Equal(root, storedRoot) {
		v.problem(Problem{Kind: "root_mismatch", Detail: fmt.Sprintf(
			"the %d leaves hash to root %x, the stored tree has %d leaves and root %x",
			walked.End(), root, rng.End(), storedRoot)})
	}
	if cp != nil && cp.Size > walked.End() {
		v.problem(Problem{Kind: "checkpoint", Detail: fmt.Sprintf(
			"the checkpoint covers %d leaves, the log has only %d", cp.Size, walked.End())})
	}
	return nil
}

// checkpoint reads and checks the signature of the latest checkpoint.
func (v *verification) checkpoint() (*log.Checkpoint, error) {
	it, err := v.txn.Get(keyCP)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading checkpoint: %w", err)
	}
	raw, err := it.ValueCopy(nil)
	if err != nil {
		return nil, fmt.Errorf("reading checkpoint: %w", err)
	}
	cp, _, _, err := log.ParseCheckpoint(raw, v.s.cfg.Origin, v.s.verifier)
	if err != nil {
		v.problem(Problem{Kind: "checkpoint", Detail: fmt.Sprintf("the stored checkpoint does not verify: %v", err)})
		return nil, nil
	}
	v.rep.Checkpoint = &CheckpointReport{Size: cp.Size, Root: hex.EncodeToString(cp.Hash), Note: string(raw)}
	return cp, nil
}

func (v *verification) walkLeaves(ctx context.Context, walked *compact.Range, cp *log.Checkpoint, jobs chan<- []leafJob) error {
	it := v.txn.NewIterator(badger.IteratorOptions{Prefix: prefixTree, PrefetchValues: true, PrefetchSize: 16})
	defer it.Close()
	w := &leafWalk{v: v, walked: walked, cp: cp, jobs: jobs, batch: make([]leafJob, 0, 256)}
	if err := w.checkCP(); err != nil {
		return err
	}
	for it.Rewind(); it.Valid(); it.Next() {
		key := it.Item().KeyCopy(nil)
		val, err := it.Item().ValueCopy(nil)
		if err != nil {
			return err
		}
		seg, err := parseSegment(key, val)
		if err == nil && seg.first != walked.End() {
			err = fmt.Errorf("it starts at leaf %d", seg.first)
		}
		if err != nil {
			id := ""
			if len(val) >= segHeaderLen+leafEntryLen {
				id = string(val[segHeaderLen+32 : segHeaderLen+leafEntryLen])
			}
			v.problem(Problem{Kind: "leaf_order", ID: id, Detail: fmt.Sprintf(
				"log segment %x is malformed or out of place (expected leaf %d): %v", key[len(prefixTree):], walked.End(), err)})
			return nil // the root cannot be recomputed past this point
		}
		if err := w.segment(ctx, &seg); err != nil {
			return err
		}
	}
	jobs <- w.batch
	return nil
}

// leafWalk is walkLeaves' state: the tree so far and the leaves not yet
// handed to the workers.
type leafWalk struct {
	v      *verification
	walked *compact.Range
	cp     *log.Checkpoint
	jobs   chan<- []leafJob
	batch  []leafJob
}

// checkCP compares the root with the checkpoint's when the walk has as
// many leaves as the checkpoint.
func (w *leafWalk) checkCP() error {
	if w.cp == nil || w.walked.End() != w.cp.Size {
		return nil
	}
	root, err := rootOf(w.walked)
	if err != nil {
		return err
	}
	if !bytes.Equal(root, w.cp.Hash) {
		w.v.problem(Problem{Kind: "checkpoint", Detail: fmt.Sprintf(
			"the first %d leaves hash to %x, the signed checkpoint says %x", w.cp.Size, root, w.cp.Hash)})
	}
	return nil
}

// segment appends a segment's leaves, checking the interior nodes it
// stores (those proofs are read from) against the ones they hash to.
func (w *leafWalk) segment(ctx context.Context, seg *segment) error {
	for idx := seg.first; idx < seg.end(); idx++ {
		hash, id := seg.leaf(idx)
		visit := func(n compact.NodeID, h []byte) {
			if n.Level > 0 && !bytes.Equal(seg.node(n.Level, n.Index), h) {
				w.v.problem(Problem{Kind: "node_mismatch", ID: id, Detail: fmt.Sprintf(
					"the stored log node %d/%d, which proofs of leaves up to %d use, does not match them", n.Level, n.Index, idx)})
			}
		}
		if err := w.walked.Append(hash, visit); err != nil {
			return err
		}
		if err := w.checkCP(); err != nil {
			return err
		}
		if w.batch = append(w.batch, leafJob{index: idx, hash: hash, id: id}); len(w.batch) == cap(w.batch) {
			if err := ctx.Err(); err != nil {
				return err
			}
			w.jobs <- w.batch
			w.batch = make([]leafJob, 0, 256)
		}
	}
	return nil
}

// leaf checks the record of one leaf against it and against its chain,
// and adds the record's ID to sum.
func (v *verification) leaf(j leafJob, sum idSums) {
	u, err := ulid.ParseStrict(j.id)
	if err != nil {
		v.problem(Problem{Kind: "leaf_mismatch", ID: j.id, Detail: fmt.Sprintf("leaf %d names an invalid record ID", j.index)})
		return
	}
	bkt := v.s.bucketOfTime(u.Time())
	item, err := v.txn.Get(recordKey(bkt, j.id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		if bkt < v.cut {
			v.expired.Add(1)
			return
		}
		v.problem(Problem{Kind: "missing", ID: j.id, Detail: fmt.Sprintf("leaf %d's record is not stored", j.index)})
		return
	}
	var raw []byte
	if err == nil {
		raw, err = item.ValueCopy(nil)
	}
	if err != nil {
		v.problem(Problem{Kind: "missing", ID: j.id, Detail: fmt.Sprintf("reading leaf %d's record: %v", j.index, err)})
		return
	}
	v.records.Add(1)
	sum.add(bkt, j.id)
	if len(raw) < leafIdxLen || binary.BigEndian.Uint64(raw) != j.index {
		v.problem(Problem{Kind: "leaf_mismatch", ID: j.id, Detail: fmt.Sprintf(
			"the record stored under this id does not name leaf %d as its own", j.index)})
		return
	}
	raw = raw[leafIdxLen:]
	leafOK := bytes.Equal(rfc6962.DefaultHasher.HashLeaf(raw), j.hash)
	if !leafOK {
		v.problem(Problem{Kind: "leaf_mismatch", ID: j.id, Detail: fmt.Sprintf(
			"the stored record does not hash to leaf %d: it was changed after it was logged", j.index)})
	}
	var rec audit.Record
	if err := json.Unmarshal(raw, &rec); err != nil {
		v.problem(Problem{Kind: "undecodable", ID: j.id, Detail: err.Error()})
		return
	}
	if rec.ID != j.id {
		v.problem(Problem{Kind: "id_mismatch", ID: j.id, Agent: rec.AgentID, Seq: rec.Seq, Detail: fmt.Sprintf(
			"the record stored under %s has id %s", j.id, rec.ID)})
	}
	// Bytes that match their leaf are those Ingest checked; only changed
	// bytes need the full, slower check.
	if (leafOK && !hashMatches(raw, rec.Hash)) || (!leafOK && rec.CheckHash() != nil) {
		v.problem(Problem{Kind: "bad_hash", ID: j.id, Agent: rec.AgentID, Seq: rec.Seq,
			Detail: "the record's content does not match its hash"})
	}
	v.chainLink(&rec, j.id)
}

// chainLink checks a record against its chain's s/ entries.
func (v *verification) chainLink(rec *audit.Record, id string) {
	if v.covered[seqTag(rec.AgentID, rec.Seq)+"\x00"+id] {
		return
	}
	p := Problem{ID: id, Agent: rec.AgentID, Seq: rec.Seq}
	sid, shash, err := v.seqEntry(rec.AgentID, rec.Seq)
	switch {
	case err != nil || sid != id:
		p.Kind, p.Detail = "not_in_chain", fmt.Sprintf("the chain's record %d is %q, not this record", rec.Seq, sid)
	case shash != rec.Hash:
		p.Kind, p.Detail = "chain_mismatch", fmt.Sprintf("the chain holds hash %.12s… for it, the record has %.12s…", shash, rec.Hash)
	case rec.Seq > 1 && !v.covered[seqTag(rec.AgentID, rec.Seq)]:
		pid, phash, err := v.seqEntry(rec.AgentID, rec.Seq-1)
		if err == nil && phash != rec.PrevHash {
			p.Kind, p.Detail = "chain_mismatch", fmt.Sprintf("prev_hash %.12s… does not link to record %d (%s, hash %.12s…)", rec.PrevHash, rec.Seq-1, pid, phash)
		}
	}
	if p.Kind != "" {
		v.problem(p)
	}
}

func (v *verification) seqEntry(agent string, seq uint64) (string, string, error) {
	item, err := v.txn.Get(seqKey(agent, seq))
	if err != nil {
		return "", "", err
	}
	var id, hash string
	err = item.Value(func(b []byte) error {
		if len(b) != idLen+32 {
			return fmt.Errorf("chain entry of %d bytes", len(b))
		}
		id, hash = string(b[:idLen]), hex.EncodeToString(b[idLen:])
		return nil
	})
	return id, hash, err
}

// chains checks that every agent's chain entries run 1, 2, 3… without a
// gap Ingest did not already report.
func (v *verification) chains(ctx context.Context) error {
	it := v.txn.NewIterator(badger.IteratorOptions{Prefix: prefixSeqs, PrefetchValues: true, PrefetchSize: 1000})
	defer it.Close()
	var agent string
	var last uint64
	for it.Rewind(); it.Valid(); it.Next() {
		a, seq, ok := parseSeqKey(it.Item().Key())
		if !ok {
			v.problem(Problem{Kind: "chain_gap", Detail: fmt.Sprintf("malformed chain key %q", it.Item().Key())})
			continue
		}
		if a != agent {
			agent, last = a, 0
		}
		if seq != last+1 && !v.covered[seqTag(a, seq)] {
			var id string
			_ = it.Item().Value(func(b []byte) error { id = string(b[:min(idLen, len(b))]); return nil })
			v.problem(Problem{Kind: "chain_gap", ID: id, Agent: a, Seq: seq, Detail: fmt.Sprintf(
				"the chain jumps from record %d to %d", last, seq)})
		}
		last = seq
		if seq%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
	return nil
}

// unlogged finds records that have no leaf. The leaf walk summed the IDs
// of the records it found, by bucket; here the IDs of the stored records
// are summed from their keys alone, and only a bucket whose sums differ
// is read again, record by record, to name the records not in the log.
func (v *verification) unlogged(ctx context.Context) error {
	it := v.txn.NewIterator(badger.IteratorOptions{Prefix: prefixBuckets})
	defer it.Close()
	for it.Seek(prefixBuckets); it.ValidForPrefix(prefixBuckets); {
		bkt, _ := bucketOf(it.Item().Key())
		if err := ctx.Err(); err != nil {
			return err
		}
		rp := bucketTablePrefix(bkt, 'r')
		stored := idSums{}
		for it.Seek(rp); it.ValidForPrefix(rp); it.Next() {
			stored.add(bkt, string(it.Item().Key()[len(rp):]))
		}
		if stored[bkt] != v.logged[bkt] {
			if err := v.unloggedIn(bkt); err != nil {
				return err
			}
		}
		it.Seek(bucketPrefix(bkt + 1))
	}
	return nil
}

// unloggedIn names the records of a bucket that are not the record of
// the leaf they name.
func (v *verification) unloggedIn(bkt uint64) error {
	tr := newTreeReader(v.txn)
	defer tr.Close()
	rp := bucketTablePrefix(bkt, 'r')
	it := v.txn.NewIterator(badger.IteratorOptions{Prefix: rp, PrefetchValues: true, PrefetchSize: 100})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		id := string(it.Item().Key()[len(rp):])
		var idx uint64
		ok := false
		_ = it.Item().Value(func(b []byte) error {
			if len(b) >= leafIdxLen {
				idx, ok = binary.BigEndian.Uint64(b), true
			}
			return nil
		})
		if ok {
			lid, err := tr.leaf(idx)
			ok = err == nil && lid == id
		}
		if !ok {
			v.problem(Problem{Kind: "unlogged", ID: id, Detail: "the record is stored but not in the log"})
		}
	}
	return nil
}

// idSums holds, by bucket, the sum modulo 2^256 of the SHA-256 of a set
// of IDs: equal sets have equal sums, and making two different sets sum
// alike is as hard as it is for sets of SHA-256 hashes.
type idSums map[uint64][4]uint64

func (m idSums) add(bkt uint64, id string) {
	h := sha256.Sum256([]byte(id))
	m[bkt] = add256(m[bkt], [4]uint64{
		binary.BigEndian.Uint64(h[0:]), binary.BigEndian.Uint64(h[8:]),
		binary.BigEndian.Uint64(h[16:]), binary.BigEndian.Uint64(h[24:]),
	})
}

func (m idSums) merge(o idSums) {
	for bkt, s := range o {
		m[bkt] = add256(m[bkt], s)
	}
}

func add256(a, b [4]uint64) [4]uint64 {
	var carry uint64
	for i := 3; i >= 0; i-- {
		a[i], carry = bits.Add64(a[i], b[i], carry)
	}
	return a
}
