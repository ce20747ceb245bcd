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
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/oklog/ulid/v2"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/promptrail/promptrail/audit"
)

// ErrBatchTooLarge is returned by Ingest for a batch over MaxBatchBytes,
// or one whose records and index keys do not fit one transaction; nothing
// of it is stored. Send it again in smaller batches.
var ErrBatchTooLarge = errors.New("store: batch too large for one transaction; split it")

// maxIndexValue bounds an indexed value: longer values are stored but not
// indexed, so Badger keys stay small.
const maxIndexValue = 1 << 10

// Rejection codes of audit.Rejection.
const (
	RejectInvalid   = "invalid_record"
	RejectTooLarge  = "record_too_large"
	RejectClockSkew = "clock_skew"
)

// Chain issue kinds.
const (
	IssueGap      = "gap"
	IssueFork     = "fork"
	IssueRestart  = "restart"
	IssueConflict = "conflict"
)

// ChainIssue is a break in an agent's chain found by Ingest, as stored.
type ChainIssue struct {
	Kind   string    `json:"kind"`
	Agent  string    `json:"agent"`
	Seq    uint64    `json:"seq"`
	ID     string    `json:"id"`
	Detail string    `json:"detail"`
	Time   time.Time `json:"time"`
}

func (c ChainIssue) String() string {
	return fmt.Sprintf("%s: agent %s seq %d (record %s): %s", c.Kind, c.Agent, c.Seq, c.ID, c.Detail)
}

// prepared is a validated record with everything the transaction needs,
// computed outside the lock.
type prepared struct {
	rec    *audit.Record
	val    []byte // r/ value: leaf index, set when stored, then enc
	enc    []byte // val without the leaf index
	leaf   []byte // Merkle leaf hash
	hash   []byte // record hash, raw
	uid    ulid.ULID
	bucket uint64
}

// head is an agent's chain head, as stored in c/ keys.
type head struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
	ID   string `json:"id"`
}

// Ingest stores the valid records of a batch of sealed records in one
// synced transaction: all of them or, when it returns an error, none.
// A record that can never be stored (invalid, over MaxRecordBytes, its
// start further than MaxClockSkew from now) is rejected: listed in the
// result's Rejected and not stored, so it cannot hold up the records
// after it; the agent's chain then shows the gap. Records the store
// already holds are counted as duplicates; chain breaks are reported,
// stored and never a reason to drop a record.
func (s *Store) Ingest(ctx context.Context, recs []audit.Record) (audit.IngestResult, error) {
	var res audit.IngestResult
	if len(recs) == 0 {
		return res, nil
	}
	preps, rejected, size, err := prepare(recs, s.checker(time.Now()))
	if err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if len(preps) == 0 {
		res.Rejected = rejected
		return res, nil
	}
	c := &call{preps: preps, size: size, start: time.Now(), wake: make(chan struct{})}
	s.submit(c)
	if c.err != nil {
		return audit.IngestResult{}, c.err
	}
	c.res.Rejected = rejected
	s.m.batches.Observe(time.Since(c.start).Seconds())
	for _, is := range c.issues {
		s.m.issues.WithLabelValues(is.Kind).Inc()
		s.log.Warn("chain issue", "kind", is.Kind, "agent", is.Agent, "seq", is.Seq, "id", is.ID, "detail", is.Detail)
	}
	return c.res, nil
}

func txnErr(err error) error {
	if errors.Is(err, badger.ErrTxnTooBig) {
		return fmt.Errorf("%w: %w", ErrBatchTooLarge, err)
	}
	return err
}

// chainOrder returns the batch's indexes by agent, then seq, so chains
// are checked in order whatever order the batch came in.
func chainOrder(preps []prepared) []int {
	order := make([]int, len(preps))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		ra, rb := preps[order[a]].rec, preps[order[b]].rec
		if ra.AgentID != rb.AgentID {
			return ra.AgentID < rb.AgentID
		}
		return ra.Seq < rb.Seq
	})
	return order
}

// checker holds what validating a record needs besides the record.
type checker struct {
	bucketOf func(ms uint64) uint64
	now      time.Time
	skew     time.Duration // < 0: no check
}

func (s *Store) checker(now time.Time) checker {
	return checker{bucketOf: s.bucketOfTime, now: now, skew: s.cfg.MaxClockSkew}
}

