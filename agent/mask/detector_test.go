package mask

import (
	"cmp"
	"regexp"
	"regexp/syntax"
	"slices"
	"unicode/utf8"

	"github.com/promptrail/promptrail/agent/secrets"
)

// testDetector is a Detector made of a few regular expressions, for the
// package's tests. Its Pending is exact for rules whose leftmost-first match
// at a position cannot change once a byte follows it (true of the rules
// below: a greedy run of one class, a fixed length, a lazy body that ends
// in a literal): a position is pending if the text from it is a prefix of
// some match of a rule (a simulation of the rule's NFA) and is not already
// a complete match followed by more text.
type testDetector struct {
	rules      []testRule
	maxPending int
}

type testRule struct {
	id       string
	action   secrets.Action
	re, anch *regexp.Regexp
	prog     *syntax.Prog
	first    byte // the first byte of every match, or 0
}

var testRuleSpecs = []struct{ id, expr, action string }{
	{"openai-key", `sk-[A-Za-z0-9]{20,}`, "block"},
	{"aws-access-key", `AKIA[0-9A-Z]{16}`, "mask"},
	{"private-key", `-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----`, "mask"},
}

func newTestDetector(maxPending int) *testDetector {
	d := &testDetector{maxPending: maxPending}
	for _, r := range testRuleSpecs {
		re, err := syntax.Parse(r.expr, syntax.Perl)
		if err != nil {
			panic(err)
		}
		prog, err := syntax.Compile(re.Simplify())
		if err != nil {
			panic(err)
		}
		rx := regexp.MustCompile(r.expr)
		prefix, _ := rx.LiteralPrefix()
		d.rules = append(d.rules, testRule{
			id: r.id, action: secrets.Action(r.action), re: rx, prog: prog,
			anch: regexp.MustCompile(`^(?:` + r.expr + `)`), first: prefix[0],
		})
	}
	return d
}

func (d *testDetector) Find(text []byte) []secrets.Match {
	var all []secrets.Match
	for _, r := range d.rules {
		for _, loc := range r.re.FindAllIndex(text, -1) {
			all = append(all, secrets.Match{RuleID: r.id, Start: loc[0], End: loc[1]})
		}
	}
	slices.SortStableFunc(all, func(a, b secrets.Match) int {
		return cmp.Or(cmp.Compare(a.Start, b.Start), cmp.Compare(b.End, a.End))
	})
	out := all[:0]
	for _, m := range all {
		if len(out) > 0 && m.Start < out[len(out)-1].End {
			continue
		}
		out = append(out, m)
	}
	return out
}

func (d *testDetector) Pending(text []byte) int {
	p := len(text)
	for _, r := range d.rules {
		for i := 0; i < p; i++ {
			if text[i] == r.first && r.alive(text[i:]) && !r.settled(text[i:]) {
				p = i
				break
			}
		}
	}
	return p
}

func (d *testDetector) MaxPending() int { return d.maxPending }

func (d *testDetector) Action(id string) secrets.Action {
	for _, r := range d.rules {
		if r.id == id {
			return r.action
		}
	}
	return ""
}

// settled reports whether a match of r starts at s[0] and ends before the
// end of s.
func (r *testRule) settled(s []byte) bool {
	loc := r.anch.FindIndex(s)
	return loc != nil && loc[1] < len(s)
}

// alive reports whether s is a prefix of some match of r: whether r's NFA,
// started at s[0], still has a thread after consuming s.
func (r *testRule) alive(s []byte) bool {
	n := len(r.prog.Inst)
	cur, next := newPCSet(n), newPCSet(n)
	r.add(cur, uint32(r.prog.Start))
	for len(s) > 0 && len(cur.dense) > 0 {
		c, w := utf8.DecodeRune(s)
		s = s[w:]
		next.reset()
		for _, pc := range cur.dense {
			in := &r.prog.Inst[pc]
			switch in.Op {
			case syntax.InstRune, syntax.InstRune1:
				if in.MatchRune(c) {
					r.add(next, in.Out)
				}
			case syntax.InstRuneAny:
				r.add(next, in.Out)
			case syntax.InstRuneAnyNotNL:
				if c != '\n' {
					r.add(next, in.Out)
				}
			}
		}
		cur, next = next, cur
	}
	return len(cur.dense) > 0
}

// add adds pc and the instructions it reaches without consuming input to
// set, keeping only those that consume input or match. Empty-width
// assertions are taken as true (the test rules have none).
func (r *testRule) add(set *pcSet, pc uint32) {
	if set.seen[pc] {
		return
	}
	set.seen[pc] = true
	in := &r.prog.Inst[pc]
	switch in.Op {
	case syntax.InstAlt, syntax.InstAltMatch:
		r.add(set, in.Out)
		r.add(set, in.Arg)
	case syntax.InstCapture, syntax.InstNop, syntax.InstEmptyWidth:
		r.add(set, in.Out)
	case syntax.InstFail:
	default:
		set.dense = append(set.dense, pc)
	}
}

type pcSet struct {
	seen  []bool
	dense []uint32
}

func newPCSet(n int) *pcSet { return &pcSet{seen: make([]bool, n)} }

func (s *pcSet) reset() {
	clear(s.seen)
	s.dense = s.dense[:0]
}
