package store

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/oklog/ulid/v2"

	"github.com/promptrail/promptrail/audit"
)

// Query limits.
const (
	DefaultLimit = 50
	MaxLimit     = 1000
)

// Filter selects records for Query. Zero fields match everything.
type Filter struct {
	// Since (inclusive) and Until (exclusive) bound the records' start
	// time, as their IDs carry it (millisecond precision).
	Since, Until time.Time
	Namespace    string
	// Workload matches the workload's identity, pod, owner, unit,
	// container or comm.
	Workload string
	Model    string
	Finding  string // a finding's rule
	Action   string // decision action
	Agent    string
	// Q is a case-insensitive substring of the prompt or the response:
	// request body, messages, prompt and input; response body and
	// choices.
	Q string
	// Limit is the page size: default DefaultLimit, at most MaxLimit.
	Limit int
	// Cursor is Page.Next of the previous page.
	Cursor string
}

// Page is one page of Query results, newest first.
type Page struct {
	Records []audit.Record `json:"records"`
	// Next is the cursor of the next page; "" when there is no more.
	Next string `json:"next,omitempty"`
}

// ErrBadCursor is returned by Query for a cursor it did not issue.
var ErrBadCursor = errors.New("store: invalid cursor")

// textScanBudget bounds the records a query with a text filter reads
// before it answers: a rare string would otherwise read the whole time
// range in one request. The page then holds what was found, possibly
// nothing, and a cursor to go on from where the scan stopped.
const textScanBudget = 100_000

// errScanBudget stops a query whose text scan used its budget.
var errScanBudget = errors.New("store: text scan budget used")

type indexFilter struct{ field, value string }

// query is one Query in progress.
type query struct {
	s       *Store
	txn     *badger.Txn
	f       Filter
	lo, hi  string        // id bounds: lo inclusive, hi exclusive
	loRaw   ulid.ULID     // lo, raw
	hiRaw   ulid.ULID     // the newest ID below hi, raw
	filters []indexFilter // index filters, all of which a record matches
	q       string        // lower-case Q
	qRaw    []byte        // lower-case Q, if it can be searched in raw JSON
	limit   int
	out     []audit.Record
	scanned int
	budget  int    // records a text query may read; 0: no bound
	stopAt  string // the last record read when the budget ran out
}

// Query returns the records matching f, newest first, a page at a time.
func (s *Store) Query(ctx context.Context, f Filter) (Page, error) {
	q := &query{s: s, f: f, limit: f.Limit}
	if f.Q != "" {
		q.budget = s.scanBudget
	}
	if q.limit <= 0 {
		q.limit = DefaultLimit
	}
	q.limit = min(q.limit, MaxLimit)
	if err := q.bounds(); err != nil {
		return Page{}, err
	}
	q.plan()
	if q.lo >= q.hi {
		return Page{}, nil
	}
	err := s.db.View(func(txn *badger.Txn) error {
		q.txn = txn
		return q.run(ctx)
	})
	var p Page
	switch {
	case errors.Is(err, errScanBudget) && len(q.out) <= q.limit:
		p.Next = base64.RawURLEncoding.EncodeToString([]byte(q.stopAt))
	case errors.Is(err, errScanBudget):
	case err != nil:
		return Page{}, fmt.Errorf("store: query: %w", err)
	}
	if len(q.out) > q.limit {
		q.out = q.out[:q.limit]
		p.Next = base64.RawURLEncoding.EncodeToString([]byte(q.out[q.limit-1].ID))
	}
	p.Records = q.out
	return p, nil
}

func ulidBound(t time.Time, high bool) string {
	var u ulid.ULID
	ms := max(t.UnixMilli(), 0)
	if err := u.SetTime(uint64(min(ms, int64(ulid.MaxTime())))); err != nil {
		return ""
	}
	if high {
		for i := 6; i < len(u); i++ {
			u[i] = 0xff
		}
	}
	return u.String()
}

func (q *query) bounds() error {
	q.lo, q.hi = ulidBound(time.UnixMilli(0), false), ulidBound(time.UnixMilli(int64(ulid.MaxTime())), true)+"~"
	if !q.f.Since.IsZero() {
		q.lo = ulidBound(q.f.Since, false)
	}
	if !q.f.Until.IsZero() {
		q.hi = ulidBound(q.f.Until, false)
	}
	if q.f.Cursor != "" {
		raw, err := base64.RawURLEncoding.DecodeString(q.f.Cursor)
		if err != nil {
			return ErrBadCursor
		}
		u, err := ulid.ParseStrict(string(raw))
		if err != nil || u.String() != string(raw) {
			return ErrBadCursor
		}
		q.hi = min(q.hi, string(raw))
	}
	return nil
}

// plan lists the index filters. Their postings are intersected, so the
// order matters little; the likely most selective go first, which makes
// the leapfrog take the long strides first.
func (q *query) plan() {
	for _, f := range []indexFilter{
		{fieldFinding, q.f.Finding}, {fieldWorkload, q.f.Workload}, {fieldAgent, q.f.Agent},
		{fieldModel, q.f.Model}, {fieldNamespace, q.f.Namespace}, {fieldAction, q.f.Action},
	} {
		if f.value != "" {
			q.filters = append(q.filters, f)
		}
	}
	if q.f.Q != "" {
		q.q = strings.ToLower(q.f.Q)
		if rawSearchable(q.q) {
			q.qRaw = []byte(q.q)
		}
	}
}

