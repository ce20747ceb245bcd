package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// maxDepth is the deepest nesting encoding/json accepts; the scanner agrees
// with it so that what it calls well-formed, json.Unmarshal does too.
const maxDepth = 10000

// jsonScan is what scanJSON learns about a JSON text.
type jsonScan struct {
	valid bool // the whole text is one well-formed JSON value
	// cut ends the longest prefix that can be closed into valid JSON:
	// prefix + (a quote if inString) + the closers of stack.
	cut      int
	inString bool
	stack    []byte // containers open at cut, '{' or '[', innermost last
	errAt    int    // offset of the fault when !valid
	// keys are the [start, end) spans (quotes included) of object keys that
	// encoding/json could match to a field by case folding although they
	// are not exactly a field's name.
	keys [][2]int
}

// Scanner states.
const (
	stValue    = iota // a value must come
	stArrFirst        // after '[': a value or ']'
	stObjFirst        // after '{': a key or '}'
	stObjKey          // after ',' in an object: a key
	stColon           // after a key
	stAfter           // after a value: ',' or a closer, or the end at top level
)

// scanJSON scans b once, recording where a truncated or malformed text can
// be cut and closed, and which object keys need neutralizing. Its idea of
// well-formed is json.Valid's.
func scanJSON(b []byte) jsonScan {
	var res jsonScan
	var stackBuf [32]byte
	stack := stackBuf[:0]
	st := stValue
	safe := 0 // b[:safe] + closers(stack) is valid JSON
	i := 0
	fail := func(at int) jsonScan {
		res.errAt = at
		if !res.inString {
			res.cut = safe
		}
		res.stack = append([]byte(nil), stack...)
		return res
	}
	for {
		for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
			i++
		}
		if i >= len(b) {
			break
		}
		c := b[i]
		switch st {
		case stValue, stArrFirst:
			if c == ']' && st == stArrFirst {
				stack = stack[:len(stack)-1]
				i++
				safe, st = i, stAfter
				continue
			}
			switch {
			case c == '{' || c == '[':
				if len(stack) >= maxDepth {
					return fail(i)
				}
				stack = append(stack, c)
				i++
				safe = i
				if c == '{' {
					st = stObjFirst
				} else {
					st = stArrFirst
				}
			case c == '"':
				end, ok, good := scanString(b, i)
				if !ok {
					// Keep the string's readable part: a value may be cut.
					res.cut, res.inString = backOffRune(b, i+1, good), true
					return fail(good)
				}
				i = end
				safe, st = i, stAfter
			case c == '-' || (c >= '0' && c <= '9'):
				end, ok := scanNumber(b, i)
				if !ok || (end == len(b) && len(stack) > 0) {
					return fail(end)
				}
				i = end
				safe, st = i, stAfter
			case c == 't' || c == 'f' || c == 'n':
				lit := "null"
				if c == 't' {
					lit = "true"
				} else if c == 'f' {
					lit = "false"
				}
				for k := 0; k < len(lit); k++ {
					if i+k >= len(b) || b[i+k] != lit[k] {
						return fail(i + k)
					}
				}
				i += len(lit)
				safe, st = i, stAfter
			default:
				return fail(i)
			}
		case stObjFirst, stObjKey:
			if c == '}' && st == stObjFirst {
				stack = stack[:len(stack)-1]
				i++
				safe, st = i, stAfter
				continue
			}
			if c != '"' {
				return fail(i)
			}
			end, ok, good := scanString(b, i)
			if !ok {
				return fail(good)
			}
			if keyNeedsCare(b[i:end]) {
				res.keys = append(res.keys, [2]int{i, end})
			}
			i = end
			st = stColon
		case stColon:
			if c != ':' {
				return fail(i)
			}
			i++
			st = stValue
		case stAfter:
			if len(stack) == 0 {
				return fail(i) // something after the top-level value
			}
			top := stack[len(stack)-1]
			switch {
			case c == ',':
				i++
				if top == '[' {
					st = stValue
				} else {
					st = stObjKey
				}
			case (c == ']' && top == '[') || (c == '}' && top == '{'):
				stack = stack[:len(stack)-1]
				i++
				safe, st = i, stAfter
			default:
				return fail(i)
			}
		}
	}
	if st == stAfter && len(stack) == 0 {
		res.valid, res.cut = true, len(b)
		return res
	}
	return fail(len(b))
}

