package secrets

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/zricethezav/gitleaks/v8/config"
)

// hit is an occurrence of a keyword of a component.
type hit struct {
	comp       int
	start, end int
}

// scratch is reused by Find calls.
type scratch struct {
	keys []uint64
	hits []hit
}

// Hits are collected as keys that sort by component, then start: the
// component in the top 16 bits, the start in the next 40, the keyword's
// length in the low 8.
const (
	keyCompShift  = 48
	keyStartShift = 8
)

// Find returns the secrets in text: sorted by Start, non-overlapping (on
// overlap it keeps the leftmost, then the longest, and extends its End to
// the end of the matches it overlaps, so that no byte of a reported secret
// goes unmasked), each passing its rule's entropy threshold and allowlists
// (gitleaks' global and per-rule allowlists included; gitleaks:allow
// comments are not honoured).
func (e *Engine) Find(text []byte) []Match {
	ms, _ := e.FindContext(context.Background(), text)
	return ms
}

// ErrBudget is wrapped by the error FindContext returns when its context
// ends before the search does.
var ErrBudget = errors.New("secrets: search stopped before the end of the text")

// FindContext is Find, stopped when ctx is done: text crafted to be dense
// with keywords (a body of nothing but "key=" bait) makes the regexes run
// at every hit, and a caller bounds that time with a deadline. On a
// stopped search it returns no matches and an error wrapping ErrBudget
// and the context's error: what was searched so far is not a complete
// answer, so the caller must not treat the text as clean.
func (e *Engine) FindContext(ctx context.Context, text []byte) ([]Match, error) {
	if len(text) == 0 {
		return nil, nil
	}
	sc := e.scratch.Get().(*scratch)
	defer e.putScratch(sc)
	hits := e.collectHits(text, sc)
	st := stopper{done: ctx.Done()}
	var out []Match
	for i := 0; i < len(hits); {
		j := i + 1
		for j < len(hits) && hits[j].comp == hits[i].comp {
			j++
		}
		if c := e.comps[hits[i].comp]; c.near {
			out = e.findNear(text, c, hits[i:j], out, &st)
		} else {
			out = e.findSplit(text, c, hits[i:j], out, &st)
		}
		if st.stopped {
			return nil, fmt.Errorf("%w: %w", ErrBudget, context.Cause(ctx))
		}
		i = j
	}
	return resolve(out), nil
}

// maxPooledHits bounds the hits a pooled scratch keeps room for: a text
// dense with keywords (9 MB of bait has a million hits) must not leave
// tens of megabytes behind in the pool after it is done.
const maxPooledHits = 64 << 10

func (e *Engine) putScratch(sc *scratch) {
	if cap(sc.keys) > maxPooledHits || cap(sc.hits) > maxPooledHits {
		sc.keys, sc.hits = nil, nil
	}
	e.scratch.Put(sc)
}

// stopper tells the search loops that the caller's context is done. The
// loops ask at every keyword hit or regex match: a non-blocking receive,
// nothing when the context can never end.
type stopper struct {
	done    <-chan struct{}
	stopped bool
}

func (s *stopper) stop() bool {
	if s.done == nil {
		return false
	}
	select {
	case <-s.done:
		s.stopped = true
	default:
	}
	return s.stopped
}

// collectHits appends the keyword hits of every component, sorted by
// component and position, without duplicates.
func (e *Engine) collectHits(text []byte, sc *scratch) []hit {
	keys := sc.keys[:0]
	e.index.scan(text, func(start, end, k int) {
		for _, ci := range e.kwComps[k] {
			keys = append(keys, uint64(ci)<<keyCompShift|uint64(start)<<keyStartShift|uint64(min(end-start, 255)))
		}
	})
	slices.Sort(keys)
	hits := sc.hits[:0]
	for i, k := range keys {
		h := hit{comp: int(k >> keyCompShift), start: int(k >> keyStartShift & (1<<40 - 1))}
		h.end = h.start + int(k&255)
		if i+1 < len(keys) && keys[i+1]>>keyStartShift == k>>keyStartShift {
			continue // the same start with a longer keyword follows
		}
		hits = append(hits, h)
	}
	sc.keys, sc.hits = keys, hits
	return hits
}

