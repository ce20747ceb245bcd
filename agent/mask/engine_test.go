package mask

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/promptrail/promptrail/agent/secrets"
)

// The package's property tests, run against the real detector.

var _ Detector = (*secrets.Engine)(nil)

// engine is built once for all tests: it takes half a second (six under
// the race detector). An Engine is safe for concurrent use.
var engine = sync.OnceValues(func() (*secrets.Engine, error) {
	return secrets.NewEngine(secrets.Config{})
})

func newEngineMasker(t testing.TB) *Masker {
	t.Helper()
	e, err := engine()
	if err != nil {
		t.Fatal(err)
	}
	return New(e, testKey())
}

// engineCorpus returns the texts under testdata/engine (secrets in the
// shapes of gitleaks' rules) and testdata/stream.
func engineCorpus(t testing.TB) map[string][]byte {
	t.Helper()
	texts := corpus(t)
	files, err := filepath.Glob(filepath.Join("testdata", "engine", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no engine corpus: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		texts["engine/"+filepath.Base(f)] = b
	}
	return texts
}

func TestEngineStreamEqualsText(t *testing.T) {
	m := newEngineMasker(t)
	texts := engineCorpus(t)
	for _, name := range sortedNames(texts) {
		var rules []string
		for _, x := range m.d.Find(texts[name]) {
			rules = append(rules, x.RuleID)
		}
		t.Logf("%s: %d secrets: %s", name, len(rules), strings.Join(rules, " "))
		if len(rules) == 0 && strings.HasPrefix(name, "engine/") && !strings.Contains(name, "clean") {
			t.Errorf("%s: the engine finds no secret", name)
		}
	}
	checkStreamCorpus(t, m, texts, 20)
}

func TestEngineHoldBack(t *testing.T) {
	texts := engineCorpus(t)
	maxHeld, total, writes := holdBack(t, newEngineMasker(t), false,
		texts["clean_prose.txt"], texts["clean_code.txt"], texts["engine/clean.txt"])
	t.Logf("at most %d bytes held; %d held bytes summed over %d writes", maxHeld, total, writes)
}

func TestEngineJSON(t *testing.T) {
	m := newEngineMasker(t)
	files, _ := filepath.Glob(filepath.Join("testdata", "json", "*.json"))
	for _, f := range files {
		doc, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out, fs, err := m.JSON("request", doc)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		checkJSONMasked(t, m, doc, out)
		checkNoSecret(t, out, jsonSecrets(t, m.d, doc, false))
		if len(fs) == 0 && !bytes.Equal(out, doc) {
			t.Errorf("%s: changed without findings", f)
		}
		t.Logf("%s: %d findings", filepath.Base(f), len(fs))
	}
}

// FuzzStreamEngine is FuzzStream with the real detector: every chunking
// gives Text's output and findings, and the held text stays within
// MaxPending.
func FuzzStreamEngine(f *testing.F) {
	f.Add([]byte("token: ghp_0123456789abcdefghijABCDEFGHIJ012345\n"), []byte{3, 3, 3, 3, 3, 3, 3, 3, 3, 3})
	m := newEngineMasker(f)
	f.Fuzz(func(t *testing.T, text, lens []byte) {
		chunks := chunksOf(text, lens)
		want, wantFs := m.Text("response", "$.choices[0].delta.content", text)
		got, s := runStream(t, m, chunks, want)
		if !bytes.Equal(got, want) {
			t.Fatalf("chunks %q:\n got %q\nwant %q", chunks, got, want)
		}
		if fs := s.Findings(); !slices.Equal(fs, wantFs) {
			t.Fatalf("chunks %q: findings %+v, want %+v", chunks, fs, wantFs)
		}
	})
}

// TestEngineCap: with the real detector, a private key that outgrows
// MaxPending is masked whole, closed or not, and the text after its end is
// released. (The engine's private-key-block rule reports an unclosed key
// up to its last line break, which is then released.)
func TestEngineCap(t *testing.T) {
	if raceEnabled || testing.Short() {
		t.Skip("streams 80 KiB through the detector")
	}
	m := newEngineMasker(t)
	line := "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7abcdefghijkl\n"
	body := "-----BEGIN RSA PRIVATE KEY-----\n" + strings.Repeat(line, 80<<10/len(line))
	marker := `^key:\n\[MASKED:` + HeldTextCapRule + `:[0-9a-f]{8}\]`
	for _, tt := range []struct{ name, text, want string }{
		{"unclosed", "key:\n" + body, marker + `\n?$`},
		{"closed", "key:\n" + body + "-----END RSA PRIVATE KEY-----\nThat was it.", marker + `\nThat was it\.$`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			text := []byte(tt.text)
			got, s := runStream(t, m, splitAt(text, seqStep(4096, len(text), 4096)...), nil)
			if !regexp.MustCompile(tt.want).Match(got) {
				t.Fatalf("got %q, want %s", got, tt.want)
			}
			t.Logf("%d bytes: %q, findings %+v", len(text), got, s.Findings())
		})
	}
}
