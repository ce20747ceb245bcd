package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
)

// Canonical returns the bytes a record's Hash is computed over: the
// record's JSON encoding (encoding/json: fields in declaration order, map
// keys sorted, times in RFC 3339 with nanoseconds) with Hash empty. Decoding
// a record and encoding it again yields the same bytes, so the collector
// can check a hash on a record it received as JSON.
func (r *Record) Canonical() ([]byte, error) {
	c := *r
	c.Hash = ""
	b, err := json.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("audit: encoding record %s: %w", r.ID, err)
	}
	return b, nil
}

// ComputeHash returns the hex SHA-256 of the record's canonical encoding.
func (r *Record) ComputeHash() (string, error) {
	b, err := r.Canonical()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// Seal links r into its agent's chain as record seq, after the record
// whose hash is prev ("" when seq is 1), and sets its Hash. Sealing is
// the last change to a record: any later edit breaks its hash.
func (r *Record) Seal(seq uint64, prev string) error {
	if seq == 0 {
		return errors.New("audit: sequence numbers start at 1")
	}
	r.Seq, r.PrevHash, r.Hash = seq, prev, ""
	// Normalise through JSON first: encoding/json writes invalid UTF-8 as
	// \ufffd escapes but a decoded U+FFFD as raw bytes, so a record holding
	// invalid UTF-8 would otherwise hash differently once received.
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("audit: encoding record %s: %w", r.ID, err)
	}
	var norm Record
	if err := json.Unmarshal(b, &norm); err != nil {
		return fmt.Errorf("audit: normalising record %s: %w", r.ID, err)
	}
	*r = norm
	h, err := r.ComputeHash()
	if err != nil {
		return err
	}
	r.Hash = h
	return nil
}

// ErrHash is returned by CheckHash for a record whose content does not
// match its hash.
var ErrHash = errors.New("audit: record hash does not match its content")

// CheckHash reports whether r is sealed and its Hash matches its content.
func (r *Record) CheckHash() error {
	if r.Seq == 0 || r.Hash == "" {
		return fmt.Errorf("audit: record %s is not sealed (no seq or hash)", r.ID)
	}
	h, err := r.ComputeHash()
	if err != nil {
		return err
	}
	if h != r.Hash {
		return fmt.Errorf("%w: record %s", ErrHash, r.ID)
	}
	return nil
}

// Encode returns the record's JSON encoding, Hash included: the form in
// which records travel and are stored, and the leaf data of the
// collector's Merkle log.
func (r *Record) Encode() ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("audit: encoding record %s: %w", r.ID, err)
	}
	return b, nil
}

// Batch is the body of POST /v1/ingest: records of one agent in seq order.
type Batch struct {
	Records []Record `json:"records"`
}

// IngestResult is the collector's answer to an accepted batch.
type IngestResult struct {
	// Accepted counts records stored by this request; Duplicates counts
	// records the collector already had (a retried batch), which are
	// acknowledged without being stored again.
	Accepted   int `json:"accepted"`
	Duplicates int `json:"duplicates"`
	// ChainIssues names gaps and forks in the agents' chains that this
	// batch revealed. The records are stored all the same.
	ChainIssues []string `json:"chain_issues,omitempty"`
	// Rejected lists the records of the batch the collector refuses for
	// good: sending them again cannot succeed. The rest of the batch is
	// stored; Accepted + Duplicates + len(Rejected) is the batch's size.
	Rejected []Rejection `json:"rejected,omitempty"`
}

// Rejection says why the collector refuses one record permanently.
type Rejection struct {
	// Index is the record's position in the batch.
	Index int    `json:"index"`
	ID    string `json:"id"`
	Seq   uint64 `json:"seq,omitempty"`
	// Code is a stable word: "invalid_record", "record_too_large" or
	// "clock_skew".
	Code   string `json:"code"`
	Reason string `json:"reason"`
}

// Batch and record size limits, shared by agent and collector so that the
// largest record an agent makes always fits the largest batch the
// collector takes.
const (
	// MaxBatchBytes is the largest body of POST /v1/ingest.
	MaxBatchBytes = 4 << 20
	// MaxBatchRecords is the most records one batch may hold. It bounds
	// the memory a batch of tiny (or empty) records costs the collector.
	MaxBatchRecords = 1000
	// MaxRecordBytes is the largest encoded record: a batch of it alone,
	// with its framing, stays under MaxBatchBytes. The agent shrinks a
	// record to fit it; the collector refuses a larger one.
	MaxRecordBytes = MaxBatchBytes - 64<<10
)
