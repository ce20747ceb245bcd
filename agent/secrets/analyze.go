package secrets

import (
	"regexp/syntax"
	"strings"
	"unicode"
	"unicode/utf8"
)

// This file derives, from a rule's parsed regular expression
// (regexp/syntax), what the engine needs to evaluate the rule only near
// keyword hits: the longest match, the bytes a match can contain, the
// literal prefixes every match of a sub-expression starts with, and the
// prefix language used by Pending.

// unbounded is the length of a sub-expression without a longest match.
const unbounded = -1

// setLimit bounds the literal sets computed by exactSet and prefixSet.
const setLimit = 64

// byteSet is a set of bytes.
type byteSet [4]uint64

func (s *byteSet) add(b byte)      { s[b>>6] |= 1 << (b & 63) }
func (s *byteSet) has(b byte) bool { return s[b>>6]&(1<<(b&63)) != 0 }
func (s *byteSet) union(o byteSet) {
	s[0], s[1], s[2], s[3] = s[0]|o[0], s[1]|o[1], s[2]|o[2], s[3]|o[3]
}
func (s *byteSet) addRange(lo, hi byte) {
	for b := int(lo); b <= int(hi); b++ {
		s.add(byte(b))
	}
}

// addLen adds two lengths, either of which may be unbounded.
func addLen(a, b int) int {
	if a == unbounded || b == unbounded {
		return unbounded
	}
	return a + b
}

// runeWidth is the longest UTF-8 encoding of r or, if fold, of any rune in
// its case-folding orbit.
func runeWidth(r rune, fold bool) int {
	w := utf8.RuneLen(r)
	if w < 0 {
		w = 3 // invalid runes are matched as U+FFFD
	}
	if fold {
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			w = max(w, utf8.RuneLen(f))
		}
	}
	return w
}

// maxLen returns the length in bytes of the longest match of re, or
// unbounded.
func maxLen(re *syntax.Regexp) int {
	switch re.Op {
	case syntax.OpLiteral:
		n := 0
		for _, r := range re.Rune {
			n += runeWidth(r, re.Flags&syntax.FoldCase != 0)
		}
		return n
	case syntax.OpCharClass:
		if len(re.Rune) == 0 {
			return 0
		}
		return runeWidth(re.Rune[len(re.Rune)-1], false)
	case syntax.OpAnyChar, syntax.OpAnyCharNotNL:
		return utf8.UTFMax
	case syntax.OpCapture, syntax.OpQuest:
		return maxLen(re.Sub[0])
	case syntax.OpStar, syntax.OpPlus:
		if maxLen(re.Sub[0]) == 0 {
			return 0
		}
		return unbounded
	case syntax.OpRepeat:
		n := maxLen(re.Sub[0])
		if n == 0 || n == unbounded {
			return n
		}
		if re.Max < 0 {
			return unbounded
		}
		return re.Max * n
	case syntax.OpConcat:
		n := 0
		for _, s := range re.Sub {
			n = addLen(n, maxLen(s))
		}
		return n
	case syntax.OpAlternate:
		n := 0
		for _, s := range re.Sub {
			m := maxLen(s)
			if m == unbounded {
				return unbounded
			}
			n = max(n, m)
		}
		return n
	}
	return 0 // empty-width assertions, OpEmptyMatch, OpNoMatch
}

