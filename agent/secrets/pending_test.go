package secrets

import (
	"testing"
)

// TestPendingSecrets checks, for every sample in every context and every
// split point k that cuts into the secret or falls right after it, that
// Pending(text[:k]) is at most the start of the secret: a streaming masker
// never releases the first part of a secret. For long secrets (private
// keys) every 7th split point is checked, and the ones near both ends.
func TestPendingSecrets(t *testing.T) {
	e := engine(t)
	checked := 0
	for _, s := range samples(t) {
		for name, text := range contexts(t, s.text, s.keyword) {
			want, ok := secretIn(e, text, s.text)
			if !ok {
				t.Errorf("%s (%s): sample not found", s.rule, name)
				continue
			}
			for k := want.Start + 1; k <= want.End; k++ {
				if want.End-want.Start > 300 && k-want.Start > 40 && want.End-k > 40 && k%7 != 0 {
					continue
				}
				checked++
				if p := e.Pending([]byte(text[:k])); p > want.Start {
					t.Errorf("%s (%s): Pending(text[:%d]) = %d > secret start %d; tail %q",
						s.rule, name, k, p, want.Start, text[max(0, want.Start-20):k])
					break
				}
			}
		}
	}
	t.Logf("%d split points checked", checked)
}

// TestPendingHoldBack measures how much of ordinary text Pending holds
// back: at every 61st byte of each corpus document, the hold-back of
// Pending over the last 4 KiB (what a streaming masker passes: a little
// released context and the held text). Its average must stay below 6
// bytes, and most positions must release everything.
func TestPendingHoldBack(t *testing.T) {
	e := engine(t)
	const window = 4 << 10
	var n, zero, held, worst int
	worstAt := ""
	for _, d := range corpus(t) {
		for k := 1; k <= len(d.text); k += 61 {
			w := d.text[max(0, k-window):k]
			h := len(w) - e.Pending([]byte(w))
			n++
			held += h
			if h == 0 {
				zero++
			}
			if h > worst {
				worst, worstAt = h, d.name+": "+w[len(w)-min(len(w), 80):]
			}
		}
	}
	avg := float64(held) / float64(n)
	t.Logf("hold-back over %d positions: average %.2f bytes, none held at %.1f%%, worst %d bytes (%q)",
		n, avg, 100*float64(zero)/float64(n), worst, worstAt)
	if avg > 6 {
		t.Errorf("average hold-back %.2f bytes, want at most 6", avg)
	}
}

// TestPendingGrowingMatch checks that a match that is complete but could
// still grow is held: a token at the very end of the text.
func TestPendingGrowingMatch(t *testing.T) {
	e := engine(t)
	for _, text := range []string{
		"my token is ghp_0123456789abcdefghijABCDEFGHIJ012345",
		"export OPENAI_API_KEY=sk-proj-" + "abcdefghij0123456789ABCDEFGHIJabcdefghij0123456789ABCDEFGHIJabcdefghij0123",
		"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7",
		"postgres://app:hunter2hunter2",
		"Authorization: Bearer abcdefgh",
		"00ghp_0000000", // no \b before ghp_: the word before does not stop it
	} {
		p := e.Pending([]byte(text))
		if p == len(text) {
			t.Errorf("Pending(%q) = len(text): the tail could still become a secret", text)
		}
	}
	for _, text := range []string{"", "hello world. ", "The quick brown fox.\n", "x := 42\n"} {
		if p := e.Pending([]byte(text)); p != len(text) {
			t.Errorf("Pending(%q) = %d, want %d", text, p, len(text))
		}
	}
}
