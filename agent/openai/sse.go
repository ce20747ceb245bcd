package openai

import (
	"bytes"
	"fmt"
	"strconv"
)

// DefaultMaxEvent is the bound NewSSEParser takes for a maxEvent of 0 or
// less.
const DefaultMaxEvent = 1 << 20

// Event is one dispatched server-sent event, or one comment line.
//
// Parsing follows the WHATWG HTML standard, "Server-sent events",
// "Interpreting an event stream": lines end in CRLF, LF or CR; a leading
// byte order mark is ignored; a line without a colon is a field with an
// empty value; one space after the colon is dropped; "data" values are
// joined by LF; a blank line dispatches the event if it has data. Unlike a
// browser, the parser leaves Event empty when no "event" field was given
// (a browser says "message"), keeps bytes that are not valid UTF-8 as they
// are, and reports comments.
type Event struct {
	Event string `json:"event,omitempty"` // the "event" field
	Data  string `json:"data,omitempty"`  // the "data" fields, joined by LF; a comment's text
	// ID is the last event ID: as the standard says, an "id" field holds
	// for later events too, until another one changes it.
	ID string `json:"id,omitempty"`
	// Retry is the "retry" field of this event's lines, 0 if none.
	Retry int `json:"retry,omitempty"`
	// Comment marks a comment line (": keep-alive"), reported when its line
	// ends; Data is its text after the colon and one optional space.
	Comment bool `json:"comment,omitempty"`
}

// SSEParser splits an event stream into events as it arrives. Any split
// of the same stream into chunks yields the same events in the same order.
// A parser is not safe for concurrent use.
type SSEParser struct {
	max int

	line  []byte // the current line's bytes from earlier chunks
	data  []byte // the data buffer: each data value and a LF
	event []byte // the event type buffer
	id    string // the last event ID buffer
	retry int    // the retry field of the current event, 0 if none

	lastType   string // the last dispatched event type, reused
	blockBytes int    // bytes in the current event's field lines so far
	inLine     bool   // bytes of the current line have been seen
	comment    bool   // the current line is a comment
	pending    bool   // a field line has come since the last dispatch
	discarding bool   // an over-large event is being dropped
	skipLF     bool   // the previous byte was a CR: a LF now ends nothing
	bom        int    // bytes of a leading BOM matched; -1 once decided

	dropped    int
	incomplete bool
}

// NewSSEParser returns a parser that buffers at most maxEvent bytes for one
// event: the lines of its fields (terminators not counted), or a comment
// line. An event over the bound makes Feed return an error wrapping
// ErrEventTooLarge; the parser drops it and reads on from the next blank
// line. maxEvent <= 0 means DefaultMaxEvent.
func NewSSEParser(maxEvent int) *SSEParser {
	if maxEvent <= 0 {
		maxEvent = DefaultMaxEvent
	}
	return &SSEParser{max: maxEvent}
}

// Feed parses the next chunk of the stream, calling emit for each event and
// comment that it completes. It parses the whole chunk even when an event
// is dropped for its size; the error it then returns (for the chunk's
// first such event) wraps ErrEventTooLarge.
func (p *SSEParser) Feed(chunk []byte, emit func(Event)) error {
	var err error
	for p.bom >= 0 && len(chunk) > 0 {
		const bom = "\xEF\xBB\xBF"
		if chunk[0] == bom[p.bom] {
			chunk = chunk[1:]
			if p.bom++; p.bom == len(bom) {
				p.bom = -1
			}
			continue
		}
		// Not a BOM: what matched of one is stream data.
		matched := bom[:p.bom]
		p.bom = -1
		err = p.feed([]byte(matched), emit)
	}
	if e := p.feed(chunk, emit); err == nil {
		err = e
	}
	return err
}

func (p *SSEParser) feed(b []byte, emit func(Event)) error {
	var err error
	keep := func(e error) {
		if err == nil {
			err = e
		}
	}
	pos := 0
	nl := -1 // the next LF at or after pos, or len(b)
	for pos < len(b) {
		if p.skipLF {
			p.skipLF = false
			if b[pos] == '\n' {
				pos++
				continue
			}
		}
		if nl < pos {
			nl = len(b)
			if k := bytes.IndexByte(b[pos:], '\n'); k >= 0 {
				nl = pos + k
			}
		}
		end := nl
		if k := bytes.IndexByte(b[pos:nl], '\r'); k >= 0 {
			end = pos + k
		}
		if end == len(b) { // no line end in this chunk
			keep(p.partial(b[pos:]))
			return err
		}
		keep(p.lineEnd(b[pos:end], emit))
		p.skipLF = b[end] == '\r'
		pos = end + 1
	}
	return err
}