// findSplit evaluates a component at its keyword hits, in order: the
// filter at each (skipping hits inside the previous match, which
// gitleaks' non-overlapping search would not report either), then the
// rule's regex in a window from the earliest start the hit allows. Where
// K·S has no longest match (a private key, a JWT), a filter may read up to
// the end of a long run of its bytes at every hit: once they have read
// more than a few times the text, the rest is searched linearly instead.
func (e *Engine) findSplit(text []byte, c *component, hits []hit, out []Match, st0 *stopper) []Match {
	r := c.rule
	st := newScanState(c)
	// Where K·S has no longest match, a filter may read far at each hit:
	// past a budget of bytes read, search linearly.
	budget := 8*len(text) + 64<<10
	var groups []int
	pos := 0
	for _, h := range hits {
		if st0.stop() {
			return out
		}
		if h.start < pos || !c.present(text, h.start, st) {
			continue
		}
		ok, read := c.passLong(text, h.start, st)
		if budget -= read; budget < 0 {
			return e.findLinear(text, r, c.lowStart(text, h.start, pos), out, st0)
		}
		if !ok {
			continue
		}
		var a, b int
		a, b, groups = r.search(text, c.lowStart(text, h.start, pos), c.highEnd(text, h.start), groups)
		if a < 0 || a > h.start {
			continue // a match that starts after the hit belongs to a later one
		}
		out = e.emit(text, r, a, b, groups, out)
		pos = max(b, a+1)
	}
	return out
}

// findLinear reports the matches of r in text from lo on, searching once
// from left to right (as gitleaks does).
func (e *Engine) findLinear(text []byte, r *rule, lo int, out []Match, st *stopper) []Match {
	var groups []int
	for pos := lo; pos <= len(text) && !st.stop(); {
		var a, b int
		a, b, groups = r.searchFrom(text, pos, len(text), groups)
		if a < 0 {
			break
		}
		out = e.emit(text, r, a, b, groups, out)
		pos = max(b, a+1)
	}
	return out
}

// filterWindow is how much text a filter reads at first where K·S has no
// longest match; the window grows fourfold while that is not enough.
const filterWindow = 64

// passLong runs the gate, the quick filter and the filter at a hit at h,
// and returns how many bytes the filter read where K·S has no longest
// match and the filter is small. There the filter reads a window that
// grows as long as the text in it could still be the start of a match, up
// to the end of the run of K·S bytes: most hits are decided within a few
// dozen bytes (Go's regexp runs a small filter with its backtracker, which
// clears memory in proportion to its input).
func (c *component) passLong(text []byte, h int, st *scanState) (bool, int) {
	if !c.gate.open(text, h) {
		return false, 0
	}
	if c.quick != nil && !c.quick.Match(text[h:min(len(text), h+c.quickMax+1)]) {
		return false, 0
	}
	switch {
	case c.ksMax != unbounded:
		return c.filter.Match(text[h:c.filterEnd(text, h, st)]), 0
	case c.filterNFA:
		// The rest of the text: the NFA stops where its last thread dies,
		// soon for the large filters (gitleaks' generic rules, whose only
		// unbounded part is a run of token characters).
		return c.filter.Match(text[h:]), 0
	}
	end := c.filterEnd(text, h, st)
	for win := filterWindow; ; win *= 4 {
		short := min(end, h+win)
		loc := c.filter.FindIndex(text[h:short])
		switch {
		case short == end:
			return loc != nil, short - h
		case loc != nil && h+loc[1] < short:
			return true, short - h // the match does not depend on the cut
		case loc == nil && !c.alive.Match(text[h:short]):
			return false, short - h
		}
	}
}

// filterEnd is where a filter run at a hit at h may stop reading.
func (c *component) filterEnd(text []byte, h int, st *scanState) int {
	if c.ksMax == unbounded {
		return min(len(text), st.runEndAt(c, text, h)+1)
	}
	return min(len(text), h+c.ksMax+1)
}

// lowStart is the earliest start of a match whose K·S part starts at h,
// or floor if that is earlier.
func (c *component) lowStart(text []byte, h, floor int) int {
	lim := floor
	if c.preMax != unbounded {
		lim = max(lim, h-c.preMax)
	}
	j := h
	for j > lim && c.preSet.has(text[j-1]) {
		j--
	}
	return j
}

