package mask

import (
	"bytes"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/promptrail/promptrail/agent/secrets"
)

// The package's property tests, run against the real detector.

var _ Detector = (*secrets.Engine)(nil)

func newEngineMasker(t testing.TB) *Masker {
	t.Helper()
	e, err := secrets.NewEngine(secrets.Config{})
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
	for _, text := range slices.Collect(maps.Values(engineCorpus(f))) {
		f.Add(text, []byte{5, 3, 9, 1, 17, 5, 5, 2})
	}
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