// scanString scans the string starting at b[i] == '"'. It returns the end
// (after the closing quote), whether the string is complete and valid, and
// where the valid characters before a fault end.
func scanString(b []byte, i int) (end int, ok bool, good int) {
	j := i + 1
	for j < len(b) {
		c := b[j]
		switch {
		case c == '"':
			return j + 1, true, j
		case c == '\\':
			if j+1 >= len(b) {
				return j, false, j
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				for k := j + 2; k < j+6; k++ {
					if k >= len(b) || !isHex(b[k]) {
						return k, false, j
					}
				}
				j += 6
			default:
				return j, false, j
			}
		case c < 0x20:
			return j, false, j
		default:
			j++
		}
	}
	return j, false, j
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// scanNumber scans a JSON number starting at b[i]; ok is false when what is
// there is not a number (or stops before one is complete).
func scanNumber(b []byte, i int) (end int, ok bool) {
	digits := func(j int) int {
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		return j
	}
	j := i
	if b[j] == '-' {
		j++
	}
	switch {
	case j < len(b) && b[j] == '0':
		j++
	case j < len(b) && b[j] >= '1' && b[j] <= '9':
		j = digits(j)
	default:
		return j, false
	}
	if j < len(b) && b[j] == '.' {
		k := digits(j + 1)
		if k == j+1 {
			return k, false
		}
		j = k
	}
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		j++
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			j++
		}
		k := digits(j)
		if k == j {
			return k, false
		}
		j = k
	}
	return j, true
}

// backOffRune moves end back so that b[start:end] does not end in the
// middle of a UTF-8 sequence.
func backOffRune(b []byte, start, end int) int {
	for k := end - 1; k >= start && k >= end-utf8.UTFMax; k-- {
		if utf8.RuneStart(b[k]) {
			if !utf8.FullRune(b[k:end]) {
				return k
			}
			break
		}
	}
	return end
}

// keyNeedsCare reports whether a raw key (quotes included) could match a
// field name in encoding/json only by folding case. Every field name of the
// package's wire types is lower-case ASCII (a test checks it), so a key
// matches one exactly, as the API's servers match keys, only if it decodes
// to lower-case ASCII; keys with upper-case letters or non-ASCII characters
// (the Kelvin sign folds to "k") are the ones to neutralize.
func keyNeedsCare(raw []byte) bool {
	if !foldable(raw[1 : len(raw)-1]) {
		return false // common case: nothing to decode
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return true
	}
	return foldable([]byte(s))
}

// foldable reports whether b holds an upper-case ASCII letter, a byte that
// is not ASCII, or an escape.
func foldable(b []byte) bool {
	for _, c := range b {
		if c == '\\' || c >= 0x80 || (c >= 'A' && c <= 'Z') {
			return true
		}
	}
	return false
}

// neutralKey replaces keys that must not match any field: it folds to no
// field name.
const neutralKey = `"!"`

// decodeJSON decodes body into v as encoding/json would, except that keys
// match field names exactly, and that a malformed or truncated body is
// decoded up to its fault: v then holds what came before it and the error
// wraps ErrInvalidJSON. A JSON value of the wrong type for a field leaves
// that field unset and is reported by the error; the rest is decoded.
func decodeJSON(body []byte, v any) error {
	sc := scanJSON(body)
	src := body
	if !sc.valid || len(sc.keys) > 0 {
		src = repairJSON(body, &sc)
	}
	var syntaxErr error
	if !sc.valid {
		var probe struct{}
		goErr := json.Unmarshal(body, &probe)
		if goErr == nil { // cannot happen: the scanner agrees with json.Valid
			goErr = errors.New("malformed")
		}
		kept := fmt.Sprintf("kept what came before byte %d", sc.cut)
		if sc.cut == 0 {
			kept = "nothing could be kept"
		}
		syntaxErr = fmt.Errorf("%w: %w (at byte %d; %s)", ErrInvalidJSON, goErr, sc.errAt, kept)
		if len(src) == 0 {
			return syntaxErr
		}
	}
	err := json.Unmarshal(src, v)
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		err = &fieldError{field: te.Field, value: te.Value, err: err}
	}
	return errors.Join(syntaxErr, err)
}

// fieldError reports a JSON value of the wrong type for a field.
type fieldError struct {
	field, value string
	err          error
}

func (e *fieldError) Error() string {
	if e.field == "" {
		return "the body holds a JSON " + e.value + ", not an object"
	}
	return fmt.Sprintf("field %q holds a JSON %s, which is not of the type the API takes there", e.field, e.value)
}

