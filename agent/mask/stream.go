package mask

import (
	"unicode/utf8"

	"github.com/promptrail/promptrail/agent/secrets"
)

// ctxLen is how many bytes of already emitted text a Stream keeps in front
// of the text it holds, so that the detector sees what comes before the
// held text (a word boundary, a keyword) as Masker.Text would.
const ctxLen = 64

// While a Stream holds more than evalAlways bytes, it runs the detector
// again only once the held text has grown by 1/evalFraction since it last
// did (or outgrew MaxPending), so that a long held text costs the detector
// O(n log n) work, not O(n²).
const (
	evalAlways   = 1 << 10
	evalFraction = 16
)

// In capped mode a Stream keeps at most capHead bytes of the start of the
// capped text and capTail bytes of the latest text.
const (
	capHead = 1 << 10
	capTail = 3 << 10
)

// Stream masks text that arrives in chunks, such as the content deltas of one
// choice of a streamed completion. Write returns at once the masked text up
// to the first byte that could still become part of a secret
// (Detector.Pending) and holds the rest back, so that text without
// secret-like tails flows through without delay. For every chunking of a
// text, the concatenation of what Write and Close return equals Masker.Text
// of the whole text, byte for byte, as long as the held text never outgrows
// Detector.MaxPending (see HeldTextCapRule for what happens then).
//
// The detector looks at the held text (and a few bytes before it) on every
// Write while the Stream holds at most 1 KiB, which is always the case for
// text without secrets. Beyond that it looks again only after the held text
// has grown by a sixteenth, so that a long secret arriving in small deltas
// does not cost time quadratic in its length; the text that follows such a
// secret is then released up to that much later.
//
// A Stream is not safe for concurrent use.
type Stream struct {
	m           *Masker
	where, path string
	max         int // Detector.MaxPending, at least 2
	// buf holds ctx bytes of emitted text, then the held text; while
	// capped (head > 0), buf[:head] is the start of the capped text and
	// buf[head:] the latest text after it.
	buf   []byte
	ctx   int
	head  int
	fresh int // bytes received since the detector last ran
	done  bool
	fs    findingSet
}

// NewStream returns a Stream whose findings carry where and path.
func (m *Masker) NewStream(where, path string) *Stream {
	return &Stream{m: m, where: where, path: path, max: max(m.d.MaxPending(), 2)}
}

// Write adds chunk to the stream and returns the masked text that is safe to
// emit now, which may be empty. The result is a new slice; chunk is not
// retained. After Close or Abort, Write drops chunk and returns nil.
func (s *Stream) Write(chunk []byte) (emit []byte) {
	if s.done || len(chunk) == 0 {
		return nil
	}
	s.buf = append(s.buf, chunk...)
	s.fresh += len(chunk)
	if h := s.Held(); h > evalAlways && h <= s.max && s.fresh < h/evalFraction {
		return nil
	}
	s.fresh = 0
	if s.head > 0 {
		return s.capped(nil, false)
	}
	return s.step(nil, false)
}

// Close ends the stream: it masks and returns everything held (except what a
// cap keeps masked). Later calls return nil.
func (s *Stream) Close() (emit []byte) {
	if s.done {
		return nil
	}
	if s.head > 0 {
		emit = s.capped(nil, true)
	} else {
		emit = s.step(nil, true)
	}
	s.release()
	return emit
}

// Abort ends the stream on a client disconnect or an upstream error: the
// held text is dropped, never emitted.
func (s *Stream) Abort() {
	if !s.done {
		s.release()
	}
}

// Findings returns the secrets masked in what the stream emitted so far,
// merged by rule and fingerprint.
func (s *Stream) Findings() []Finding { return s.fs.findings() }

// Held returns how many bytes of received text the stream holds back (not
// counting the few emitted bytes it keeps as context). After every Write it
// is at most Detector.MaxPending.
func (s *Stream) Held() int {
	if s.head > 0 {
		return len(s.buf)
	}
	return len(s.buf) - s.ctx
}

// release drops the buffer and overwrites what it held.
func (s *Stream) release() {
	clear(s.buf[:cap(s.buf)])
	s.buf, s.ctx, s.head, s.done = nil, 0, 0, true
}

