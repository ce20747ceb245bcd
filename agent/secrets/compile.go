package secrets

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"

	"github.com/zricethezav/gitleaks/v8/config"
)

// ruleSpec is a rule before compilation.
type ruleSpec struct {
	id, description, source string
	regex                   string
	re                      *regexp.Regexp // compiled regex, if the source had it
	secretGroup             int
	entropy                 float64
	keywords                []string
	allowlists              []*config.Allowlist
	action                  Action
	// wholeMatch masks the whole match instead of the capture group that
	// gitleaks reports as the secret (see wholeMatchRules).
	wholeMatch bool
}

// nearGap is how far (in bytes) from a keyword hit a match of a rule
// whose keywords are next to its matches (not where they start) may be.
const nearGap = 32

// maxComponents bounds how many components a rule is split into.
const maxComponents = 16

// How much of P (the part before the keyword) Pending must hold back.
const (
	pSkip     = iota // P has no captures and matches the empty string: hold from the keyword
	pBoundary        // P is only \b assertions and K starts with a word byte: hold from the keyword
	pAssert          // P only asserts: hold from the keyword
	pGeneral         // hold from the earliest start P allows
)

// rule is a compiled rule.
type rule struct {
	ruleSpec
	maxLen   int // longest match, or unbounded
	allBytes byteSet
	comps    []*component
	// prefilter is the keywords of the components: the rule's keywords,
	// or literals of its regex (see decompose).
	prefilter []string
	// full is the regex with case-insensitive literals as classes (the
	// same matches and groups, faster).
	full *regexp.Regexp
	// Searching: plain finds a match from the start of a slice; ctx finds
	// the leftmost match after the slice's first byte, which it reads only
	// as context for assertions (group 1 is the match).
	plain, ctx *regexp.Regexp
	// anch0 and anch are plain and ctx anchored at the start (after the
	// context byte), with the rule's capture groups (in anch, shifted by
	// one).
	anch0, anch *regexp.Regexp
	// tailAlive matches, for Pending of a near rule, a tail of the text
	// that is a prefix of a match or a match followed by at most nearGap
	// runes (assertions ignored).
	tailAlive *regexp.Regexp
}

// A component is how a rule is found from its keyword hits. Usually the
// regex is P·K·S where every match of K·S starts with a keyword (the
// component's keywords): K·S is tried anchored at each keyword hit (the
// filter) and the whole regex then runs in a window around the hits that
// pass. A regex whose top-level alternatives need different splits gets a
// component per alternative. A custom rule whose keywords are not where
// its matches start has one near component: the regex runs around the
// keyword hits and matches within nearGap bytes of one count.
type component struct {
	rule     *rule
	keywords []string
	near     bool
	filter   *regexp.Regexp // \A(?:K·S), leading assertions dropped, no captures
	alive    *regexp.Regexp // \A(?:prefixes of K·S)\z, for Pending
	// aliveTail is (?:prefixes of K·S)\z: where K·S has no longest match,
	// Pending looks for the leftmost tail that could start one in a
	// single pass rather than at every hit.
	aliveTail *regexp.Regexp
	preTail   *regexp.Regexp // (?:prefixes of P')\z, for Pending of pGeneral
	pFull     *regexp.Regexp // (?:P')\z: P' must precede a keyword hit
	required  []requiredLiteral
	quick     *regexp.Regexp // a head of the filter, or nil
	quickMax  int            // the longest match of the head
	filterNFA bool           // the filter is too large for Go's backtracker
	gate      gate
	pFullMax  int
	preMax    int     // longest P
	preSet    byteSet // bytes of P
	pendMax   int     // longest P', the part of P Pending holds
	pendSet   byteSet // bytes of P'
	ksMax     int     // longest K·S
	ksSet     byteSet // bytes of K·S
	pPolicy   int
}

// compileRule compiles spec into a rule.
func compileRule(spec ruleSpec) (*rule, error) {
	r := &rule{ruleSpec: spec}
	if err := r.compile(); err != nil {
		return nil, fmt.Errorf("secrets: rule %q: %w", spec.id, err)
	}
	return r, nil
}