// bytesOf returns the bytes that can occur in a match of re. Non-ASCII
// runes add every byte from 0x80 up (their encodings, and invalid bytes
// that match as U+FFFD).
func bytesOf(re *syntax.Regexp) byteSet {
	var s byteSet
	addRune := func(r rune) {
		if r < utf8.RuneSelf {
			s.add(byte(r))
		} else {
			s.addRange(0x80, 0xff)
		}
	}
	switch re.Op {
	case syntax.OpLiteral:
		for _, r := range re.Rune {
			addRune(r)
			if re.Flags&syntax.FoldCase != 0 {
				for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
					addRune(f)
				}
			}
		}
	case syntax.OpCharClass:
		for i := 0; i+1 < len(re.Rune); i += 2 {
			lo, hi := re.Rune[i], re.Rune[i+1]
			if lo < utf8.RuneSelf {
				s.addRange(byte(lo), byte(min(hi, utf8.RuneSelf-1)))
			}
			if hi >= utf8.RuneSelf {
				addRune(hi)
			}
		}
	case syntax.OpAnyChar:
		s.addRange(0, 0xff)
	case syntax.OpAnyCharNotNL:
		s.addRange(0, 0xff)
		s[0] &^= 1 << '\n'
	default:
		for _, sub := range re.Sub {
			s.union(bytesOf(sub))
		}
	}
	return s
}

// isAssertion reports whether re is an empty-width assertion.
func isAssertion(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpBeginLine, syntax.OpEndLine, syntax.OpBeginText, syntax.OpEndText,
		syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return true
	}
	return false
}

// lowerASCII lower-cases the ASCII letters of s.
func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// cross returns every a+b, or false if there would be more than setLimit.
func cross(as, bs []string) ([]string, bool) {
	if len(as)*len(bs) > setLimit {
		return nil, false
	}
	out := make([]string, 0, len(as)*len(bs))
	seen := make(map[string]bool, len(as)*len(bs))
	for _, a := range as {
		for _, b := range bs {
			if !seen[a+b] {
				seen[a+b] = true
				out = append(out, a+b)
			}
		}
	}
	return out, true
}

// exactSet returns every string re matches, ASCII-lower-cased, if they are
// few and re has no non-ASCII character class.
func exactSet(re *syntax.Regexp) ([]string, bool) {
	switch re.Op {
	case syntax.OpLiteral:
		return []string{lowerASCII(string(re.Rune))}, true
	case syntax.OpCharClass:
		var out []string
		seen := map[string]bool{}
		for i := 0; i+1 < len(re.Rune); i += 2 {
			if re.Rune[i+1] >= utf8.RuneSelf || len(out)+int(re.Rune[i+1]-re.Rune[i]) >= setLimit {
				return nil, false
			}
			for r := re.Rune[i]; r <= re.Rune[i+1]; r++ {
				if s := lowerASCII(string(r)); !seen[s] {
					seen[s] = true
					out = append(out, s)
				}
			}
		}
		return out, len(out) > 0
	case syntax.OpEmptyMatch:
		return []string{""}, true
	case syntax.OpCapture:
		return exactSet(re.Sub[0])
	case syntax.OpQuest:
		s, ok := exactSet(re.Sub[0])
		return append(s, ""), ok && len(s) < setLimit
	case syntax.OpRepeat:
		if re.Max < 0 || re.Max > 4 {
			return nil, false
		}
		s, ok := exactSet(re.Sub[0])
		if !ok {
			return nil, false
		}
		var out []string
		cur := []string{""}
		for i := 0; i <= re.Max; i++ {
			if i >= re.Min {
				out = append(out, cur...)
			}
			if cur, ok = cross(cur, s); !ok || len(out) > setLimit {
				return nil, false
			}
		}
		return out, true
	case syntax.OpConcat:
		out := []string{""}
		for _, sub := range re.Sub {
			s, ok := exactSet(sub)
			if !ok {
				return nil, false
			}
			if out, ok = cross(out, s); !ok {
				return nil, false
			}
		}
		return out, true
	case syntax.OpAlternate:
		var out []string
		for _, sub := range re.Sub {
			s, ok := exactSet(sub)
			if !ok || len(out)+len(s) > setLimit {
				return nil, false
			}
			out = append(out, s...)
		}
		return out, true
	}
	if isAssertion(re) {
		return []string{""}, true
	}
	return nil, false
}

