package mask

import (
	"bytes"
	"regexp"
	"slices"
	"testing"

	"github.com/promptrail/promptrail/agent/secrets"
)

func TestText(t *testing.T) {
	m := newTestMasker(1 << 16)
	k := testKey()
	sk := "sk-abcdefghijklmnopqrstuvwxyz0123456789"
	ak := "AKIAABCDEFGHIJKLMNOP"
	pem := "-----BEGIN RSA PRIVATE KEY-----\nMIIEabc\n-----END RSA PRIVATE KEY-----"
	tests := []struct {
		name     string
		text     string
		want     string
		findings []Finding
	}{
		{"nothing", "hello sk-short AKIA123", "hello sk-short AKIA123", nil},
		{"empty", "", "", nil},
		{"one key", "key=" + sk + ".", "key=" + k.Marker("openai-key", []byte(sk)) + ".",
			[]Finding{{Rule: "openai-key", Count: 1, Fingerprint: k.Fingerprint([]byte(sk)), Action: "block"}}},
		{"whole text", ak, k.Marker("aws-access-key", []byte(ak)),
			[]Finding{{Rule: "aws-access-key", Count: 1, Fingerprint: k.Fingerprint([]byte(ak)), Action: "mask"}}},
		{"repeats merge", sk + " " + ak + " " + sk,
			k.Marker("openai-key", []byte(sk)) + " " + k.Marker("aws-access-key", []byte(ak)) + " " + k.Marker("openai-key", []byte(sk)),
			[]Finding{
				{Rule: "openai-key", Count: 2, Fingerprint: k.Fingerprint([]byte(sk)), Action: "block"},
				{Rule: "aws-access-key", Count: 1, Fingerprint: k.Fingerprint([]byte(ak)), Action: "mask"},
			}},
		{"pem", "a\n" + pem + "\nb", "a\n" + k.Marker("private-key", []byte(pem)) + "\nb",
			[]Finding{{Rule: "private-key", Count: 1, Fingerprint: k.Fingerprint([]byte(pem)), Action: "mask"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, fs := m.Text("request", "$.prompt", []byte(tt.text))
			if string(got) != tt.want {
				t.Errorf("masked %q\nwant %q", got, tt.want)
			}
			for i := range tt.findings {
				tt.findings[i].Where, tt.findings[i].Path = "request", "$.prompt"
			}
			if !slices.Equal(fs, tt.findings) {
				t.Errorf("findings %+v\nwant %+v", fs, tt.findings)
			}
		})
	}
}

// TestTextCorpus: no secret survives, and masking is idempotent.
func TestTextCorpus(t *testing.T) {
	m := newTestMasker(1 << 16)
	marker := regexp.MustCompile(`\[MASKED:[a-z-]+:[0-9a-f]{8}\]`)
	for name, text := range corpus(t) {
		got, fs := m.Text("request", "", text)
		checkNoSecret(t, got, secretsOf(m.d, text))
		n := 0
		for _, f := range fs {
			n += f.Count
		}
		if c := len(marker.FindAll(got, -1)); c != n {
			t.Errorf("%s: %d markers, %d findings", name, c, n)
		}
		if again, _ := m.Text("request", "", got); !bytes.Equal(again, got) {
			t.Errorf("%s: masking the masked text changes it", name)
		}
		for _, f := range fs {
			for _, s := range secretsOf(m.d, text) {
				if bytes.Contains(s, []byte(f.Fingerprint)) {
					t.Errorf("%s: a fingerprint is part of a secret", name)
				}
			}
		}
	}
}

// badDetector reports overlapping, unsorted and out-of-range matches.
type badDetector struct{ *testDetector }

func (badDetector) Find(text []byte) []secrets.Match {
	n := len(text)
	return []secrets.Match{
		{RuleID: "b", Start: n / 2, End: n + 5}, {RuleID: "a", Start: -3, End: n / 3},
		{RuleID: "c", Start: n / 4, End: n / 2}, {RuleID: "d", Start: 2, End: 2},
	}
}

func (badDetector) Pending(text []byte) int { return len(text) + 3 }

func TestBadDetector(t *testing.T) {
	m := New(badDetector{newTestDetector(64)}, testKey())
	text := []byte("0123456789abcdefghij")
	got, fs := m.Text("request", "", text)
	want := testKey().Marker("a", text[:10]) + testKey().Marker("b", text[10:])
	if string(got) != want || len(fs) != 2 {
		t.Errorf("masked %q, %d findings; want %q", got, len(fs), want)
	}
	// A Stream survives it.
	out, _ := runStream(t, m, splitAt(text, 3, 7, 15), nil)
	if bytes.Contains(out, text[10:]) {
		t.Errorf("stream output %q", out)
	}
}