func (r *rule) compile() error {
	var err error
	if r.re == nil {
		if r.re, err = regexp.Compile(r.regex); err != nil {
			return err
		}
	}
	r.regex = r.re.String()
	if r.secretGroup < 0 || r.secretGroup > r.re.NumSubexp() {
		return fmt.Errorf("secret group %d out of range (the regex has %d groups)", r.secretGroup, r.re.NumSubexp())
	}
	r.keywords = lowerKeywords(r.keywords)
	if len(r.keywords) == 0 {
		return errors.New("no keywords")
	}
	tree, err := syntax.Parse(r.regex, syntax.Perl)
	if err != nil {
		return err
	}
	if r.full, err = regexp.Compile(unfold(tree).String()); err != nil {
		return err
	}
	bare := unfold(stripCaptures(tree))
	r.maxLen, r.allBytes = maxLen(tree), bytesOf(tree)
	if r.plain, err = regexp.Compile(bare.String()); err != nil {
		return err
	}
	if r.ctx, err = regexp.Compile(`\A(?s:.)(?s:.)*?(` + bare.String() + `)`); err != nil {
		return err
	}
	caps := unfold(tree).String()
	if r.anch, err = regexp.Compile(`\A(?s:.)(` + caps + `)`); err != nil {
		return err
	}
	if r.anch0, err = regexp.Compile(`\A(?:` + caps + `)`); err != nil {
		return err
	}
	var near bool
	for _, sp := range r.decompose(flatten(tree, false), 0) {
		if sp.near {
			near = true
			continue
		}
		c, err := r.component(sp)
		if err != nil {
			return err
		}
		r.comps = append(r.comps, c)
	}
	if near {
		// Assertions before the first byte of a match are known.
		elems, lead := flatten(bare, false), 0
		for lead < len(elems) && isAssertion(elems[lead].re) {
			lead++
		}
		loose := stripAssertions(concatElems(elems[lead:]))
		r.comps = append(r.comps, &component{rule: r, keywords: r.keywords, near: true})
		r.tailAlive, err = regexp.Compile(fmt.Sprintf(`%s(?:(?:%s)(?s:.){0,%d}|(?:%s))\z`,
			concatElems(elems[:lead]), loose, nearGap, prefixPlus(loose)))
	}
	var kws []string
	for _, c := range r.comps {
		kws = append(kws, c.keywords...)
	}
	r.prefilter = lowerKeywords(kws)
	return err
}

// split is a sequence of elements split into P = elems[:at] and K·S, or a
// sequence to evaluate near the keywords.
type split struct {
	elems    []elem
	at       int
	keywords []string
	near     bool
	derived  bool // keywords are literals of the regex, not the rule's
}

// decompose splits elems (a sequence matching what the rule matches) at
// the first place from which every match starts with one of the rule's
// keywords. If there is none, it distributes the sequence over the
// alternatives of its first alternation. For a gitleaks rule, a sequence
// (or top-level alternative) that cannot be split at its keywords is split
// at literals that every match starts with, which become keywords:
// gitleaks only requires its keywords somewhere in the text, so such
// literals find every match it finds. What remains is evaluated near the
// keywords.
func (r *rule) decompose(elems []elem, depth int) []split {
	if sp, ok := splitAt(elems, r.keywords); ok {
		// A match may start arbitrarily far before a keyword that comes late
		// in the regex (kubernetes-secret-yaml's data-before-kind form):
		// literals every match starts with bound the window better.
		if r.source == sourceGitleaks && depth <= 1 && maxLen(concatElems(sp.elems[:sp.at])) == unbounded {
			if d, ok := splitDerived(elems); ok && maxLen(concatElems(d.elems[:d.at])) != unbounded {
				return []split{d}
			}
		}
		return []split{sp}
	}
	var dist []split
	for j, el := range elems {
		if el.re.Op != syntax.OpAlternate || depth >= 3 {
			continue
		}
		for _, alt := range el.re.Sub {
			seq := append(append(append([]elem(nil), elems[:j]...), flatten(alt, el.inCapture)...), elems[j+1:]...)
			dist = append(dist, r.decompose(seq, depth+1)...)
		}
		if len(dist) > maxComponents {
			dist = nil
		}
		break
	}
	if dist != nil && !slices.ContainsFunc(dist, func(s split) bool { return s.near || s.derived }) {
		return dist
	}
	if r.source == sourceGitleaks && depth <= 1 {
		if sp, ok := splitDerived(elems); ok {
			return []split{sp}
		}
	}
	if dist != nil {
		return dist
	}
	return []split{{elems: elems, keywords: r.keywords, near: true}}
}

// splitAt finds the first place in elems, possibly inside a literal, from
// which every match starts with one of keywords.
func splitAt(elems []elem, keywords []string) (split, bool) {
	for i, e := range elems {
		if startsWithAny(prefixSet(concatElems(elems[i:])), keywords) {
			return split{elems: elems, at: i, keywords: keywords}, true
		}
		if e.re.Op != syntax.OpLiteral {
			continue
		}
		for o := 1; o < len(e.re.Rune); o++ {
			head := &syntax.Regexp{Op: syntax.OpLiteral, Flags: e.re.Flags, Rune: e.re.Rune[:o]}
			tail := &syntax.Regexp{Op: syntax.OpLiteral, Flags: e.re.Flags, Rune: e.re.Rune[o:]}
			seq := append(append(append([]elem(nil), elems[:i]...), elem{head, e.inCapture}, elem{tail, e.inCapture}), elems[i+1:]...)
			if startsWithAny(prefixSet(concatElems(seq[i+1:])), keywords) {
				return split{elems: seq, at: i + 1, keywords: keywords}, true
			}
		}
	}
	return split{}, false
}