// prefixSet returns strings, ASCII-lower-cased, one of which every match of
// re starts with (case-insensitively). The set {""} says nothing.
func prefixSet(re *syntax.Regexp) []string {
	if s, ok := exactSet(re); ok {
		return s
	}
	switch re.Op {
	case syntax.OpCapture, syntax.OpPlus:
		return prefixSet(re.Sub[0])
	case syntax.OpRepeat:
		if re.Min > 0 {
			return prefixSet(re.Sub[0])
		}
	case syntax.OpConcat:
		out := []string{""}
		for _, sub := range re.Sub {
			if s, ok := exactSet(sub); ok {
				if next, ok := cross(out, s); ok {
					out = next
					continue
				}
			}
			if next, ok := cross(out, prefixSet(sub)); ok {
				out = next
			}
			break
		}
		return out
	case syntax.OpAlternate:
		var out []string
		for _, sub := range re.Sub {
			out = append(out, prefixSet(sub)...)
		}
		return out
	}
	return []string{""}
}

// startsWithAny reports whether every string in set starts with one of the
// keywords.
func startsWithAny(set, keywords []string) bool {
	for _, s := range set {
		ok := false
		for _, k := range keywords {
			if k != "" && strings.HasPrefix(s, k) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return len(set) > 0
}

// elem is an element of a flattened sequence; inCapture says whether it
// was inside a capture group.
type elem struct {
	re        *syntax.Regexp
	inCapture bool
}

// flatten returns the top-level sequence of re: the elements of nested
// concatenations, with capture groups opened.
func flatten(re *syntax.Regexp, inCapture bool) []elem {
	switch re.Op {
	case syntax.OpConcat:
		var out []elem
		for _, sub := range re.Sub {
			out = append(out, flatten(sub, inCapture)...)
		}
		return out
	case syntax.OpCapture:
		return flatten(re.Sub[0], true)
	}
	return []elem{{re, inCapture}}
}

// concatElems returns the concatenation of elems.
func concatElems(elems []elem) *syntax.Regexp {
	res := make([]*syntax.Regexp, len(elems))
	for i, e := range elems {
		res[i] = e.re
	}
	return concat(res)
}

// concat returns the concatenation of elems.
func concat(elems []*syntax.Regexp) *syntax.Regexp {
	switch len(elems) {
	case 0:
		return &syntax.Regexp{Op: syntax.OpEmptyMatch}
	case 1:
		return elems[0]
	}
	return &syntax.Regexp{Op: syntax.OpConcat, Sub: elems}
}

// transform returns a copy of re in which every node has been replaced by
// f(copy of the node with transformed children).
func transform(re *syntax.Regexp, f func(*syntax.Regexp) *syntax.Regexp) *syntax.Regexp {
	c := *re
	c.Sub = make([]*syntax.Regexp, len(re.Sub))
	for i, s := range re.Sub {
		c.Sub[i] = transform(s, f)
	}
	c.Sub0 = [1]*syntax.Regexp{}
	return f(&c)
}

// stripCaptures removes capture groups (they do not change what matches).
func stripCaptures(re *syntax.Regexp) *syntax.Regexp {
	return transform(re, func(n *syntax.Regexp) *syntax.Regexp {
		if n.Op == syntax.OpCapture {
			return n.Sub[0]
		}
		return n
	})
}

// unfold rewrites case-insensitive literals as character classes, which
// Go's regexp matches without calling unicode.SimpleFold for each rune (a
// large part of the cost of matching (?i) literals).
func unfold(re *syntax.Regexp) *syntax.Regexp {
	return transform(re, func(n *syntax.Regexp) *syntax.Regexp {
		if n.Op != syntax.OpLiteral || n.Flags&syntax.FoldCase == 0 {
			return n
		}
		subs := make([]*syntax.Regexp, len(n.Rune))
		for i, r := range n.Rune {
			class := []rune{r, r}
			for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
				class = append(class, f, f)
			}
			subs[i] = &syntax.Regexp{Op: syntax.OpCharClass, Flags: n.Flags &^ syntax.FoldCase, Rune: sortClass(class)}
		}
		if len(subs) == 1 {
			return subs[0]
		}
		return &syntax.Regexp{Op: syntax.OpConcat, Flags: n.Flags &^ syntax.FoldCase, Sub: subs}
	})
}

// loosen replaces counted repetitions with a large maximum, x{n,m}, by
// x{n,}: the result matches at least what re matches, and Go's regexp runs
// it with far fewer threads (one per count otherwise). Filters, which only
// need to reject, use it.
func loosen(re *syntax.Regexp) *syntax.Regexp {
	return transform(re, func(n *syntax.Regexp) *syntax.Regexp {
		if n.Op == syntax.OpRepeat && n.Max > 4 {
			n.Max = -1
		}
		return n
	})
}

// sortClass sorts the ranges of a character class by their low end.
func sortClass(class []rune) []rune {
	for i := 2; i < len(class); i += 2 {
		for j := i; j >= 2 && class[j] < class[j-2]; j -= 2 {
			class[j], class[j-2] = class[j-2], class[j]
			class[j+1], class[j-1] = class[j-1], class[j+1]
		}
	}
	return class
}

// stripAssertions replaces every empty-width assertion by the empty match:
// the result matches everything re matches, in any context.
func stripAssertions(re *syntax.Regexp) *syntax.Regexp {
	return transform(re, func(n *syntax.Regexp) *syntax.Regexp {
		if isAssertion(n) {
			return &syntax.Regexp{Op: syntax.OpEmptyMatch}
		}
		return n
	})
}

// nullableBare reports whether re matches the empty string without relying
// on an assertion.
func nullableBare(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpEmptyMatch, syntax.OpStar, syntax.OpQuest:
		return true
	case syntax.OpCapture, syntax.OpPlus:
		return nullableBare(re.Sub[0])
	case syntax.OpRepeat:
		return re.Min == 0 || nullableBare(re.Sub[0])
	case syntax.OpConcat:
		for _, s := range re.Sub {
			if !nullableBare(s) {
				return false
			}
		}
		return true
	case syntax.OpAlternate:
		for _, s := range re.Sub {
			if nullableBare(s) {
				return true
			}
		}
	}
	return false
}

