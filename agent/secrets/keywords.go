package secrets

import (
	"bytes"
	"slices"
	"strings"
)

// keywordIndex is the Aho-Corasick prefilter over the keywords of all
// rules, matched ASCII-case-insensitively. It is compiled into a complete
// DFA over byte classes: one load from a table of 16-bit entries per input
// byte (while the table fits), states with output numbered last so that a
// comparison tells whether a keyword ends. This measured several times
// faster than walking github.com/BobuSumisu/aho-corasick's trie (which
// follows fail links at run time and has 2 KiB of transitions per state)
// over a lower-cased copy of the text.
//
// Go's case-insensitive regexps also match U+212A KELVIN SIGN for k and
// U+017F LATIN SMALL LETTER LONG S for s, and gitleaks lower-cases text with
// strings.ToLower (which maps U+212A to k) before its keyword check, so a
// text that has those runes is scanned as a copy with k and s in their
// place. (Adding keyword variants with those runes instead doubled the
// automaton and halved its speed.)
type keywordIndex struct {
	class  [256]byte // byte -> class; ASCII upper-case letters share the lower-case class
	nclass int
	// tab16 (or tab32 if the automaton is too large) is the transition
	// table: the next state of state s (premultiplied by nclass) on byte b
	// is tab[s+class[b]]. States from outStart up are those at which
	// keywords end.
	tab16    []uint16
	tab32    []uint32
	outStart int
	// Per state (not premultiplied): the keywords that end there, the
	// fail link, the depth, and the keywords of which the state's string
	// is a proper prefix (for Pending).
	out      [][]int32
	fail     []int32
	depth    []int
	prefixes [][]int32
	kwLen    []int
	maxLen   int
}

// newKeywordIndex builds the index over keywords (lower-case, non-empty).
func newKeywordIndex(keywords []string) *keywordIndex {
	ix := &keywordIndex{}
	var used [256]bool
	for _, kw := range keywords {
		ix.kwLen = append(ix.kwLen, len(kw))
		ix.maxLen = max(ix.maxLen, len(kw))
		for i := 0; i < len(kw); i++ {
			used[kw[i]] = true
		}
	}
	// One class per distinct byte of the keywords, class 0 for the rest.
	ix.nclass = 1
	for b := 0; b < 256; b++ {
		if used[b] && !('A' <= b && b <= 'Z') {
			ix.class[b] = byte(ix.nclass)
			ix.nclass++
		}
	}
	for b := 'A'; b <= 'Z'; b++ {
		ix.class[b] = ix.class[b+'a'-'A']
	}
	t := buildTrie(keywords, &ix.class)
	ix.compile(t)
	ix.indexPrefixes(keywords)
	return ix
}

// trie is the keyword trie with fail links and complete transitions, in
// breadth-first numbering.
type trie struct {
	next  []map[byte]int32
	out   [][]int32
	depth []int
	fail  []int32
}

func buildTrie(keywords []string, class *[256]byte) *trie {
	t := &trie{next: []map[byte]int32{{}}, out: [][]int32{nil}, depth: []int{0}}
	for k, kw := range keywords {
		cur := int32(0)
		for i := 0; i < len(kw); i++ {
			c := class[kw[i]]
			nx, ok := t.next[cur][c]
			if !ok {
				nx = int32(len(t.next))
				t.next = append(t.next, map[byte]int32{})
				t.out = append(t.out, nil)
				t.depth = append(t.depth, i+1)
				t.next[cur][c] = nx
			}
			cur = nx
		}
		t.out[cur] = append(t.out[cur], int32(k))
	}
	return t
}