// highEnd bounds the end of a match whose K·S part starts at h: one byte
// past it (context for assertions), or the end of text.
func (c *component) highEnd(text []byte, h int) int {
	lim := len(text)
	if c.ksMax != unbounded {
		lim = min(lim, h+c.ksMax)
	}
	j := h
	for j < lim && c.ksSet.has(text[j]) {
		j++
	}
	return min(len(text), j+1)
}

// search returns the leftmost-first match of r in text[:end] that starts
// at pos or later, reading text[pos-1] as context; -1, -1 if none. A match
// at pos itself, the usual case (pos is the earliest start the keyword
// allows), is tried first: anchored, the regexp does far less work, and
// it also returns the groups (offsets in text, nil if not known).
func (r *rule) search(text []byte, pos, end int, groups []int) (int, int, []int) {
	if pos == 0 {
		if loc := r.anch0.FindSubmatchIndex(text[:end]); loc != nil {
			return loc[0], loc[1], append(groups[:0], loc...)
		}
		return r.searchFrom(text, pos, end, groups)
	}
	base := pos - 1
	if loc := r.anch.FindSubmatchIndex(text[base:end]); loc != nil {
		groups = groups[:0]
		for _, g := range loc[2:] {
			if g >= 0 {
				g += base
			}
			groups = append(groups, g)
		}
		return groups[0], groups[1], groups
	}
	return r.searchFrom(text, pos, end, groups)
}

// searchFrom is search without the anchored attempt.
func (r *rule) searchFrom(text []byte, pos, end int, groups []int) (int, int, []int) {
	if pos == 0 {
		if loc := r.plain.FindIndex(text[:end]); loc != nil {
			return loc[0], loc[1], nil
		}
		return -1, -1, nil
	}
	if loc := r.ctx.FindSubmatchIndex(text[pos-1 : end]); loc != nil {
		return pos - 1 + loc[2], pos - 1 + loc[3], nil
	}
	return -1, -1, nil
}

// findNear evaluates a near component: matches within nearGap bytes of a
// keyword hit.
func (e *Engine) findNear(text []byte, c *component, hits []hit, out []Match, st *stopper) []Match {
	r := c.rule
	for i := 0; i < len(hits) && !st.stop(); {
		zlo, zhi := max(0, hits[i].start-nearGap), min(len(text), hits[i].end+nearGap)
		j := i + 1
		for ; j < len(hits) && hits[j].start-nearGap <= zhi; j++ {
			zhi = max(zhi, min(len(text), hits[j].end+nearGap))
		}
		lo, end := zlo, zhi
		if r.maxLen == unbounded {
			for lo > 0 && r.allBytes.has(text[lo-1]) {
				lo--
			}
			for end < len(text) && r.allBytes.has(text[end]) {
				end++
			}
		} else {
			lo, end = max(0, zlo-r.maxLen), min(len(text), zhi+r.maxLen)
		}
		end = min(len(text), end+1)
		var groups []int
		for pos := lo; pos <= zhi && !st.stop(); {
			var a, b int
			a, b, groups = r.search(text, pos, end, groups)
			if a < 0 || a > zhi {
				break
			}
			if b >= zlo {
				out = e.emit(text, r, a, b, groups, out)
			}
			pos = max(b, a+1)
		}
		i = j
	}
	return out
}