// step appends to out the masked text that can be emitted (all of it if
// final) and keeps the rest.
func (s *Stream) step(out []byte, final bool) []byte {
	win, n := s.buf, s.ctx
	cut := len(win)
	if !final {
		cut = runeStart(win, n, min(max(s.m.d.Pending(win), n), len(win)))
	}
	if cut > n {
		var ms []secrets.Match
		ms, cut = s.region(win, n, cut, final)
		out = s.m.appendMasked(out, win, n, cut, ms, s.where, s.path, &s.fs)
	}
	if !final && len(win)-cut > s.max {
		return s.startCap(out, cut)
	}
	s.drop(cut, ctxLen)
	return out
}

// runeStart moves cut back to the start of the UTF-8 sequence that it
// splits, if any (but not before n), so that a Stream fed valid UTF-8 emits
// valid UTF-8 in every piece: a caller puts each piece in its own JSON
// string.
func runeStart(win []byte, n, cut int) int {
	for s := cut - 1; s >= n && s > cut-utf8.UTFMax; s-- {
		if utf8.RuneStart(win[s]) {
			if !utf8.FullRune(win[s:cut]) {
				return s
			}
			break
		}
	}
	return cut
}

// region returns the matches to apply to win[n:cut] and the cut moved over
// a match that it falls into, to the end of the match. Unless final, a
// match that reaches the end of win could still grow, so the cut moves
// back to its start (Pending should have said so). A match that reaches
// from the context into the held text means that Pending released the
// start of a secret (or that the detector reports a match here that
// Masker.Text would not): its part in the held text is masked.
func (s *Stream) region(win []byte, n, cut int, final bool) ([]secrets.Match, int) {
	var ms []secrets.Match
	for _, x := range normalize(s.m.d.Find(win), len(win)) {
		if x.End <= n {
			continue
		}
		if x.Start >= cut {
			break
		}
		if !final && x.End == len(win) {
			return ms, max(x.Start, n)
		}
		x.Start = max(x.Start, n)
		cut = max(cut, x.End)
		ms = append(ms, x)
	}
	return ms, cut
}

// drop removes buf[:cut] but for its last keep bytes, which become the
// context, and overwrites what was removed.
func (s *Stream) drop(cut, keep int) {
	from := max(cut-keep, 0)
	s.ctx = cut - from
	if from == 0 {
		return
	}
	n := copy(s.buf, s.buf[from:])
	clear(s.buf[n:])
	s.buf = s.buf[:n]
	if c := cap(s.buf); c > 4096 && c > 4*n {
		// A large chunk grew the buffer; do not keep that much.
		nb := make([]byte, n, 2*n)
		copy(nb, s.buf)
		clear(s.buf)
		s.buf = nb
	}
}

// startCap masks the held text buf[cut:], which outgrew the limit, and
// switches to capped mode, keeping the start of the held text as the head.
func (s *Stream) startCap(out []byte, cut int) []byte {
	out = s.m.appendMarker(out, HeldTextCapRule, s.buf[cut:], s.where, s.path, &s.fs)
	s.drop(cut, 0)
	s.head = max(runeStart(s.buf, 1, min(len(s.buf), s.max/2, capHead)), 1)
	s.trimTail()
	return out
}

// trimTail keeps, after the head, only the latest max-head (at most
// capTail) bytes, from the start of a UTF-8 sequence.
func (s *Stream) trimTail() {
	tail := max(min(s.max-s.head, capTail), 1)
	extra := len(s.buf) - s.head - tail
	if extra <= 0 {
		return
	}
	for s.head+extra < len(s.buf)-1 && !utf8.RuneStart(s.buf[s.head+extra]) {
		extra++
	}
	n := s.head + copy(s.buf[s.head:], s.buf[s.head+extra:])
	clear(s.buf[n:])
	s.buf = s.buf[:n]
}

// capped handles text in capped mode. As long as the detector considers a
// position in the head pending, what arrives is dropped (but for a tail
// that lets the detector see the end of a secret). Then the text after the
// end of a secret that starts in the head, or after the head, is ordinary
// text again. At the end of the stream, an unresolved head drops
// everything.
func (s *Stream) capped(out []byte, final bool) []byte {
	win, h := s.buf, s.head
	if !final && s.m.d.Pending(win) < h {
		s.trimTail()
		return out
	}
	end := -1
	for _, x := range normalize(s.m.d.Find(win), len(win)) {
		if x.Start >= h {
			break
		}
		end = x.End
	}
	s.head = 0
	if end < 0 && final {
		s.drop(len(win), 0)
		return out
	}
	s.drop(max(h, end), 0)
	return s.step(out, final)
}
