package mask

import (
	"cmp"
	"slices"

	"github.com/promptrail/promptrail/agent/secrets"
)

// Masker masks text, JSON documents and streams with one Detector and Key.
type Masker struct {
	d   Detector
	key Key
}

// New returns a Masker that masks what d finds, with markers fingerprinted
// under key.
func New(d Detector, key Key) *Masker {
	return &Masker{d: d, key: key}
}

// Text masks plain text: every secret the detector finds is replaced by its
// marker. The findings carry where and path as given. If nothing is found,
// masked is text itself.
func (m *Masker) Text(where, path string, text []byte) (masked []byte, findings []Finding) {
	ms := normalize(m.d.Find(text), len(text))
	if len(ms) == 0 {
		return text, nil
	}
	var fs findingSet
	out := make([]byte, 0, len(text)+len(ms)*32)
	out = m.appendMasked(out, text, 0, len(text), ms, where, path, &fs)
	return out, fs.findings()
}

// appendMasked appends text[from:to] to dst with the matches ms (which lie
// in [from, to), sorted and apart) replaced by markers, and adds a finding
// for each to fs.
func (m *Masker) appendMasked(dst, text []byte, from, to int, ms []secrets.Match, where, path string, fs *findingSet) []byte {
	at := from
	for _, x := range ms {
		dst = append(dst, text[at:x.Start]...)
		dst = m.appendMarker(dst, x.RuleID, text[x.Start:x.End], where, path, fs)
		at = x.End
	}
	return append(dst, text[at:to]...)
}

// appendMarker appends the marker of secret to dst and records it in fs.
func (m *Masker) appendMarker(dst []byte, rule string, secret []byte, where, path string, fs *findingSet) []byte {
	fp := m.key.Fingerprint(secret)
	act := actionMask
	if rule != HeldTextCapRule {
		act = m.d.Action(rule)
	}
	fs.add(Finding{Rule: rule, Where: where, Path: path, Count: 1, Fingerprint: fp, Action: act})
	dst = append(dst, "[MASKED:"...)
	dst = append(dst, markerRule(rule)...)
	dst = append(dst, ':')
	dst = append(dst, fp...)
	return append(dst, ']')
}

// normalize returns the matches of a text of n bytes clipped to [0, n),
// sorted, without empty matches and without overlaps: overlapping matches
// are merged into the first, so that no byte that the detector reported is
// left unmasked. A well-behaved detector's matches are returned as they
// are.
func normalize(ms []secrets.Match, n int) []secrets.Match {
	prev := 0
	for _, x := range ms {
		if x.Start < prev || x.End <= x.Start || x.End > n {
			return fixMatches(ms, n)
		}
		prev = x.End
	}
	return ms
}

func fixMatches(ms []secrets.Match, n int) []secrets.Match {
	clipped := make([]secrets.Match, 0, len(ms))
	for _, x := range ms {
		x.Start, x.End = max(x.Start, 0), min(x.End, n)
		if x.End > x.Start {
			clipped = append(clipped, x)
		}
	}
	slices.SortStableFunc(clipped, func(a, b secrets.Match) int { return cmp.Compare(a.Start, b.Start) })
	out := clipped[:0]
	for _, x := range clipped {
		if k := len(out) - 1; k >= 0 && x.Start < out[k].End {
			out[k].End = max(out[k].End, x.End)
			continue
		}
		out = append(out, x)
	}
	return out
}
