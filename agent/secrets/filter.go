package secrets

import (
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

// quickFilterLen bounds the part of K·S that the quick filter matches.
const quickFilterLen = 100

// quickFilter returns \A(?:the longest head of K·S's sequence of at most
// quickFilterLen bytes), if that is shorter than K·S: a smaller program that
// Go's regexp runs with its backtracker rather than its NFA, and that
// rejects most keyword hits (a keyword not followed by an operator, for
// the generic rules) before the whole filter runs.
func quickFilter(ks []elem, loosen func(*syntax.Regexp) *syntax.Regexp) (*regexp.Regexp, error) {
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
		return nil, nil
	}
	seq := concat([]*syntax.Regexp{concatElems(ks[:n]), headOf(ks[n].re)})
	head := loosen(unfold(stripCaptures(stripLeadingAssertions(seq))))
	return regexp.Compile(`\A(?:` + head.String() + `)`)
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

// present reports whether the required literals are in text after h.
func (c *component) present(text []byte, h int) bool {
	runEnd := -1
	for _, r := range c.required {
		end := len(text)
		if r.within != unbounded {
			end = min(end, h+r.within)
		} else {
			// A match does not reach past a byte that K·S cannot match.
			if runEnd < 0 {
				for runEnd = h; runEnd < len(text) && c.ksSet.has(text[runEnd]); runEnd++ {
				}
			}
			end = runEnd
		}
		if indexFold(text[h:end], r.lit) < 0 {
			return false
		}
	}
	return true
}

// indexFold is the index of lit (lower-case ASCII) in b, ignoring ASCII
// case, or -1.
func indexFold(b []byte, lit string) int {
	first := lit[0]
	for i := 0; i+len(lit) <= len(b); i++ {
		if c := b[i] | 0x20; c != first && b[i] != first {
			continue
		}
		j := 1
		for j < len(lit) && (b[i+j] == lit[j] || 'a' <= lit[j] && lit[j] <= 'z' && b[i+j]|0x20 == lit[j]) {
			j++
		}
		if j == len(lit) {
			return i
		}
	}
	return -1
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
