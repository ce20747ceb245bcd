package collector

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/collector/store"
)

// indexedRecord is a decoded record and its position in the batch.
type indexedRecord struct {
	index int
	rec   audit.Record
}

// errTooManyRecords: the batch holds more than audit.MaxBatchRecords.
type errTooManyRecords struct{}

func (errTooManyRecords) Error() string {
	return fmt.Sprintf("more than %d records", audit.MaxBatchRecords)
}

// decodeBatch reads {"records":[…]} one record at a time, so that what
// it holds is the records decoded so far, never a second copy of the
// body, and stops at audit.MaxBatchRecords. A record that is well-formed
// JSON but not a record (a string where a time goes, say) is rejected on
// its own; malformed JSON fails the batch.
func decodeBatch(body io.Reader) ([]indexedRecord, []audit.Rejection, error) {
	dec := json.NewDecoder(body)
	if err := expectDelim(dec, '{'); err != nil {
		return nil, nil, err
	}
	var recs []indexedRecord
	var rejected []audit.Rejection
	seen := false
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		if key != "records" {
			// Unknown members are skipped: a newer agent may send more.
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, nil, err
			}
			continue
		}
		if seen {
			return nil, nil, errors.New(`"records" appears twice`)
		}
		seen = true
		if err := expectDelim(dec, '['); err != nil {
			return nil, nil, fmt.Errorf(`"records": %w`, err)
		}
		for i := 0; dec.More(); i++ {
			if i == audit.MaxBatchRecords {
				return nil, nil, errTooManyRecords{}
			}
			var r audit.Record
			err := dec.Decode(&r)
			var syn *json.SyntaxError
			switch {
			case err == nil:
				recs = append(recs, indexedRecord{index: i, rec: r})
			case errors.As(err, &syn) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
				return nil, nil, fmt.Errorf("record %d: %w", i, err)
			default:
				// The decoder consumed the whole value: only this record
				// is bad.
				rejected = append(rejected, audit.Rejection{Index: i, ID: r.ID, Seq: r.Seq,
					Code: store.RejectInvalid, Reason: "not a record: " + err.Error()})
			}
		}
		if _, err := dec.Token(); err != nil { // ]
			return nil, nil, err
		}
	}
	if _, err := dec.Token(); err != nil { // }
		return nil, nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, errors.New("data after the batch object")
	}
	return recs, rejected, nil
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	t, err := dec.Token()
	if err != nil {
		return err
	}
	if t != want {
		return fmt.Errorf("want %q, found %v", want, t)
	}
	return nil
}

// limitedReader reads at most left bytes and notes whether the body had
// more (io.LimitReader cannot tell a body of exactly the limit from a
// longer one).
type limitedReader struct {
	r    io.Reader
	left int64
	over bool
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		// One more byte tells whether the body goes on.
		var b [1]byte
		if n, _ := l.r.Read(b[:]); n > 0 {
			l.over = true
		}
		return 0, io.EOF
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}