// splitDerived finds the place in elems from which every match starts with
// one of at most 16 literals, and uses those literals as keywords: the
// place with the longest literals among those where P is bounded, if any.
func splitDerived(elems []elem) (split, bool) {
	best, bestScore := split{}, 0
	for i := range elems {
		set := prefixSet(concatElems(elems[i:]))
		bonus := 0
		if maxLen(concatElems(elems[:i])) != unbounded {
			bonus = 100
		}
		for l := 16; l > 0 && l+bonus > bestScore; l-- {
			cut := truncateSet(set, l)
			if len(cut) > 0 && len(cut) <= 16 && minLen(cut) == l && !slices.ContainsFunc(cut, tooCommon) {
				best, bestScore = split{elems: elems, at: i, keywords: cut, derived: true}, l+bonus
				break
			}
		}
	}
	return best, bestScore > 0
}

// tooCommon reports whether a derived keyword would occur too often in
// ordinary text to be worth evaluating a rule at.
func tooCommon(k string) bool {
	return len(k) < 2 && !strings.Contains(`|%~@#$^&*!?<>[]{}+\`, k)
}

// truncateSet returns the distinct prefixes of length at most l of set.
func truncateSet(set []string, l int) []string {
	var out []string
	for _, s := range set {
		out = append(out, s[:min(l, len(s))])
	}
	return lowerKeywords(out)
}

// minLen returns the length of the shortest string in set.
func minLen(set []string) int {
	m := -1
	for _, s := range set {
		if m < 0 || len(s) < m {
			m = len(s)
		}
	}
	return m
}

// maxBacktrackProg is the largest program Go's regexp runs with its
// backtracker (regexp/backtrack.go); larger ones run on its NFA, which
// stops as soon as no thread is left.
const maxBacktrackProg = 500

// contextBytes is how much released text Pending assumes a streaming
// masker keeps in front of the text it holds and passes to Find with it
// (agent/mask keeps 32 bytes): a short part of a match before the secret
// (a delimiter, "Bearer ") may be released.
const contextBytes = 16

// component compiles the component of split sp.
func (r *rule) component(sp split) (*component, error) {
	c := &component{rule: r, keywords: sp.keywords}
	p, ks := concatElems(sp.elems[:sp.at]), concatElems(sp.elems[sp.at:])
	c.preMax, c.preSet = maxLen(p), bytesOf(p)
	c.ksMax, c.ksSet = maxLen(ks), bytesOf(ks)
	var err error
	// Loosened filters may match further than K·S: only where the filter
	// reads a bounded slice.
	maybeLoosen := func(re *syntax.Regexp) *syntax.Regexp {
		if c.ksMax == unbounded {
			return re
		}
		return loosen(re)
	}
	filter := maybeLoosen(unfold(stripCaptures(stripLeadingAssertions(ks))))
	if c.filter, err = regexp.Compile(`\A(?:` + filter.String() + `)`); err != nil {
		return nil, err
	}
	if prog, err := syntax.Compile(filter.Simplify()); err == nil {
		c.filterNFA = len(prog.Inst) > maxBacktrackProg
	}

	alive := maybeLoosen(prefixLang(stripAssertions(stripCaptures(ks))))
	if c.alive, err = regexp.Compile(`\A(?:` + alive.String() + `)\z`); err != nil {
		return nil, err
	}
	if c.ksMax == unbounded {
		if c.aliveTail, err = regexp.Compile(`(?:` + alive.String() + `)\z`); err != nil {
			return nil, err
		}
	}
	c.required = requiredLiterals(sp.elems[sp.at:])
	if c.quick, c.quickMax, err = quickFilter(sp.elems[sp.at:], maybeLoosen); err != nil {
		return nil, err
	}
	c.gate = newGate(sp.elems[sp.at:])
	return c, c.pendingPolicy(sp)
}

// pendingPolicy decides how much of P Pending holds. If the secret is a
// capture group, the head of P that matches the empty string without
// captures and assertions (gitleaks' [\w.-]{0,50}? before the keyword)
// can be dropped: the secret is the same without it. So can a short part
// before the secret (a delimiter, "Bearer "): it is in the caller's
// context. What remains must be held.
func (c *component) pendingPolicy(sp split) error {
	r := c.rule
	pe := sp.elems[:sp.at]
	plain := func(e elem) bool { return !e.inCapture && !has(e.re, isCapture) }
	var head []elem
	if r.re.NumSubexp() > 0 && !r.wholeMatch {
		for len(pe) > 0 && plain(pe[0]) && nullableBare(pe[0].re) && !has(pe[0].re, isAssertion) {
			pe = pe[1:]
		}
		lead := 0
		for lead < len(pe) && isAssertion(pe[lead].re) {
			lead++
		}
		n, size := lead, 0
		for n < len(pe) && plain(pe[n]) && maxLen(pe[n].re) != unbounded && size+maxLen(pe[n].re) <= contextBytes {
			size += maxLen(pe[n].re)
			n++
		}
		head, pe = pe[:n], pe[n:]
	}
	p := concatElems(pe)
	c.pendMax, c.pendSet = maxLen(p), bytesOf(p)
	switch {
	case len(pe) == 0 && has(concatElems(head), isWordBoundary) && onlyWordBoundaries(concatElems(head)) &&
		startsWithWordByte(prefixSet(concatElems(sp.elems[sp.at:]))):
		c.pPolicy = pBoundary
	case len(pe) == 0:
		c.pPolicy = pSkip
	case c.pendMax == 0:
		c.pPolicy = pAssert
	default:
		c.pPolicy = pGeneral
		return c.compilePending(head, pe)
	}
	return nil
}

// compilePending compiles the regexps of a pGeneral component: the tail
// of the text must be a prefix of head·pe that reaches into pe (preTail),
// and head·pe must be right before a keyword hit (pFull). Assertions up to
// the end of the text are known; later ones depend on text still to come.
func (c *component) compilePending(head, pe []elem) error {
	whole := stripCaptures(concatElems(append(append([]elem(nil), head...), pe...)))
	lead := 0
	for lead < len(head) && isAssertion(head[lead].re) {
		lead++
	}
	h := stripCaptures(concatElems(head[lead:]))
	rest := prefixPlus(stripAssertions(stripCaptures(concatElems(pe))))
	if len(head) == 0 {
		for lead < len(pe) && isAssertion(pe[lead].re) {
			lead++
		}
		rest = prefixPlus(stripAssertions(stripCaptures(concatElems(pe[lead:]))))
		head = pe
	}
	pre := concat([]*syntax.Regexp{concatElems(head[:lead]), h, rest})
	var err error
	if c.preTail, err = regexp.Compile(`(?:` + pre.String() + `)\z`); err != nil {
		return err
	}
	c.pFull, err = regexp.Compile(`(?:` + whole.String() + `)\z`)
	c.pFullMax = maxLen(whole)
	return err
}

func isCapture(re *syntax.Regexp) bool { return re.Op == syntax.OpCapture }

func isWordBoundary(re *syntax.Regexp) bool { return re.Op == syntax.OpWordBoundary }

// onlyWordBoundaries reports whether re is made of \b assertions (and
// empty matches) only.
func onlyWordBoundaries(re *syntax.Regexp) bool {
	return !has(re, func(n *syntax.Regexp) bool {
		switch n.Op {
		case syntax.OpWordBoundary, syntax.OpEmptyMatch, syntax.OpConcat:
			return false
		}
		return true
	})
}

// startsWithWordByte reports whether every string in set starts with an
// ASCII word byte.
func startsWithWordByte(set []string) bool {
	for _, s := range set {
		if s == "" || !isWordByte(s[0]) {
			return false
		}
	}
	return len(set) > 0
}

func isWordByte(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '_'
}

// stripLeadingAssertions replaces by the empty match the assertions that
// can be evaluated before re has consumed anything (at the keyword hit,
// where a filter run does not see the byte before). The result matches at
// least what re matches.
func stripLeadingAssertions(re *syntax.Regexp) *syntax.Regexp {
	c := *re
	c.Sub0 = [1]*syntax.Regexp{}
	c.Sub = append([]*syntax.Regexp(nil), re.Sub...)
	switch {
	case isAssertion(re):
		return &syntax.Regexp{Op: syntax.OpEmptyMatch}
	case re.Op == syntax.OpConcat:
		for i, s := range c.Sub {
			c.Sub[i] = stripLeadingAssertions(s)
			if maxLen(s) > 0 && !nullableBare(stripAssertions(s)) {
				break
			}
		}
	case re.Op == syntax.OpAlternate, re.Op == syntax.OpCapture, re.Op == syntax.OpStar,
		re.Op == syntax.OpPlus, re.Op == syntax.OpQuest, re.Op == syntax.OpRepeat:
		for i, s := range c.Sub {
			c.Sub[i] = stripLeadingAssertions(s)
		}
	}
	return &c
}
