package secrets

// Pending returns the smallest index i such that text[i:] could still
// become the start of, or part of, a match that Find would report if more
// text were appended; len(text) when the tail cannot. A streaming masker
// emits text[:i] and holds the rest.
//
// It is conservative, with one assumption: the caller keeps at least 16
// bytes of the text it released in front of the text it holds and passes
// them to Find with it (agent/mask keeps 32), so a short part of a match
// before its secret (a delimiter, "Bearer ", the byte a \b looks at) may
// be released. Under that assumption no byte of a secret that Find would
// report on the whole text is released before Pending covers it.
//
// For a rule evaluated at its keywords (the regex is P·K·S, every match of
// K·S starting with a keyword), a position is pending if a match could
// start there whose K·S part is a keyword hit in the text (or a keyword
// cut off at its end), the text from that hit is a prefix of a match of
// K·S (assertions after it ignored: this covers matches that are complete
// but could still grow), and P matches right before it. For a keyword that
// has not arrived yet, a tail that P could start is held, unless P is only
// a head that does not change the secret ([\w.-]{0,50}? and the like) or
// a short part before it. Rules whose keywords are next to their matches
// hold any tail that is a prefix of a match, or a match that a keyword
// arriving within 32 bytes would report, with the keywords before it.
// Potential matches that start more than MaxPending bytes before the end
// are not looked for.
func (e *Engine) Pending(text []byte) int {
	n := len(text)
	p := n
	var nearHits []hit // hits of near components: keywords to keep with a match after them
	e.index.scan(text, func(start, end, k int) {
		for _, ci := range e.kwComps[k] {
			c := e.comps[ci]
			p = min(p, c.pendingHit(text, start, end))
			if c.near {
				nearHits = append(nearHits, hit{comp: int(ci), start: start, end: end})
			}
		}
	})
	e.index.tail(text, func(start, k int) {
		for _, ci := range e.kwComps[k] {
			p = min(p, e.comps[ci].pendingHit(text, start, n))
		}
	})
	for ci, c := range e.comps {
		if p == 0 {
			break
		}
		f := c.pendingFuture(text)
		for _, h := range nearHits {
			if h.comp == ci && h.end+nearGap >= f && h.start < f {
				f = h.start
			}
		}
		p = min(p, f)
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
	if c.pPolicy == pBoundary && start > 0 && isWordByte(text[start-1]) {
		return n // \b cannot hold before the keyword's first (word) byte
	}
	if !c.alive.Match(text[start:]) {
		return n
	}
	if c.pPolicy == pGeneral {
		// P' must be right before the keyword.
		from := 0
		if c.pFullMax != unbounded {
			from = max(0, start-c.pFullMax-1)
		}
		loc := c.pFull.FindIndex(text[from:start])
		if loc == nil {
			return n
		}
		return from + loc[0]
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
		// The keywords before the match are added by Pending.
		if loc := r.tailAlive.FindIndex(text[from:]); loc != nil {
			return from + loc[0]
		}
		return n
	case c.pPolicy != pGeneral:
		return n
	}
	// Look back at most maxPending bytes: a streaming masker masks text
	// held longer than that anyway.
	j := max(c.pendStart(text, n), n-maxPending)
	if j == n {
		return n
	}
	if loc := c.preTail.FindIndex(text[j:]); loc != nil {
		return j + loc[0]
	}
	return n
}

// pendStart is the earliest start of the part of P that Pending holds,
// before a keyword at h.
func (c *component) pendStart(text []byte, h int) int {
	lim := 0
	if c.pendMax != unbounded {
		lim = max(0, h-c.pendMax)
	}
	j := h
	for j > lim && c.pendSet.has(text[j-1]) {
		j--
	}
	return j
}
