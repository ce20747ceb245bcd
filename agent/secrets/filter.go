package secrets

import (
	"bytes"
	"regexp"
	"regexp/syntax"
	"strings"
)

// This file has the cheap checks that run at a keyword hit before a
// component's filter (K·S anchored at the hit): literals that every match
// contains, a byte-level gate, and a quick filter on a head of K·S.

// A gate is a byte-level necessary condition checked before the filter:
// after the keyword (the first element of K·S, a set of literals of
// lengths from..from+slack), a run of at most limit bytes of skip (the
// optional elements that follow) and then a byte of first (the first byte
// of the next, required element). For gitleaks' generic rules: a keyword
// followed, within 23 word or space bytes, by an operator (= : > | , ?).
type gate struct {
	on          bool
	from, slack int
	limit       int
	skip, first byteSet
}

func newGate(ks []elem) gate {
	var g gate
	set, ok := exactSet(ks[0].re)
	if !ok || len(ks) < 2 {
		return g
	}
	g.from = minLen(set)
	for _, s := range set {
		g.slack = max(g.slack, len(s)-g.from)
	}
	i := 1
	for ; i < len(ks) && isOptional(ks[i].re); i++ {
		m := maxLen(ks[i].re)
		if m == unbounded || has(ks[i].re, isAssertion) {
			return gate{}
		}
		g.limit += m
		g.skip.union(bytesOf(ks[i].re))
	}
	if i == len(ks) {
		return gate{}
	}
	first, ok := firstBytes(ks[i].re)
	if !ok {
		return gate{}
	}
	g.on, g.first = true, first
	return g
}

// isOptional reports whether re is x?, x* or x{0,n}.
func isOptional(re *syntax.Regexp) bool {
	return re.Op == syntax.OpQuest || re.Op == syntax.OpStar || re.Op == syntax.OpRepeat && re.Min == 0
}

// firstBytes returns the bytes a match of re can start with, if re cannot
// match the empty string.
func firstBytes(re *syntax.Regexp) (byteSet, bool) {
	switch re.Op {
	case syntax.OpLiteral, syntax.OpCharClass:
		first := *re
		if re.Op == syntax.OpLiteral {
			first.Rune = re.Rune[:1]
		}
		return bytesOf(unfold(&first)), len(re.Rune) > 0
	case syntax.OpCapture, syntax.OpPlus:
		return firstBytes(re.Sub[0])
	case syntax.OpRepeat:
		if re.Min > 0 {
			return firstBytes(re.Sub[0])
		}
	case syntax.OpConcat:
		if len(re.Sub) > 0 {
			return firstBytes(re.Sub[0])
		}
	case syntax.OpAlternate:
		var out byteSet
		for _, s := range re.Sub {
			f, ok := firstBytes(s)
			if !ok {
				return out, false
			}
			out.union(f)
		}
		return out, true
	}
	return byteSet{}, false
}

// open reports whether the gate lets a keyword hit at h through.
func (g *gate) open(text []byte, h int) bool {
	if !g.on {
		return true
	}
	from := h + g.from
	end := min(len(text), from+g.slack+g.limit+1)
	for p := from; p < end; p++ {
		if g.first.has(text[p]) {
			return true
		}
		if !g.skip.has(text[p]) && p >= from+g.slack {
			return false
		}
	}
	return false
}

// mayOpen is open for a text that may go on: true if the text ends before
// the gate could tell.
func (g *gate) mayOpen(text []byte, h int) bool {
	return !g.on || g.open(text, h) || h+g.from+g.slack+g.limit+1 > len(text)
}

// quickFilterLen bounds the part of K·S that the quick filter matches.
const quickFilterLen = 100

// quickFilter returns \A(?:the longest head of K·S's sequence of at most
// quickFilterLen bytes), if that is shorter than K·S: a smaller program that
// Go's regexp runs with its backtracker rather than its NFA, and that
// rejects most keyword hits (a keyword not followed by an operator, for
// the generic rules) before the whole filter runs.
// It also returns the longest match of the head: the quick filter reads
// no more than that (and a byte of context).
func quickFilter(ks []elem, loosen func(*syntax.Regexp) *syntax.Regexp) (*regexp.Regexp, int, error) {
	n, size := 0, 0
	for n < len(ks) {
		m := maxLen(ks[n].re)
		if m == unbounded || size+m > quickFilterLen {
			break
		}
		size += m
		n++
	}
	if n <= 1 || n == len(ks) {
		return nil, 0, nil
	}
	seq := concat([]*syntax.Regexp{concatElems(ks[:n]), headOf(ks[n].re)})
	head := loosen(unfold(stripCaptures(stripLeadingAssertions(seq))))
	re, err := regexp.Compile(`\A(?:` + head.String() + `)`)
	return re, maxLen(seq), err
}