// has reports whether some node of re satisfies f.
func has(re *syntax.Regexp, f func(*syntax.Regexp) bool) bool {
	if f(re) {
		return true
	}
	for _, s := range re.Sub {
		if has(s, f) {
			return true
		}
	}
	return false
}

// prefixLang returns an expression for the prefixes of the matches of re
// (every string that some match of re starts with, the empty string
// included), with assertions dropped so that it over-approximates in any
// context. re must have no assertions and no capture groups.
func prefixLang(re *syntax.Regexp) *syntax.Regexp {
	empty := &syntax.Regexp{Op: syntax.OpEmptyMatch}
	alt := func(subs ...*syntax.Regexp) *syntax.Regexp {
		return &syntax.Regexp{Op: syntax.OpAlternate, Sub: subs}
	}
	cat := func(subs ...*syntax.Regexp) *syntax.Regexp {
		return &syntax.Regexp{Op: syntax.OpConcat, Sub: subs}
	}
	switch re.Op {
	case syntax.OpLiteral:
		// (a(b(c)?)?)?
		var out *syntax.Regexp = empty
		for i := len(re.Rune) - 1; i >= 0; i-- {
			lit := &syntax.Regexp{Op: syntax.OpLiteral, Flags: re.Flags, Rune: []rune{re.Rune[i]}}
			out = alt(cat(lit, out), empty)
		}
		return out
	case syntax.OpCharClass, syntax.OpAnyChar, syntax.OpAnyCharNotNL:
		return alt(re, empty)
	case syntax.OpStar, syntax.OpPlus:
		return cat(&syntax.Regexp{Op: syntax.OpStar, Flags: re.Flags, Sub: []*syntax.Regexp{re.Sub[0]}}, prefixLang(re.Sub[0]))
	case syntax.OpQuest:
		return prefixLang(re.Sub[0])
	case syntax.OpRepeat:
		if re.Max == 0 {
			return empty
		}
		rep := &syntax.Regexp{Op: syntax.OpRepeat, Flags: re.Flags, Min: 0, Max: re.Max - 1, Sub: []*syntax.Regexp{re.Sub[0]}}
		if re.Max < 0 {
			rep = &syntax.Regexp{Op: syntax.OpStar, Flags: re.Flags, Sub: []*syntax.Regexp{re.Sub[0]}}
		}
		return cat(rep, prefixLang(re.Sub[0]))
	case syntax.OpConcat:
		if len(re.Sub) == 0 {
			return empty
		}
		rest := concat(re.Sub[1:])
		return alt(prefixLang(re.Sub[0]), cat(re.Sub[0], prefixLang(rest)))
	case syntax.OpAlternate:
		subs := make([]*syntax.Regexp, len(re.Sub))
		for i, s := range re.Sub {
			subs[i] = prefixLang(s)
		}
		return alt(subs...)
	}
	return empty
}

