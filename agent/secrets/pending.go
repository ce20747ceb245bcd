package secrets

// Pending returns the smallest index i such that text[i:] could still
// become the start of, or part of, a match that Find would report if more
// text were appended; len(text) when the tail cannot. A streaming masker
// emits text[:i] and holds the rest.
//
// It is conservative: for a rule evaluated at its keywords (the regex is
// P·K·S, every match of K·S starting with a keyword), a position is pending
// if it could start a match whose K·S part is a keyword hit in text (or a
// keyword cut off at the end of text) and the text from that hit is a
// prefix of some match of K·S with assertions ignored (this also covers
// matches that are complete but could still grow). For a keyword that has
// not arrived yet, only the part of the text that P could match is held,
// and nothing if P can be dropped without changing the secret. Rules whose
// keywords are next to their matches hold any tail that is a prefix of a
// match, or a match that a keyword arriving within 32 bytes would report,
// with the keywords before it. Empty-width assertions at the first held
// byte (such as \b) are taken to be evaluated, as agent/mask does, with a
// few bytes of already released text in front of the held text.
func (e *Engine) Pending(text []byte) int {
	n := len(text)
	p := n
	e.index.scan(text, func(start, end, k int) {
		for _, ci := range e.kwComps[k] {
			p = min(p, e.comps[ci].pendingHit(text, start, end))
		}
	})
	e.index.tail(text, func(start, k int) {
		for _, ci := range e.kwComps[k] {
			p = min(p, e.comps[ci].pendingHit(text, start, n))
		}
	})
	for _, c := range e.comps {
		if p == 0 {
			break
		}
		p = min(p, c.pendingFuture(text))
	}
	return p
}

// pendingHit is where a match using the keyword (or keyword start) at
// text[start:end] could start, if it could still change; len(text) if not.
func (c *component) pendingHit(text []byte, start, end int) int {
	n := len(text)
	if c.near {
		if end+nearGap >= n {
			return start
		}
		return n
	}
	if c.ksMax != unbounded && n-start > c.ksMax {
		return n
	}
	if !c.alive.Match(text[start:]) {
		return n
	}
	if c.pPolicy == pGeneral {
		return c.lowStart(text, start, 0)
	}
	return start
}

// pendingFuture is where a match whose keyword has not arrived yet could
// start; len(text) if nowhere.
func (c *component) pendingFuture(text []byte) int {
	n := len(text)
	r := c.rule
	switch {
	case c.near:
		from := 0
		if r.maxLen != unbounded {
			from = max(0, n-r.maxLen-4*nearGap-1)
		}
		loc := r.tailAlive.FindIndex(text[from:])
		if loc == nil || from+loc[0] == n {
			return n
		}
		return max(0, from+loc[0]-nearGap-3*r.maxKeyword()) // 3: U+212A for k
	case c.pPolicy != pGeneral:
		return n
	}
	// Look back at most maxPending bytes: a streaming masker masks text
	// held longer than that anyway.
	j := max(c.lowStart(text, n, 0), n-maxPending)
	if j == n {
		return n
	}
	if loc := c.preTail.FindIndex(text[j:]); loc != nil {
		return j + loc[0]
	}
	return n
}

// maxKeyword is the length of the rule's longest keyword.
func (r *rule) maxKeyword() int {
	m := 0
	for _, k := range r.keywords {
		m = max(m, len(k))
	}
	return m
}