// compile computes fail links breadth first, the complete transitions,
// and the renumbered table.
func (ix *keywordIndex) compile(t *trie) {
	n, nc := len(t.next), ix.nclass
	delta := make([]int32, n*nc)
	t.fail = make([]int32, n)
	order := []int32{0}
	for q := 0; q < len(order); q++ {
		s := order[q]
		for c := 0; c < nc; c++ {
			if nx, ok := t.next[s][byte(c)]; ok {
				if s != 0 {
					t.fail[nx] = delta[int(t.fail[s])*nc+c]
				}
				delta[int(s)*nc+c] = nx
				order = append(order, nx)
			} else if s != 0 {
				delta[int(s)*nc+c] = delta[int(t.fail[s])*nc+c]
			}
		}
		if s != 0 {
			// The fail state is shallower: its outputs are complete.
			t.out[s] = append(t.out[s], t.out[t.fail[s]]...)
		}
	}
	// Renumber: states without output first (the root stays 0).
	perm := make([]int32, n)
	next := int32(0)
	for pass := 0; pass < 2; pass++ {
		for _, s := range order {
			if (len(t.out[s]) > 0) == (pass == 1) {
				perm[s] = next
				next++
			}
			if pass == 0 && len(t.out[s]) == 0 {
				ix.outStart++
			}
		}
	}
	ix.outStart *= nc
	ix.out, ix.fail, ix.depth = make([][]int32, n), make([]int32, n), make([]int, n)
	tab := make([]uint32, n*nc)
	for s := 0; s < n; s++ {
		p := int(perm[s])
		ix.out[p], ix.fail[p], ix.depth[p] = t.out[s], perm[t.fail[s]], t.depth[s]
		for c := 0; c < nc; c++ {
			tab[p*nc+c] = uint32(perm[delta[s*nc+c]]) * uint32(nc)
		}
	}
	if len(tab) <= 1<<16 {
		ix.tab16 = make([]uint16, len(tab))
		for i, v := range tab {
			ix.tab16[i] = uint16(v)
		}
	} else {
		ix.tab32 = tab
	}
}

// step returns the state after s (premultiplied) on byte b.
func (ix *keywordIndex) step(s int, b byte) int {
	if ix.tab16 != nil {
		return int(ix.tab16[s+int(ix.class[b])])
	}
	return int(ix.tab32[s+int(ix.class[b])])
}

// indexPrefixes records, for every state, the keywords that have its
// string as a proper prefix.
func (ix *keywordIndex) indexPrefixes(keywords []string) {
	ix.prefixes = make([][]int32, len(ix.depth))
	for k, kw := range keywords {
		s := 0
		for i := 0; i+1 < len(kw); i++ {
			s = ix.step(s, kw[i])
			st := s / ix.nclass
			if !slices.Contains(ix.prefixes[st], int32(k)) {
				ix.prefixes[st] = append(ix.prefixes[st], int32(k))
			}
		}
	}
}

// scan calls hit(start, end, keyword) for every occurrence of every keyword
// in text, in order of end position.
func (ix *keywordIndex) scan(text []byte, hit func(start, end, keyword int)) {
	if norm, orig := foldSpecial(text); norm != nil {
		ix.scanBytes(norm, func(start, end, k int) { hit(orig[start], orig[end], k) })
		return
	}
	ix.scanBytes(text, hit)
}

const (
	kelvin = "\u212a" // matches k in (?i) regexps; strings.ToLower gives k
	longS  = "\u017f" // matches s in (?i) regexps
)

// foldSpecial returns, if text has U+212A or U+017F, a copy with k and s
// in their place and the offset in text of each byte of the copy (and of
// its end); nil otherwise.
func foldSpecial(text []byte) ([]byte, []int) {
	if !bytes.Contains(text, []byte(kelvin)) && !bytes.Contains(text, []byte(longS)) {
		return nil, nil
	}
	norm := make([]byte, 0, len(text))
	orig := make([]int, 0, len(text)+1)
	for i := 0; i < len(text); {
		switch {
		case bytes.HasPrefix(text[i:], []byte(kelvin)):
			norm, orig = append(norm, 'k'), append(orig, i)
			i += len(kelvin)
		case bytes.HasPrefix(text[i:], []byte(longS)):
			norm, orig = append(norm, 's'), append(orig, i)
			i += len(longS)
		default:
			norm, orig = append(norm, text[i]), append(orig, i)
			i++
		}
	}
	return norm, append(orig, len(text))
}

