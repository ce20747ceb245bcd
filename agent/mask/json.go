package mask

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// JSON masks every string value of a JSON document, on its decoded form, and
// returns the document with only the string values in which something was
// masked re-encoded: everything else (structure, object keys, key order,
// numbers, white space, other strings and their escapes) is left
// byte-identical, and so is the unmasked part of a masked string wherever a
// match does not cut through an escape. Object keys are masked as string
// values are. If nothing is masked, masked is doc itself.
//
// The findings' paths name the string values ($.messages[0].content,
// $.metadata['a key']); a key's finding names its value, with the key
// masked in the path. A document that is not valid JSON is masked as
// plain text (with no paths) and the error wraps ErrInvalidJSON: masked is
// then what to forward, if anything, but secrets written with escapes may
// have been missed.
func (m *Masker) JSON(where string, doc []byte) (masked []byte, findings []Finding, err error) {
	if !json.Valid(doc) {
		masked, findings = m.Text(where, "", doc)
		var raw json.RawMessage
		if err = json.Unmarshal(doc, &raw); err == nil {
			err = fmt.Errorf("mask: %w", ErrInvalidJSON)
		} else {
			err = fmt.Errorf("mask: %w: %w", ErrInvalidJSON, err)
		}
		return masked, findings, err
	}
	j := jsonMasker{m: m, where: where, doc: doc}
	j.value(skipSpace(doc, 0))
	if j.out == nil {
		return doc, nil, nil
	}
	return append(j.out, doc[j.last:]...), j.fs.findings(), nil
}

// jsonMasker walks a valid JSON document.
type jsonMasker struct {
	m     *Masker
	where string
	doc   []byte
	out   []byte // nil until the first change
	last  int    // doc[last:] is not yet in out
	path  []pathSeg
	dec   []byte // scratch for decoded strings
	fs    findingSet
}

// pathSeg is an object key (raw, between its quotes) or an array index.
type pathSeg struct {
	key   []byte
	index int
}

// value walks the value at doc[i] and returns the index after it. The
// document is valid JSON, so the walk needs no checks; json.Valid bounds
// its depth.
func (j *jsonMasker) value(i int) int {
	switch j.doc[i] {
	case '{':
		return j.object(i)
	case '[':
		return j.array(i)
	case '"':
		end := stringEnd(j.doc, i)
		j.maskString(i, end)
		return end
	}
	return scalarEnd(j.doc, i)
}

// scalarEnd returns the index after the number or literal at b[i].
func scalarEnd(b []byte, i int) int {
	for ; i < len(b); i++ {
		switch b[i] {
		case ',', ']', '}', ' ', '\t', '\r', '\n':
			return i
		}
	}
	return i
}

func (j *jsonMasker) object(i int) int {
	i = skipSpace(j.doc, i+1)
	if j.doc[i] == '}' {
		return i + 1
	}
	for {
		end := stringEnd(j.doc, i)
		j.path = append(j.path, pathSeg{key: j.doc[i+1 : end-1]})
		// A key is masked like a value (its finding's path is the path of
		// its value, the key masked there): a prompt can be a map whose
		// keys are what a user pasted.
		j.maskString(i, end)
		i = skipSpace(j.doc, end) // at ':'
		i = skipSpace(j.doc, j.value(skipSpace(j.doc, i+1)))
		j.path = j.path[:len(j.path)-1]
		if j.doc[i] == '}' {
			return i + 1
		}
		i = skipSpace(j.doc, i+1) // after ','
	}
}

func (j *jsonMasker) array(i int) int {
	i = skipSpace(j.doc, i+1)
	if j.doc[i] == ']' {
		return i + 1
	}
	for n := 0; ; n++ {
		j.path = append(j.path, pathSeg{index: n})
		i = skipSpace(j.doc, j.value(i))
		j.path = j.path[:len(j.path)-1]
		if j.doc[i] == ']' {
			return i + 1
		}
		i = skipSpace(j.doc, i+1)
	}
}

// maskString masks the string doc[start:end] (with its quotes).
func (j *jsonMasker) maskString(start, end int) {
	raw := j.doc[start+1 : end-1]
	plain := bytes.IndexByte(raw, '\\') < 0
	dec := raw
	if !plain {
		j.dec = decodeString(j.dec[:0], raw, nil)
		dec = j.dec
	}
	ms := normalize(j.m.d.Find(dec), len(dec))
	if len(ms) == 0 {
		return
	}
	var off []int
	if !plain {
		off = make([]int, 0, len(dec)+1)
		decodeString(nil, raw, &off)
	}
	path := j.pathString()
	if j.out == nil {
		j.out = make([]byte, 0, len(j.doc)+64)
	}
	j.out = append(j.out, j.doc[j.last:start+1]...)
	at := 0
	for _, x := range ms {
		j.out = appendSegment(j.out, raw, dec, off, at, x.Start)
		j.out = j.m.appendMarker(j.out, x.RuleID, dec[x.Start:x.End], j.where, path, &j.fs)
		at = x.End
	}
	j.out = appendSegment(j.out, raw, dec, off, at, len(dec))
	j.out = append(j.out, '"')
	j.last = end
}

// appendSegment appends the decoded bytes dec[a:b] in JSON form: as the raw
// bytes they came from where both ends fall between escapes, else
// re-encoded. off maps decoded to raw offsets (nil: the identity).
func appendSegment(dst, raw, dec []byte, off []int, a, b int) []byte {
	if off == nil {
		return append(dst, raw[a:b]...)
	}
	if off[a] >= 0 && off[b] >= 0 {
		return append(dst, raw[off[a]:off[b]]...)
	}
	return appendJSONString(dst, dec[a:b])
}

// pathString returns the JSON path of the current value, with secrets in
// object keys masked.
func (j *jsonMasker) pathString() string {
	p := []byte{'$'}
	for _, seg := range j.path {
		if seg.key == nil {
			p = append(p, '[')
			p = strconv.AppendInt(p, int64(seg.index), 10)
			p = append(p, ']')
			continue
		}
		key := decodeString(nil, seg.key, nil)
		if ms := normalize(j.m.d.Find(key), len(key)); len(ms) > 0 {
			var discard findingSet
			key = j.m.appendMasked(nil, key, 0, len(key), ms, "", "", &discard)
		}
		p = appendPathKey(p, key)
	}
	return string(p)
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON white space.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index after the closing quote of the valid JSON
// string that starts at b[i].
func stringEnd(b []byte, i int) int {
	for k := i + 1; ; {
		q := k + bytes.IndexByte(b[k:], '"')
		bs := 0
		for p := q - 1; p > i && b[p] == '\\'; p-- {
			bs++
		}
		if bs%2 == 0 {
			return q + 1
		}
		k = q + 1
	}
}