// emit appends the secret of the match text[a:b] of r, unless its entropy
// is too low or an allowlist allows it. This follows gitleaks'
// detect.Detector.detectRule: the match is trimmed of newlines, the regex
// is matched again against the trimmed match alone, and the secret is the
// secret group or else the first non-empty group or else the trimmed match.
// groups, if not nil, are the groups of the match found in context: they
// are those of the match alone (cut at the trimmed end), so the second
// match is skipped, unless a leading newline was trimmed or a \b at the
// start could differ (the first byte is not a word byte but the one
// before is).
func (e *Engine) emit(text []byte, r *rule, a, b int, groups []int, out []Match) []Match {
	a0 := a
	for a < b && text[a] == '\n' {
		a++
	}
	for b > a && text[b-1] == '\n' {
		b--
	}
	s0, s1 := a, b
	if r.re.NumSubexp() > 0 {
		g := groups
		if g == nil || a != a0 || a > 0 && isWordByte(text[a-1]) && !isWordByte(text[a]) {
			if g = r.full.FindSubmatchIndex(text[a:b]); g != nil {
				for i := range g {
					if g[i] >= 0 {
						g[i] += a
					}
				}
			}
		}
		if g != nil {
			if k := r.secretGroup; k > 0 {
				s0, s1 = min(max(g[2*k], a), b), min(max(g[2*k+1], a), b)
			} else {
				for k := 1; k <= r.re.NumSubexp(); k++ {
					if g[2*k] >= 0 && min(g[2*k+1], b) > g[2*k] {
						s0, s1 = g[2*k], min(g[2*k+1], b)
						break
					}
				}
			}
		}
	}
	secret := text[s0:s1]
	if r.entropy != 0 && shannonEntropy(secret) <= r.entropy {
		return out
	}
	if allowed(e.allowlist, text, secret, a, b) || allowed(r.allowlists, text, secret, a, b) {
		return out
	}
	if s0 == s1 || r.wholeMatch {
		s0, s1 = a, b
	}
	return append(out, Match{RuleID: r.id, Start: s0, End: s1})
}

// allowed reports whether one of the allowlists allows the secret of the
// match text[a:b], as gitleaks' checkFindingAllowed does for a fragment
// without path and commit.
func allowed(lists []*config.Allowlist, text, secret []byte, a, b int) bool {
	for _, al := range lists {
		target := secret
		switch al.RegexTarget {
		case "match":
			target = text[a:b]
		case "line":
			target = lineAround(text, a, b)
		}
		regexOK := len(al.Regexes) > 0 && al.RegexAllowed(string(target))
		stopOK := false
		if len(al.StopWords) > 0 {
			stopOK, _ = al.ContainsStopWord(string(secret))
		}
		if al.MatchCondition == config.AllowlistMatchAnd {
			if (len(al.Regexes) == 0 || regexOK) && (len(al.StopWords) == 0 || stopOK) {
				return true
			}
		} else if regexOK || stopOK {
			return true
		}
	}
	return false
}

// lineAround returns the lines holding text[a:b]: from the newline before
// a (included, as in gitleaks' Finding.Line) to the newline after b, or on
// the last line to a carriage return.
func lineAround(text []byte, a, b int) []byte {
	start := max(bytes.LastIndexByte(text[:a], '\n'), 0)
	end := len(text)
	if i := bytes.IndexByte(text[b:], '\n'); i >= 0 {
		end = b + i
	} else if i := bytes.IndexByte(text[b:], '\r'); i >= 0 {
		end = b + i
	}
	return text[start:end]
}

// shannonEntropy is gitleaks' detect.shannonEntropy: over the runes of
// data, with frequencies relative to its length in bytes.
func shannonEntropy(data []byte) float64 {
	if len(data) == 0 {
		return 0
	}
	var ascii [utf8.RuneSelf]int
	var other map[rune]int
	for _, c := range string(data) {
		if c < utf8.RuneSelf {
			ascii[c]++
		} else {
			if other == nil {
				other = map[rune]int{}
			}
			other[c]++
		}
	}
	inv := 1.0 / float64(len(data))
	var h float64
	add := func(n int) {
		if n > 0 {
			f := float64(n) * inv
			h -= f * math.Log2(f)
		}
	}
	for _, n := range ascii {
		add(n)
	}
	for _, n := range other {
		add(n)
	}
	return h
}

// resolve sorts matches by start, longest first, and merges overlapping
// ones into the first (which keeps its rule). Between matches with the
// same span, a specific rule wins over a generic one (as gitleaks drops a
// generic finding whose secret another rule found).
func resolve(ms []Match) []Match {
	if len(ms) == 0 {
		return nil
	}
	generic := func(m Match) bool { return strings.Contains(m.RuleID, "generic") }
	slices.SortFunc(ms, func(x, y Match) int {
		return cmp.Or(cmp.Compare(x.Start, y.Start), cmp.Compare(y.End, x.End),
			cmpBool(generic(x), generic(y)), strings.Compare(x.RuleID, y.RuleID))
	})
	out := ms[:1]
	for _, m := range ms[1:] {
		last := &out[len(out)-1]
		if m.Start < last.End {
			last.End = max(last.End, m.End)
			continue
		}
		out = append(out, m)
	}
	return out
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}