// prepare validates and encodes the batch, spreading the JSON and hashing
// work over the CPUs: it is most of an Ingest's cost. It returns the
// valid records and the rejected ones.
func prepare(recs []audit.Record, ck checker) ([]prepared, []audit.Rejection, int, error) {
	preps := make([]prepared, len(recs))
	rejs := make([]*audit.Rejection, len(recs))
	workers := min(runtime.GOMAXPROCS(0), (len(recs)+63)/64)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(recs); i += workers {
				rejs[i] = prepareOne(&preps[i], i, &recs[i], ck)
			}
		})
	}
	wg.Wait()
	total := 0
	valid := preps[:0]
	var rejected []audit.Rejection
	for i, rej := range rejs {
		if rej != nil {
			rejected = append(rejected, *rej)
			continue
		}
		total += len(preps[i].enc)
		valid = append(valid, preps[i])
	}
	if total > MaxBatchBytes {
		return nil, nil, 0, fmt.Errorf("%w: %d bytes of records, limit %d", ErrBatchTooLarge, total, MaxBatchBytes)
	}
	return valid, rejected, total, nil
}

// prepareOne fills p from r, or says why r is rejected.
func prepareOne(p *prepared, i int, r *audit.Record, ck checker) *audit.Rejection {
	rejection := func(code, format string, args ...any) *audit.Rejection {
		return &audit.Rejection{Index: i, ID: r.ID, Seq: r.Seq, Code: code, Reason: fmt.Sprintf(format, args...)}
	}
	bad := func(format string, args ...any) *audit.Rejection {
		return rejection(RejectInvalid, format, args...)
	}
	u, err := ulid.ParseStrict(r.ID)
	if err != nil {
		return bad("id is not a ULID: %v", err)
	}
	if u.String() != r.ID {
		return bad("id is not a canonical (upper-case) ULID")
	}
	switch {
	case r.AgentID == "":
		return bad("agent_id is empty")
	case strings.IndexByte(r.AgentID, 0) >= 0:
		return bad("agent_id contains a NUL byte")
	case r.Seq == 0:
		return bad("seq is 0; sealed records count from 1")
	}
	raw, err := hex.DecodeString(r.Hash)
	if err != nil || len(raw) != sha256.Size || hex.EncodeToString(raw) != r.Hash {
		return bad("hash is not 64 lower-case hex digits")
	}
	enc, err := r.Encode()
	if err != nil {
		return bad("%v", err)
	}
	// Room for the leaf index in front, so storing it copies nothing.
	val := append(make([]byte, leafIdxLen, leafIdxLen+len(enc)), enc...)
	enc = val[leafIdxLen:]
	if len(enc) > audit.MaxRecordBytes {
		return rejection(RejectTooLarge, "oversize: %d bytes encoded, limit %d", len(enc), audit.MaxRecordBytes)
	}
	if !hashMatches(enc, r.Hash) {
		return bad("%v", audit.ErrHash)
	}
	if ck.skew >= 0 {
		if d := r.Start.Sub(ck.now); d > ck.skew || -d > ck.skew {
			return rejection(RejectClockSkew, "start %s is %v from the collector's clock (limit %v): check the agent's clock",
				r.Start.UTC().Format(time.RFC3339), d.Round(time.Second), ck.skew)
		}
	}
	*p = prepared{rec: r, val: val, enc: enc, leaf: rfc6962.DefaultHasher.HashLeaf(enc),
		hash: raw, uid: u, bucket: ck.bucketOf(u.Time())}
	return nil
}

// hashMatches is audit.Record.CheckHash on the record's encoding, without
// encoding it a second time: the canonical form is the encoding without
// its "hash" member. That member follows id, agent_id, node, seq and
// prev_hash, whose quotes JSON escapes, so its first occurrence is the
// record's own.
func hashMatches(enc []byte, hash string) bool {
	member := `,"hash":"` + hash + `"`
	i := bytes.Index(enc, []byte(member))
	if i < 0 {
		return false
	}
	h := sha256.New()
	h.Write(enc[:i])
	h.Write(enc[i+len(member):])
	return hex.EncodeToString(h.Sum(nil)) == hash
}

// batch is one Ingest call's part of a group's transaction.
type batch struct {
	g      *group
	issues []ChainIssue
	res    audit.IngestResult
}

func (b *batch) add(p *prepared) error {
	g, r := b.g, p.rec
	if h, ok := g.seen[r.ID]; ok {
		return b.duplicate(p, h)
	}
	stored, err := g.storedHash(p)
	if err != nil {
		return err
	}
	if stored != "" {
		return b.duplicate(p, stored)
	}
	g.seen[r.ID] = r.Hash
	moves, err := b.chain(p)
	if err != nil {
		return err
	}
	if moves {
		if err := g.txn.Set(seqKey(r.AgentID, r.Seq), append([]byte(r.ID), p.hash...)); err != nil {
			return err
		}
	}
	idx := g.rng.End()
	binary.BigEndian.PutUint64(p.val[:leafIdxLen], idx)
	if err := g.txn.Set(recordKey(p.bucket, r.ID), p.val); err != nil {
		return err
	}
	g.seg.addLeaf(p.leaf, r.ID)
	g.index(p)
	if err := g.rng.Append(p.leaf, g.visit); err != nil {
		return fmt.Errorf("store: appending leaf %d: %w", idx, err)
	}
	b.res.Accepted++
	return nil
}