// headOf returns an expression that matches a prefix of every match of re
// (x{n} for x{n,m}): what the quick filter requires of the first element
// it cannot include whole.
func headOf(re *syntax.Regexp) *syntax.Regexp {
	switch re.Op {
	case syntax.OpLiteral, syntax.OpCharClass, syntax.OpAnyChar, syntax.OpAnyCharNotNL:
		return re
	case syntax.OpCapture:
		return headOf(re.Sub[0])
	case syntax.OpPlus:
		return re.Sub[0]
	case syntax.OpRepeat:
		if re.Min > 0 && re.Min <= 32 {
			return &syntax.Regexp{Op: syntax.OpRepeat, Flags: re.Flags, Min: re.Min, Max: re.Min, Sub: re.Sub}
		}
	case syntax.OpConcat:
		if len(re.Sub) > 0 {
			return headOf(re.Sub[0])
		}
	case syntax.OpAlternate:
		subs := make([]*syntax.Regexp, len(re.Sub))
		for i, s := range re.Sub {
			subs[i] = headOf(s)
		}
		return &syntax.Regexp{Op: syntax.OpAlternate, Sub: subs}
	}
	return &syntax.Regexp{Op: syntax.OpEmptyMatch}
}

// requiredLiteral is a literal that every match of K·S contains, at most
// within bytes of the keyword hit (unbounded: anywhere after it).
type requiredLiteral struct {
	lit    string // ASCII-lower-cased
	within int
}

// requiredLiterals returns the literals of 3 bytes or more of the top-level
// sequence of K·S (after its first element), which the filter looks for
// before it runs: Go's regexp runs counted repetitions such as .{0,200}
// one thread per count, and most keyword hits lack the literal.
func requiredLiterals(ks []elem) []requiredLiteral {
	var out []requiredLiteral
	off := 0
	for i, e := range ks {
		if i > 0 && e.re.Op == syntax.OpLiteral {
			lit := string(e.re.Rune)
			folded := e.re.Flags&syntax.FoldCase != 0 && strings.ContainsAny(lowerASCII(lit), "ks")
			if len(lit) >= 3 && isASCII(lit) && !folded {
				within := unbounded
				if off != unbounded {
					within = off + len(lit)
				}
				out = append(out, requiredLiteral{lowerASCII(lit), within})
			}
		}
		off = addLen(off, maxLen(e.re))
	}
	return out
}

// scanState memoizes, for one component during one Find (whose hits come
// in increasing order), the run of K·S bytes around the current hit and
// where each required literal next occurs, so that the checks at
// successive hits read the text about once.
type scanState struct {
	runFrom, runEnd int   // text[runFrom:runEnd] are bytes of K·S, text[runEnd] is not
	next            []int // next occurrence of each required literal, len(text) if none
	nextFrom        []int // where that search started
}

func newScanState(c *component) *scanState {
	st := &scanState{runFrom: -1, next: make([]int, len(c.required)), nextFrom: make([]int, len(c.required))}
	for i := range st.nextFrom {
		st.nextFrom[i] = -1
	}
	return st
}

// runEndAt is the end of the run of K·S bytes from h: a match whose K·S
// part starts at h ends there at the latest.
func (st *scanState) runEndAt(c *component, text []byte, h int) int {
	if h >= st.runFrom && h < st.runEnd {
		return st.runEnd
	}
	j := h
	for j < len(text) && c.ksSet.has(text[j]) {
		j++
	}
	st.runFrom, st.runEnd = h, j
	return j
}

// present reports whether the required literals are in text after h,
// close enough. A literal within a bounded distance is looked for there;
// one that may be anywhere in the run of K·S bytes is looked for once
// and its next occurrence remembered.
func (c *component) present(text []byte, h int, st *scanState) bool {
	for i, r := range c.required {
		if r.within != unbounded {
			if indexFold(text[h:min(len(text), h+r.within)], r.lit) < 0 {
				return false
			}
			continue
		}
		if st.nextFrom[i] < 0 || st.next[i] < h {
			st.nextFrom[i], st.next[i] = h, len(text)
			if k := indexFold(text[h:], r.lit); k >= 0 {
				st.next[i] = h + k
			}
		}
		if st.next[i]+len(r.lit) > st.runEndAt(c, text, h) {
			return false
		}
	}
	return true
}

// indexFold is the index of lit (lower-case ASCII) in b, ignoring ASCII
// case, or -1. It skips to candidates for the first byte with
// bytes.IndexByte.
func indexFold(b []byte, lit string) int {
	first, other := lit[0], lit[0]
	if 'a' <= first && first <= 'z' {
		other = first - 'a' + 'A'
	}
	for i := 0; i+len(lit) <= len(b); {
		j := bytes.IndexByte(b[i:len(b)-len(lit)+1], first)
		if other != first {
			if k := bytes.IndexByte(b[i:len(b)-len(lit)+1], other); k >= 0 && (j < 0 || k < j) {
				j = k
			}
		}
		if j < 0 {
			return -1
		}
		i += j
		if equalFold(b[i:i+len(lit)], lit) {
			return i
		}
		i++
	}
	return -1
}

// equalFold reports whether b equals lit (lower-case ASCII) ignoring ASCII
// case.
func equalFold(b []byte, lit string) bool {
	for j := range len(lit) {
		c := b[j]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lit[j] {
			return false
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
