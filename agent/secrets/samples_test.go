package secrets

import (
	"strings"
	"testing"
)

// TestSamples checks that every rule has a sample (a test fails for a
// rule without one) and that Find reports each sample, in prose, in code
// and in the decoded content of a chat request, with a match that covers
// the secret the rule alone reports. The covering match is usually the
// rule's own; it can be another rule's when the two overlap (a token of a
// specific format inside a generic "key = value" match, for instance):
// Find keeps the leftmost match and extends it over the ones it overlaps,
// so what matters for masking is that the secret is covered.
func TestSamples(t *testing.T) {
	e := engine(t)
	ss := samples(t)
	own, other := 0, map[string]string{}
	for _, s := range ss {
		for name, text := range contexts(t, s.text, s.keyword) {
			want, ok := secretIn(aloneEngine(t, s.rule), text, s.text)
			if !ok {
				t.Errorf("%s (%s): the rule alone does not find its sample %q", s.rule, name, s.text)
				continue
			}
			ms := e.Find([]byte(text))
			if !covered(ms, want.Start, want.End) {
				t.Errorf("%s (%s): secret %q not covered; matches %v", s.rule, name, text[want.Start:want.End], ms)
				continue
			}
			if hasRule(ms, s.rule, want) {
				own++
			} else {
				other[s.rule] = coveringRule(ms, want)
			}
		}
	}
	t.Logf("%d rules with samples (%d written by hand); %d of %d embedded samples reported under their own rule",
		len(ss), countHand(ss), own, 3*len(ss))
	for r, by := range other {
		t.Logf("  %s: covered by %s", r, by)
	}
}

func countHand(ss []sample) int {
	n := 0
	for _, s := range ss {
		if s.hand {
			n++
		}
	}
	return n
}

// hasRule reports whether a match of rule id covers want.
func hasRule(ms []Match, id string, want Match) bool {
	for _, m := range ms {
		if m.RuleID == id && m.Start <= want.Start && m.End >= want.End {
			return true
		}
	}
	return false
}

func coveringRule(ms []Match, want Match) string {
	var ids []string
	for _, m := range ms {
		if m.Start < want.End && m.End > want.Start {
			ids = append(ids, m.RuleID)
		}
	}
	return strings.Join(ids, ",")
}