// duplicate handles a record whose ID is already stored, with hash had.
func (b *batch) duplicate(p *prepared, had string) error {
	r := p.rec
	if had == r.Hash {
		b.res.Duplicates++
		return nil
	}
	return b.issue(ChainIssue{Kind: IssueConflict, Agent: r.AgentID, Seq: r.Seq, ID: r.ID,
		Detail: fmt.Sprintf("a different record with this id is stored (hash %.12s…, received %.12s…); the received one was not stored", had, r.Hash)})
}

// storedHash returns the hash of the stored record with p's ID, or "".
// A Get of an absent key is answered by the tables' bloom filters, so
// this costs little for the new records that are nearly all of a batch.
func (g *group) storedHash(p *prepared) (string, error) {
	id := p.rec.ID
	it, err := g.txn.Get(recordKey(p.bucket, id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return "", nil
	} else if err != nil {
		return "", fmt.Errorf("store: looking up record %s: %w", id, err)
	}
	var v struct {
		Hash string `json:"hash"`
	}
	err = it.Value(func(raw []byte) error {
		if len(raw) < leafIdxLen {
			return fmt.Errorf("%d bytes", len(raw))
		}
		return json.Unmarshal(raw[leafIdxLen:], &v)
	})
	if err != nil {
		return "", fmt.Errorf("store: decoding stored record %s (run Verify): %w", id, err)
	}
	if v.Hash == "" {
		v.Hash = "(none)"
	}
	return v.Hash, nil
}

// chain checks p against its agent's head, records any issue, and says
// whether p becomes the head.
func (b *batch) chain(p *prepared) (bool, error) {
	r := p.rec
	h, err := b.g.head(r.AgentID)
	if err != nil {
		return false, err
	}
	is := ChainIssue{Agent: r.AgentID, Seq: r.Seq, ID: r.ID}
	moves := true
	switch {
	case r.Seq == h.Seq+1 && r.PrevHash == h.Hash:
	case r.Seq > h.Seq+1:
		is.Kind = IssueGap
		is.Detail = fmt.Sprintf("records %d to %d are missing", h.Seq+1, r.Seq-1)
		if r.Seq == h.Seq+2 {
			is.Detail = fmt.Sprintf("record %d is missing", h.Seq+1)
		}
	case r.Seq == 1 && r.PrevHash == "":
		is.Kind = IssueRestart
		is.Detail = fmt.Sprintf("the agent started a new chain after record %d (%s): it lost its spool", h.Seq, h.ID)
	case r.Seq <= h.Seq:
		is.Kind = IssueFork
		is.Detail = fmt.Sprintf("seq is not after the chain head %d (%s): a replayed or reordered record", h.Seq, h.ID)
		moves = false
	default:
		is.Kind = IssueFork
		is.Detail = fmt.Sprintf("prev_hash %.12s… does not link to record %d (%s, hash %.12s…)", r.PrevHash, h.Seq, h.ID, h.Hash)
	}
	if is.Kind != "" {
		if err := b.issue(is); err != nil {
			return false, err
		}
	}
	if moves {
		*h = head{Seq: r.Seq, Hash: r.Hash, ID: r.ID}
	}
	return moves, nil
}

func (g *group) head(agent string) (*head, error) {
	if h, ok := g.heads[agent]; ok {
		return h, nil
	}
	h := &head{}
	it, err := g.txn.Get(headKey(agent))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
	case err != nil:
		return nil, fmt.Errorf("store: reading chain head of agent %s: %w", agent, err)
	default:
		if err := it.Value(func(v []byte) error { return json.Unmarshal(v, h) }); err != nil {
			return nil, fmt.Errorf("store: decoding chain head of agent %s: %w", agent, err)
		}
	}
	g.heads[agent] = h
	return h, nil
}

func (b *batch) issue(is ChainIssue) error {
	is.Time = b.g.now
	v, err := json.Marshal(is)
	if err != nil {
		return fmt.Errorf("store: encoding chain issue: %w", err)
	}
	if err := b.g.txn.Set(issueKey(is.Agent, is.Seq, is.ID), v); err != nil {
		return err
	}
	b.issues = append(b.issues, is)
	b.res.ChainIssues = append(b.res.ChainIssues, is.String())
	return nil
}

func workloadValues(r *audit.Record) []string {
	w := &r.Workload
	return []string{w.Identity, w.Pod, w.Owner, w.Unit, w.Container, w.Comm}
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
