// Package mask replaces secrets with markers: before a prompt leaves the node
// every credential a Detector finds in it is replaced by
//
//	[MASKED:<rule-id>:<fingerprint>]
//
// where the fingerprint is the first 8 hex digits of HMAC-SHA256 under a
// per-deployment Key (LoadOrCreateKey), so that the same secret always gives
// the same marker on one deployment and nothing about it can be learnt
// elsewhere. The same is done to responses as they stream back.
//
// Three forms of input are handled:
//
//   - Masker.Text masks plain text.
//   - Masker.JSON masks the string values of a JSON document on their decoded
//     form (so that a PEM key written with \n escapes, or "sk-" written as
//     "\u0073k-", is found) and leaves every other byte of the document as it
//     was: numbers, white space, key order and strings in which nothing was
//     found are copied unchanged. Object keys are masked as values are, and
//     a key that holds a secret is masked where it appears in a Finding's
//     Path.
//   - Masker.NewStream masks text that arrives in pieces, such as the
//     content deltas of one choice of a streamed completion. A Stream emits
//     at once whatever cannot become part of a secret and holds back only
//     what could (Detector.Pending). For every chunking of a text the
//     concatenation of what a Stream emits equals Masker.Text of the whole
//     text, byte for byte, unless the held text outgrows
//     Detector.MaxPending (see HeldTextCapRule). StreamSet keeps one Stream
//     per field of a streamed response.
//
// A Finding reports a masked secret by rule, place and fingerprint; it never
// holds the secret or any part of it.
//
// A Masker is safe for concurrent use if its Detector is; a Stream and a
// StreamSet are not.
//
// What a Stream needs of a Detector: Find reports a match independently of
// the text before it, other than a few bytes (word-boundary checks) and the
// matches that precede it; and Pending(t) = p means that, whatever text is
// appended to t, Find reports the same matches starting before p, and
// context that a match needs before its start (a keyword) is not before p.
// The Stream emits the masked text up to p, or to the end of a match that
// p falls into, but never a match that reaches the end of the text it has
// (which could still grow); then it runs the detector again on what
// follows, preceded by the last 64 emitted bytes as context. A match that
// reaches from that context into the held text shows that Pending released
// the start of a secret: the rest of it is masked. A detector that breaks
// these rules makes a Stream's output differ from Masker.Text's, and can
// make it leak what Pending released.
package mask

import "errors"

// ErrInvalidJSON is wrapped by the error of Masker.JSON when the document is
// not valid JSON (which was then masked as plain text).
var ErrInvalidJSON = errors.New("document is not valid JSON")
