package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/oklog/ulid/v2"
	"github.com/transparency-dev/merkle/compact"

	"github.com/promptrail/promptrail/audit"
)

// Group limits. A synced commit costs about the same for one batch as for
// several, so batches that queue while one commits share the next commit.
// The limits keep the shared transaction well inside Badger's cap (15% of
// the memtable, counting record bodies in the value log as pointers); a
// group that still does not fit is retried batch by batch.
const (
	maxGroupRecords = 8000
	maxGroupBytes   = 4 * MaxBatchBytes
)

// call is one Ingest call waiting for its batch to be committed.
type call struct {
	preps []prepared
	size  int // encoded bytes
	start time.Time

	// wake is closed when the call is finished (res, issues, err set) or,
	// with finished false, when it is to lead the next commit.
	wake     chan struct{}
	finished bool
	res      audit.IngestResult
	issues   []ChainIssue
	err      error
}

// submit queues c and returns when it is committed or failed. The first
// call to find no commit running leads: it commits the calls queued so far
// (its own first), then hands the lead to the oldest call still queued.
// So every commit takes all that arrived while the previous one synced,
// and no caller commits for others indefinitely.
func (s *Store) submit(c *call) {
	s.qmu.Lock()
	s.queue = append(s.queue, c)
	if s.committing {
		s.qmu.Unlock()
		<-c.wake
		if c.finished {
			return
		}
	} else {
		s.committing = true
		s.qmu.Unlock()
	}
	s.qmu.Lock()
	calls := s.takeGroup()
	s.qmu.Unlock()
	s.commitCalls(calls)
	for _, o := range calls {
		if o != c {
			o.finished = true
			close(o.wake)
		}
	}
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if len(s.queue) == 0 {
		s.committing = false
		return
	}
	close(s.queue[0].wake)
}

// takeGroup removes the calls of the next commit from the queue: at least
// one, then as many as fit the group limits. The caller holds qmu.
func (s *Store) takeGroup() []*call {
	n, recs, size := 1, len(s.queue[0].preps), s.queue[0].size
	for ; n < len(s.queue); n++ {
		c := s.queue[n]
		if recs+len(c.preps) > maxGroupRecords || size+c.size > maxGroupBytes {
			break
		}
		recs, size = recs+len(c.preps), size+c.size
	}
	calls := slices.Clone(s.queue[:n])
	s.queue = slices.Delete(s.queue, 0, n)
	return calls
}

// commitCalls commits the calls' batches in one transaction. Should that
// fail, each batch is tried alone, so a caller's batch still succeeds or
// fails by itself: a batch too big for a shared transaction fits its own.
func (s *Store) commitCalls(calls []*call) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(calls) > 1 {
		err := s.commitGroup(calls)
		if err == nil {
			return
		}
		s.log.Debug("group commit failed; committing its batches one by one", "batches", len(calls), "err", err)
	}
	for _, c := range calls {
		if err := s.commitGroup([]*call{c}); err != nil {
			c.err = err
		}
	}
}

// group is one transaction in progress: the batches of one or more calls,
// applied in turn, so a later batch sees the chain heads and tree the
// earlier ones left.
type group struct {
	s     *Store
	txn   *badger.Txn
	rng   *compact.Range
	now   time.Time
	heads map[string]*head  // agents' heads as the group moves them
	seen  map[string]string // id -> hash of records of this group
	post  map[string]*posting
	seg   segmentWriter // the log's leaves and nodes this group adds
}

// posting gathers the IDs of a group's records for one index key prefix.
type posting struct {
	prefix []byte
	ids    []ulid.ULID
}

// commitGroup builds and commits one transaction for calls. s.mu is held.
// The tree state in memory changes only once the commit succeeded.
func (s *Store) commitGroup(calls []*call) error {
	rng, err := cloneRange(s.rf, s.rng)
	if err != nil {
		return fmt.Errorf("store: copying tree state: %w", err)
	}
	g := &group{s: s, txn: s.db.NewTransaction(true), rng: rng, now: time.Now().UTC(),
		heads: map[string]*head{}, seen: map[string]string{}, post: map[string]*posting{},
		seg: segmentWriter{first: rng.End()}}
	defer g.txn.Discard()
	batches := make([]batch, len(calls))
	recs := 0
	for i, c := range calls {
		batches[i].g = g
		for _, j := range chainOrder(c.preps) {
			if err := batches[i].add(&c.preps[j]); err != nil {
				return txnErr(err)
			}
		}
		recs += len(c.preps)
	}
	if err := g.finish(); err != nil {
		return txnErr(err)
	}
	if err := g.txn.Commit(); err != nil {
		return fmt.Errorf("store: committing batch of %d records: %w", recs, txnErr(err))
	}
	s.rng = rng
	s.m.treeSize.Set(float64(rng.End()))
	for i, c := range calls {
		c.res, c.issues = batches[i].res, batches[i].issues
	}
	return nil
}

// visit keeps a node the compact range created: proofs are read from
// these, never recomputed. Leaves (level 0) are added with their IDs.
func (g *group) visit(id compact.NodeID, hash []byte) {
	if id.Level > 0 {
		g.seg.addNode(id.Level, hash)
	}
}

// index adds a stored record to the postings of its indexed values.
func (g *group) index(p *prepared) {
	r := p.rec
	add := func(field string, values ...string) {
		for i, v := range values {
			if v == "" || len(v) > maxIndexValue || contains(values[:i], v) {
				continue
			}
			prefix := indexPrefix(p.bucket, field, v)
			ps := g.post[string(prefix)]
			if ps == nil {
				ps = &posting{prefix: prefix}
				g.post[string(prefix)] = ps
			}
			ps.ids = append(ps.ids, p.uid)
		}
	}
	w := &r.Workload
	add(fieldNamespace, w.Namespace)
	add(fieldWorkload, workloadValues(r)...)
	add(fieldModel, r.Request.Model)
	rules := make([]string, len(r.Findings))
	for i, f := range r.Findings {
		rules[i] = f.Rule
	}
	add(fieldFinding, rules...)
	add(fieldAction, r.Decision.Action)
	add(fieldAgent, r.AgentID)
}

// finish writes the postings, the heads and the tree state.
func (g *group) finish() error {
	for _, ps := range g.post {
		slices.SortFunc(ps.ids, func(a, b ulid.ULID) int { return bytes.Compare(a[:], b[:]) })
		v := make([]byte, 0, len(ps.ids)*rawLen)
		for _, id := range ps.ids {
			v = append(v, id[:]...)
		}
		lo, hi := ps.ids[0], ps.ids[len(ps.ids)-1]
		if err := g.txn.Set(postingKey(ps.prefix, hi[:], lo[:]), v); err != nil {
			return err
		}
	}
	for agent, h := range g.heads {
		if h.Seq == 0 {
			continue
		}
		v, err := json.Marshal(h)
		if err != nil {
			return fmt.Errorf("store: encoding chain head: %w", err)
		}
		if err := g.txn.Set(headKey(agent), v); err != nil {
			return err
		}
	}
	if end := g.rng.End(); end > g.seg.first {
		v, err := g.seg.value(end)
		if err != nil {
			return err
		}
		if err := g.txn.Set(segmentKey(g.seg.first), v); err != nil {
			return err
		}
	}
	if err := g.txn.Set(keyTreeSize, u64(g.rng.End())); err != nil {
		return err
	}
	return g.txn.Set(keyRange, rangeBytes(g.rng))
}