func (ix *keywordIndex) scanBytes(text []byte, hit func(start, end, keyword int)) {
	if ix.tab16 == nil || len(text) < 4096 {
		ix.scanRange(text, 0, 0, len(text), hit)
		return
	}
	ix.scan4(text, hit)
}

// scanRange scans text[from:to] from the root state and reports the
// keywords that end after report.
func (ix *keywordIndex) scanRange(text []byte, from, report, to int, hit func(start, end, keyword int)) {
	s := 0
	for i := from; i < to; i++ {
		if s = ix.step(s, text[i]); s >= ix.outStart && i+1 > report {
			ix.emit(i+1, s, hit)
		}
	}
}

// scan4 scans four quarters of text in one loop: four independent chains
// of table loads hide the latency of each (a single chain is bound by it).
// Each quarter but the first starts maxLen-1 bytes early, in the root
// state, and reports only the keywords that end inside the quarter.
func (ix *keywordIndex) scan4(text []byte, hit func(start, end, keyword int)) {
	q := len(text) / 4
	var from, report, to [4]int
	for k := range 4 {
		report[k], to[k] = k*q, (k+1)*q
		from[k] = max(0, report[k]-ix.maxLen+1)
	}
	to[3] = len(text)
	n := q // every quarter has at least q bytes
	t0, t1, t2, t3 := text[from[0]:from[0]+n], text[from[1]:from[1]+n], text[from[2]:from[2]+n], text[from[3]:from[3]+n]
	tab, class, th := ix.tab16, &ix.class, uint16(ix.outStart)
	var s0, s1, s2, s3 uint16
	for i := range t0 {
		s0 = tab[int(s0)+int(class[t0[i]])]
		s1 = tab[int(s1)+int(class[t1[i]])]
		s2 = tab[int(s2)+int(class[t2[i]])]
		s3 = tab[int(s3)+int(class[t3[i]])]
		if s0 >= th || s1 >= th || s2 >= th || s3 >= th {
			for k, s := range [4]uint16{s0, s1, s2, s3} {
				if end := from[k] + i + 1; s >= th && end > report[k] {
					ix.emit(end, int(s), hit)
				}
			}
		}
	}
	// Finish each quarter from its state.
	for k, s := range [4]uint16{s0, s1, s2, s3} {
		st := int(s)
		for i := from[k] + n; i < to[k]; i++ {
			if st = ix.step(st, text[i]); st >= ix.outStart && i+1 > report[k] {
				ix.emit(i+1, st, hit)
			}
		}
	}
}

// emit reports the keywords that end at end in state s (premultiplied).
func (ix *keywordIndex) emit(end, s int, hit func(start, end, keyword int)) {
	for _, k := range ix.out[s/ix.nclass] {
		hit(end-ix.kwLen[k], end, int(k))
	}
}

// tail calls partial(start, keyword) for every keyword of which text[start:]
// is a non-empty proper prefix (case-insensitively), start > len(text) -
// maxLen.
func (ix *keywordIndex) tail(text []byte, partial func(start, keyword int)) {
	from := max(0, len(text)-3*ix.maxLen)
	if norm, orig := foldSpecial(text[from:]); norm != nil {
		ix.tailBytes(norm, func(start, k int) { partial(from+orig[start], k) })
		return
	}
	ix.tailBytes(text, partial)
}

func (ix *keywordIndex) tailBytes(text []byte, partial func(start, keyword int)) {
	s := 0
	for _, b := range text[max(0, len(text)-ix.maxLen+1):] {
		s = ix.step(s, b)
	}
	// Every suffix of the text that is a keyword prefix is a state on the
	// fail chain.
	for st := s / ix.nclass; st != 0; st = int(ix.fail[st]) {
		for _, k := range ix.prefixes[st] {
			partial(len(text)-ix.depth[st], int(k))
		}
	}
}

// lowerKeywords lower-cases, trims and de-duplicates keywords.
func lowerKeywords(kws []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, k := range kws {
		k = strings.ToLower(k)
		if k != "" && !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}
