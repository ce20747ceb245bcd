// Package termsafe makes untrusted text (what workloads sent to an LLM API,
// as the audit records hold it) safe to show on a terminal. A prompt may
// hold ANSI escape sequences that clear the screen, move the cursor or
// rewrite the title, a carriage return that overwrites a line, an OSC 8
// hyperlink, or Unicode bidi controls that reorder what is shown: printed
// raw, they hide or forge lines of an audit trail. String and JSON replace
// those characters with visible escapes.
package termsafe

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// unsafe reports whether a terminal may act on r rather than show it:
// C0 controls (ESC, CR, BS, …), DEL, C1 controls (CSI, OSC, NEL, …),
// Unicode's line and paragraph separators, and its bidi formatting
// characters (marks, embeddings, overrides and isolates; Unicode TR 9,
// table 4, and CVE-2021-42574, "Trojan Source").
func unsafe(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, r == 0x2028, r == 0x2029:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}

// String returns s with each character a terminal may act on written as
// a visible escape: \x1b for ASCII controls, \u202e for others, and \xff
// for each byte that is not UTF-8 (which some terminals read as a C1
// control). Everything else is left as it is, backslashes included.
func String(s string) string {
	if !needsEscape(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < 0x80 && unsafe(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafe(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func needsEscape(s string) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if unsafe(r) || r == utf8.RuneError && size == 1 {
			return true
		}
		i += size
	}
	return false
}

// JSON returns the JSON text j (as encoding/json writes it: valid UTF-8,
// ASCII controls in strings escaped) with the other characters a terminal
// may act on written as \u escapes: DEL, C1 controls and bidi formatting
// characters, which encoding/json leaves raw. Outside strings JSON text
// is ASCII, so each such character is inside a string, where its escape
// decodes to the same value: the result is the same JSON. ASCII controls
// are left alone (outside strings they are the indentation), and so are
// bytes that are not UTF-8.
func JSON(j []byte) []byte {
	if !needsEscape(string(j)) {
		return j
	}
	out := make([]byte, 0, len(j)+16)
	for i := 0; i < len(j); {
		r, size := utf8.DecodeRune(j[i:])
		if r >= 0x7f && r != utf8.RuneError && unsafe(r) {
			out = fmt.Appendf(out, `\u%04x`, r)
		} else {
			out = append(out, j[i:i+size]...)
		}
		i += size
	}
	return out
}
