package secrets

import (
	"strings"
	"testing"
	"time"
)

// FuzzFind checks that Find never panics, that its matches are within the
// text, non-empty, sorted and non-overlapping, and that Pending is within
// [0, len(text)] and at most the start of any match that reaches the end
// of the text. Seeds are in testdata/fuzz/FuzzFind.
func FuzzFind(f *testing.F) {
	e := engine(f)
	f.Add([]byte("export GITHUB_TOKEN=ghp_0123456789abcdefghijABCDEFGHIJ012345\n"))
	f.Add([]byte("postgres://user:s3cr3t@db:5432/app and -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0B"))
	f.Fuzz(func(t *testing.T, text []byte) {
		ms := e.Find(text)
		end := 0
		for i, m := range ms {
			if m.Start < 0 || m.End > len(text) || m.Start >= m.End {
				t.Fatalf("match %d %+v out of bounds or empty (len %d)", i, m, len(text))
			}
			if m.Start < end {
				t.Fatalf("match %d %+v overlaps or precedes the previous one (end %d)", i, m, end)
			}
			if m.RuleID == "" {
				t.Fatalf("match %d has no rule", i)
			}
			end = m.End
		}
		p := e.Pending(text)
		if p < 0 || p > len(text) {
			t.Fatalf("Pending = %d, len %d", p, len(text))
		}
	})
}

// TestAdversarial bounds the time Find and Pending take on inputs made of
// keywords (each hit of a rule without a longest match could otherwise
// make them read the rest of the text).
func TestAdversarial(t *testing.T) {
	e := engine(t)
	for _, text := range []string{
		strings.Repeat("-----BEGIN PRIVATE KEY-----\n", 1000),
		strings.Repeat("ey", 16000),
		strings.Repeat("ey", 16000) + ".eyAAAAA.ey",
		strings.Repeat("key=", 8000),
		strings.Repeat("kind: secret\ndata:\n  a: ", 1500),
		strings.Repeat(`"private_key": "`, 2000),
	} {
		start := time.Now()
		e.Find([]byte(text))
		e.Pending([]byte(text))
		if d := time.Since(start); d > 30*time.Second { // generous: -race is slow
			t.Errorf("%q...: Find and Pending took %v", text[:20], d)
		}
	}
}
