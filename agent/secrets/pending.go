package secrets

import (
	"cmp"
	"slices"
)

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
func (e *Engine) Pending(text []byte) int {
	n := len(text)
	p := n
	var nearHits []hit // hits of near components: keywords to keep with a match after them
	var longHits []hit // hits of components without a longest K·S
	onHit := func(ci int32, start, end int) {
		c := e.comps[ci]
		switch {
		case c.near:
			p = min(p, c.pendingHit(text, start, end))
			nearHits = append(nearHits, hit{comp: int(ci), start: start, end: end})
		case c.ksMax == unbounded:
			longHits = append(longHits, hit{comp: int(ci), start: start, end: end})
		case start-c.reach() < p: // else the hit cannot lower p
			p = min(p, c.pendingHit(text, start, end))
		}
	}
	e.index.scan(text, func(start, end, k int) {
		for _, ci := range e.kwComps[k] {
			onHit(ci, start, end)
		}
	})
	e.index.tail(text, func(start, k int) {
		for _, ci := range e.kwComps[k] {
			onHit(ci, start, n)
		}
	})
	slices.SortStableFunc(longHits, func(a, b hit) int { return cmp.Compare(a.comp, b.comp) })
	for i := 0; i < len(longHits); {
		j := i + 1
		for j < len(longHits) && longHits[j].comp == longHits[i].comp {
			j++
		}
		p = min(p, e.comps[longHits[i].comp].pendingLong(text, longHits[i:j], p))
		i = j
	}
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
	j := c.pendStart(text, n)
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

// reach is how far before its keyword hit a match of c may start, as far
// as Pending is concerned.
func (c *component) reach() int {
	if c.pPolicy != pGeneral {
		return 0
	}
	if c.pFullMax == unbounded {
		return 1 << 62 // no bound
	}
	return c.pFullMax + 1
}

// pendingLong is pendingHit for a component without a longest K·S, for
// its hits (in order of position): checking that the text from a hit is a
// prefix of a match may read to the end of the text, so after a number of
// such checks the leftmost tail that could start a match of K·S is looked
// for in one pass instead (pendingTail).
func (c *component) pendingLong(text []byte, hits []hit, p int) int {
	budget := 8*len(text) + 64<<10
	for _, h := range hits {
		if h.start >= p {
			break
		}
		if !c.gate.mayOpen(text, h.start) {
			continue
		}
		alive, read := c.aliveFrom(text, h.start)
		if budget -= read; budget < 0 {
			return c.pendingTail(text)
		}
		if alive {
			return c.pendingAt(text, h.start)
		}
	}
	return len(text)
}

// aliveFrom reports whether text[h:] is a prefix of a match of K·S,
// reading a window that grows fourfold while the text in it is, and
// returns how much it read.
func (c *component) aliveFrom(text []byte, h int) (bool, int) {
	for win := filterWindow; ; win *= 4 {
		short := min(len(text), h+win)
		if alive := c.alive.Match(text[h:short]); !alive || short == len(text) {
			return alive, short - h
		}
	}
}

// pendingAt is where a match using the keyword at h could start.
func (c *component) pendingAt(text []byte, h int) int {
	if c.pPolicy != pGeneral {
		return h
	}
	from := 0
	if c.pFullMax != unbounded {
		from = max(0, h-c.pFullMax-1)
	}
	if loc := c.pFull.FindIndex(text[from:h]); loc != nil {
		return from + loc[0]
	}
	return h
}

// pendingTail is the leftmost tail of the text that could start a match
// of K·S (it consists of bytes of K·S), found in one pass.
func (c *component) pendingTail(text []byte) int {
	n := len(text)
	j := n
	for j > 0 && c.ksSet.has(text[j-1]) {
		j--
	}
	loc := c.aliveTail.FindIndex(text[j:])
	if loc == nil || j+loc[0] == n {
		return n
	}
	a := j + loc[0]
	if c.pPolicy != pGeneral {
		return a
	}
	from := 0
	if c.pFullMax != unbounded {
		from = max(0, a-c.pFullMax-1)
	}
	if loc := c.pFull.FindIndex(text[from:a]); loc != nil {
		return from + loc[0]
	}
	// P is not right before the leftmost tail; a later one may have it.
	return a
}