// rawSearchable says whether s appears verbatim in a JSON encoding of any
// text holding it: printable ASCII that encoding/json does not escape.
func rawSearchable(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// run walks the buckets from newest to oldest until the page is full.
func (q *query) run(ctx context.Context) error {
	var ok bool
	cut, err := q.s.retentionCut(q.txn)
	if err != nil {
		return err
	}
	hiU, err := ulid.ParseStrict(q.hi[:idLen])
	if err != nil {
		return fmt.Errorf("upper bound: %w", err)
	}
	loU, err := ulid.ParseStrict(q.lo)
	if err != nil {
		return fmt.Errorf("lower bound: %w", err)
	}
	q.loRaw, q.hiRaw = loU, hiU
	if len(q.hi) == idLen { // exclusive; with the "~" of no bound, inclusive
		if q.hiRaw, ok = below(hiU); !ok {
			return nil
		}
	}
	loBucket := max(q.s.bucketOfTime(loU.Time()), cut)
	opts := badger.DefaultIteratorOptions
	opts.Reverse, opts.PrefetchValues = true, false
	finder := q.txn.NewIterator(opts)
	defer finder.Close()
	next := q.s.bucketOfTime(hiU.Time())
	for {
		var bkt uint64
		bkt, ok = prevBucket(finder, next)
		if !ok || bkt < loBucket {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := q.scanBucket(bkt); err != nil {
			return err
		}
		if len(q.out) > q.limit || bkt == 0 {
			return nil
		}
		next = bkt - 1
	}
}

// prevBucket returns the newest bucket at or before bkt holding any key.
func prevBucket(it *badger.Iterator, bkt uint64) (uint64, bool) {
	it.Seek(append(bucketPrefix(bkt), 0xff))
	if !it.ValidForPrefix(prefixBuckets) {
		return 0, false
	}
	return bucketOf(it.Item().Key())
}

func (q *query) scanBucket(bkt uint64) error {
	if len(q.filters) > 0 {
		return q.scanIndex(bkt)
	}
	prefix := bucketTablePrefix(bkt, 'r')
	opts := badger.DefaultIteratorOptions
	opts.Reverse, opts.PrefetchValues, opts.Prefix = true, false, prefix
	it := q.txn.NewIterator(opts)
	defer it.Close()
	for it.Seek(append(append([]byte(nil), prefix...), q.hi...)); it.ValidForPrefix(prefix); it.Next() {
		key := it.Item().Key()
		if len(key) != len(prefix)+idLen {
			continue
		}
		id := string(key[len(prefix):])
		if id >= q.hi {
			continue
		}
		if id < q.lo {
			return nil
		}
		q.scanned++
		ok, err := q.take(id, it.Item())
		if err != nil {
			return err
		}
		if ok && len(q.out) > q.limit {
			return nil
		}
		if err := q.spend(id); err != nil {
			return err
		}
	}
	return nil
}

// scanIndex walks the IDs in every filter's postings of the bucket,
// newest first, and reads only the records of those.
func (q *query) scanIndex(bkt uint64) error {
	streams := make([]*idStream, len(q.filters))
	for i, f := range q.filters {
		streams[i] = newIDStream(q.txn, indexPrefix(bkt, f.field, f.value), q.loRaw)
		defer streams[i].Close()
	}
	bound := q.hiRaw
	for {
		uid, ok, err := intersect(streams, bound)
		if err != nil || !ok {
			return err
		}
		q.scanned++
		id := uid.String()
		item, err := q.txn.Get(recordKey(bkt, id))
		switch {
		case errors.Is(err, badger.ErrKeyNotFound): // dropped by retention under our feet
		case err != nil:
			return err
		default:
			if ok, err := q.take(id, item); err != nil || (ok && len(q.out) > q.limit) {
				return err
			}
		}
		if err := q.spend(id); err != nil {
			return err
		}
		if bound, ok = below(uid); !ok {
			return nil
		}
	}
}

// spend counts a record read against a text query's budget.
func (q *query) spend(id string) error {
	if q.budget > 0 && q.scanned >= q.budget {
		q.stopAt = id
		return errScanBudget
	}
	return nil
}

// take decodes a candidate's record and appends it to the page if it
// matches Q.
func (q *query) take(id string, item *badger.Item) (bool, error) {
	var rec audit.Record
	err := item.Value(func(raw []byte) error {
		if len(raw) < leafIdxLen {
			return fmt.Errorf("the stored value is %d bytes", len(raw))
		}
		raw = raw[leafIdxLen:]
		if q.qRaw != nil && !bytes.Contains(bytes.ToLower(raw), q.qRaw) {
			return nil
		}
		return json.Unmarshal(raw, &rec)
	})
	if err != nil {
		return false, fmt.Errorf("decoding record %s (run Verify): %w", id, err)
	}
	if rec.ID == "" || (q.q != "" && !textMatches(&rec, q.q)) {
		return false, nil
	}
	q.out = append(q.out, rec)
	return true, nil
}

// textMatches says whether lower-case q is in the prompt or response.
func textMatches(r *audit.Record, q string) bool {
	has := func(s string) bool { return s != "" && strings.Contains(strings.ToLower(s), q) }
	if has(r.Request.Body) || has(r.Request.Prompt) {
		return true
	}
	for _, m := range r.Request.Messages {
		if has(m.Content) {
			return true
		}
	}
	for _, in := range r.Request.Input {
		if has(in) {
			return true
		}
	}
	if r.Response == nil {
		return false
	}
	if has(r.Response.Body) {
		return true
	}
	for _, c := range r.Response.Choices {
		if has(c.Content) {
			return true
		}
	}
	return false
}