// prefixPlus is prefixLang without the empty string: the non-empty
// prefixes of the matches of re (no assertions, no captures).
func prefixPlus(re *syntax.Regexp) *syntax.Regexp {
	alt := func(subs ...*syntax.Regexp) *syntax.Regexp {
		return &syntax.Regexp{Op: syntax.OpAlternate, Sub: subs}
	}
	cat := func(subs ...*syntax.Regexp) *syntax.Regexp {
		return &syntax.Regexp{Op: syntax.OpConcat, Sub: subs}
	}
	switch re.Op {
	case syntax.OpLiteral:
		if len(re.Rune) == 0 {
			break
		}
		first := &syntax.Regexp{Op: syntax.OpLiteral, Flags: re.Flags, Rune: re.Rune[:1]}
		rest := &syntax.Regexp{Op: syntax.OpLiteral, Flags: re.Flags, Rune: re.Rune[1:]}
		return cat(first, prefixLang(rest))
	case syntax.OpCharClass, syntax.OpAnyChar, syntax.OpAnyCharNotNL:
		return re
	case syntax.OpStar, syntax.OpPlus:
		return cat(&syntax.Regexp{Op: syntax.OpStar, Flags: re.Flags, Sub: []*syntax.Regexp{re.Sub[0]}}, prefixPlus(re.Sub[0]))
	case syntax.OpQuest:
		return prefixPlus(re.Sub[0])
	case syntax.OpRepeat:
		if re.Max == 0 {
			break
		}
		rep := &syntax.Regexp{Op: syntax.OpRepeat, Flags: re.Flags, Min: 0, Max: re.Max - 1, Sub: []*syntax.Regexp{re.Sub[0]}}
		if re.Max < 0 {
			rep = &syntax.Regexp{Op: syntax.OpStar, Flags: re.Flags, Sub: []*syntax.Regexp{re.Sub[0]}}
		}
		return cat(rep, prefixPlus(re.Sub[0]))
	case syntax.OpConcat:
		if len(re.Sub) == 0 {
			break
		}
		if len(re.Sub) == 1 {
			return prefixPlus(re.Sub[0])
		}
		return alt(prefixPlus(re.Sub[0]), cat(re.Sub[0], prefixPlus(concat(re.Sub[1:]))))
	case syntax.OpAlternate:
		subs := make([]*syntax.Regexp, len(re.Sub))
		for i, s := range re.Sub {
			subs[i] = prefixPlus(s)
		}
		return alt(subs...)
	}
	return &syntax.Regexp{Op: syntax.OpNoMatch}
}