func (e *fieldError) Unwrap() error { return e.err }

// repairJSON returns the closable prefix of body, closed, with the keys
// that need care neutralized.
func repairJSON(body []byte, sc *jsonScan) []byte {
	if sc.cut == 0 && !sc.valid {
		return nil
	}
	out := make([]byte, 0, sc.cut+len(sc.stack)+8)
	prev := 0
	for _, k := range sc.keys {
		if k[1] > sc.cut {
			break
		}
		out = append(out, body[prev:k[0]]...)
		out = append(out, neutralKey...)
		prev = k[1]
	}
	out = append(out, body[prev:sc.cut]...)
	if sc.valid {
		return out
	}
	if sc.inString {
		out = append(out, '"')
	}
	for k := len(sc.stack) - 1; k >= 0; k-- {
		if sc.stack[k] == '{' {
			out = append(out, '}')
		} else {
			out = append(out, ']')
		}
	}
	return out
}

// The walkers below read well-formed JSON (what encoding/json hands an
// Unmarshaler) without reflection; on malformed input they stop early and
// never fail otherwise.

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// valueEnd returns the end of the JSON value that starts at b[i].
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		end, _, _ := scanString(b, i)
		return end
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i, _, _ = scanString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' &&
		b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
		i++
	}
	return i
}

// eachMember calls fn with the key (decoded) and the raw value of each
// member of the JSON object b, in order.
func eachMember(b []byte, fn func(key, value []byte)) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return
	}
	for i++; ; i++ {
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != '"' {
			return
		}
		kend, ok, _ := scanString(b, i)
		if !ok {
			return
		}
		key := b[i+1 : kend-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			s, _ := unquote(b[i:kend])
			key = []byte(s)
		}
		i = skipSpace(b, kend)
		if i >= len(b) || b[i] != ':' {
			return
		}
		start := skipSpace(b, i+1)
		end := valueEnd(b, start)
		if end <= start {
			return
		}
		fn(key, b[start:end])
		if i = skipSpace(b, end); i >= len(b) || b[i] != ',' {
			return
		}
	}
}

// eachElement calls fn with each element of the JSON array b, raw.
func eachElement(b []byte, fn func(value []byte)) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		return
	}
	for i++; ; i++ {
		start := skipSpace(b, i)
		end := valueEnd(b, start)
		if end <= start {
			return
		}
		fn(b[start:end])
		if i = skipSpace(b, end); i >= len(b) || b[i] != ',' {
			return
		}
	}
}

// stringValue decodes a JSON string; anything else is "".
func stringValue(v []byte) string {
	if len(v) == 0 || v[0] != '"' {
		return ""
	}
	s, _ := unquote(v)
	return s
}

// rawJSON holds a JSON value as a slice of the input being decoded, without
// copying it; it must not outlive the decoding call's input.
type rawJSON []byte

// UnmarshalJSON keeps b. encoding/json hands an Unmarshaler a slice of its
// input, which the parse functions keep alive while they use it.
func (r *rawJSON) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*r = nil
		return nil
	}
	*r = b
	return nil
}

// skipValue decodes nothing: a slice of them counts elements (embedding
// vectors, token arrays) without decoding them.
type skipValue struct{}

// UnmarshalJSON ignores b.
func (skipValue) UnmarshalJSON([]byte) error { return nil }

// flexString takes a JSON string, or the text of a number or boolean (error
// codes are sometimes numbers); null leaves it empty.
type flexString string

// UnmarshalJSON implements json.Unmarshaler.
func (f *flexString) UnmarshalJSON(b []byte) error {
	switch b[0] {
	case '"':
		s, err := unquote(b)
		*f = flexString(s)
		return err
	case 'n', '{', '[':
		*f = ""
	default:
		*f = flexString(b)
	}
	return nil
}

// unquote decodes a JSON string literal.
func unquote(b []byte) (string, error) {
	if len(b) >= 2 && b[0] == '"' && b[len(b)-1] == '"' {
		inner := b[1 : len(b)-1]
		simple := true
		for _, c := range inner {
			if c == '\\' || c == '"' || c < 0x20 {
				simple = false
				break
			}
		}
		if simple && utf8.Valid(inner) {
			return string(inner), nil
		}
	}
	var s string
	err := json.Unmarshal(b, &s)
	return s, err
}