// fits reports whether a line of n bytes may be buffered for the current
// event.
func (p *SSEParser) fits(n int) bool {
	if p.comment {
		return n <= p.max
	}
	return p.blockBytes+n <= p.max
}

// partial takes bytes of a line whose end has not come yet.
func (p *SSEParser) partial(b []byte) error {
	if !p.inLine {
		p.inLine, p.comment = true, b[0] == ':'
	}
	if p.discarding {
		return nil
	}
	if !p.fits(len(p.line) + len(b)) {
		return p.overflow()
	}
	p.line = appendBounded(p.line, b, p.max)
	return nil
}

// lineEnd takes the rest of a line whose end has come.
func (p *SSEParser) lineEnd(b []byte, emit func(Event)) error {
	if !p.inLine {
		p.comment = len(b) > 0 && b[0] == ':'
	}
	blank := !p.inLine && len(b) == 0
	p.inLine = false
	if p.discarding {
		if blank {
			p.discarding = false
		}
		return nil
	}
	line := b
	if len(p.line) > 0 {
		if !p.fits(len(p.line) + len(b)) {
			return p.overflow()
		}
		p.line = appendBounded(p.line, b, p.max)
		line = p.line
	} else if !p.fits(len(b)) {
		return p.overflow()
	}
	p.processLine(line, emit)
	p.line = p.line[:0]
	return nil
}

// overflow drops the current event and its current line, to read on from
// the next blank line.
func (p *SSEParser) overflow() error {
	p.dropped++
	p.discarding = true
	p.line = p.line[:0]
	p.resetEvent()
	return fmt.Errorf("openai: dropped an event of over %d bytes: %w", p.max, ErrEventTooLarge)
}

func (p *SSEParser) resetEvent() {
	p.data, p.event = p.data[:0], p.event[:0]
	p.retry, p.blockBytes, p.pending = 0, 0, false
}

func (p *SSEParser) processLine(line []byte, emit func(Event)) {
	if len(line) == 0 {
		p.dispatch(emit)
		return
	}
	if line[0] == ':' {
		emit(Event{Comment: true, Data: string(dropSpace(line[1:]))})
		return
	}
	p.blockBytes += len(line)
	p.pending = true
	name, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		name, value = line[:i], dropSpace(line[i+1:])
	}
	switch string(name) {
	case "data":
		p.data = appendBounded(p.data, value, p.max)
		p.data = appendBounded(p.data, []byte{'\n'}, p.max)
	case "event":
		p.event = appendBounded(p.event[:0], value, p.max)
	case "id":
		if bytes.IndexByte(value, 0) < 0 && string(value) != p.id {
			p.id = string(value)
		}
	case "retry":
		if n, ok := digits(value); ok {
			p.retry = n
		}
	}
}

func dropSpace(b []byte) []byte {
	if len(b) > 0 && b[0] == ' ' {
		return b[1:]
	}
	return b
}

// digits reads a retry value: ASCII digits only.
func digits(b []byte) (int, bool) {
	if len(b) == 0 {
		return 0, false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(string(b))
	return n, err == nil
}

func (p *SSEParser) dispatch(emit func(Event)) {
	defer p.resetEvent()
	if len(p.data) == 0 {
		return
	}
	if string(p.event) != p.lastType {
		p.lastType = string(p.event)
	}
	emit(Event{
		Event: p.lastType,
		Data:  string(p.data[:len(p.data)-1]),
		ID:    p.id,
		Retry: p.retry,
	})
}

// Flush ends the stream. As the standard says, an event that the stream
// left unfinished (no blank line after it) is discarded, so emit is never
// called for it; Incomplete then reports true. Feed after Flush starts a
// new stream.
func (p *SSEParser) Flush(emit func(Event)) {
	_ = emit
	p.incomplete = p.inLine || p.pending || p.discarding || p.bom > 0
	dropped, incomplete := p.dropped, p.incomplete
	*p = SSEParser{max: p.max, line: p.line[:0], data: p.data[:0], event: p.event[:0]}
	p.dropped, p.incomplete = dropped, incomplete
}

// Incomplete reports whether the last Flush discarded an unfinished event
// or line.
func (p *SSEParser) Incomplete() bool { return p.incomplete }

// Dropped reports how many events were dropped for being over the bound.
func (p *SSEParser) Dropped() int { return p.dropped }

// appendBounded appends src to dst, growing dst to a capacity of at most
// limit (the callers never need more).
func appendBounded(dst, src []byte, limit int) []byte {
	need := len(dst) + len(src)
	if need > cap(dst) {
		c := max(2*cap(dst), need, 64)
		c = min(c, max(limit, need))
		grown := make([]byte, len(dst), c)
		copy(grown, dst)
		dst = grown
	}
	return append(dst, src...)
}
