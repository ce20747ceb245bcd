package secrets

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// TestAssignments checks the rules for secrets known by the name they are
// assigned to: each line of testdata/assignments/secrets.txt is found, by
// its rule, exactly where its ⟦marks⟧ say; no line of
// testdata/assignments/code.txt (source code that assigns expressions to
// such names) is reported by any rule.
func TestAssignments(t *testing.T) {
	e := engine(t)
	t.Run("secrets", func(t *testing.T) {
		for _, line := range testdataLines(t, "testdata/assignments/secrets.txt") {
			rule, marked, ok := strings.Cut(line, "\t")
			if !ok {
				t.Fatalf("bad line %q", line)
			}
			before, rest, _ := strings.Cut(marked, "⟦")
			secret, after, _ := strings.Cut(rest, "⟧")
			text := before + secret + after
			ms := e.Find([]byte(text))
			want := Match{RuleID: rule, Start: len(before), End: len(before) + len(secret)}
			if len(ms) != 1 || ms[0] != want {
				t.Errorf("%s: got %v, want %v (%q)", text, ms, want, secret)
			}
		}
	})
	t.Run("source code", func(t *testing.T) {
		for _, line := range testdataLines(t, "testdata/assignments/code.txt") {
			if ms := e.Find([]byte(line)); len(ms) > 0 {
				t.Errorf("%q: reported %v", line, ms)
			}
		}
	})
}

// testdataLines returns the lines of file that are neither empty nor
// comments (# or //).
func testdataLines(t *testing.T, file string) []string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "//") {
			continue
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAssignmentRulesQuietOnSourceCode holds the rules for secrets known by
// their name to no match at all on ordinary code and text: the corpus, and
// the Go, Python and JavaScript sources on this machine that handle keys,
// tokens and passwords (whichever are installed).
func TestAssignmentRulesQuietOnSourceCode(t *testing.T) {
	rules := []string{"azure-storage-account-key", "aws-secret-access-key", "generic-secret-assignment"}
	var off []string
	for _, r := range engine(t).rules {
		if !slices.Contains(rules, r.id) {
			off = append(off, r.id)
		}
	}
	e, err := NewEngine(Config{DisabledRules: off})
	if err != nil {
		t.Fatal(err)
	}
	docs := corpus(t)
	for _, pattern := range []string{
		filepath.Join(runtime.GOROOT(), "src", "crypto", "*", "*.go"),
		filepath.Join(runtime.GOROOT(), "src", "crypto", "internal", "fips140", "*", "*.go"),
		filepath.Join(runtime.GOROOT(), "src", "runtime", "*.go"),
		filepath.Join(runtime.GOROOT(), "src", "cmd", "go", "internal", "*", "*.go"),
		filepath.Join(runtime.GOROOT(), "src", "go", "*", "*.go"),
		filepath.Join(runtime.GOROOT(), "src", "net", "smtp", "*.go"),
		filepath.Join(runtime.GOROOT(), "src", "database", "sql", "*.go"),
		"/usr/lib/python3*/*.py",
		"/usr/lib/python3*/*/*.py",
		"../../e2e/node/node_modules/openai/*.js",
		"../../e2e/node/node_modules/openai/*/*.js",
	} {
		files, _ := filepath.Glob(pattern)
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil {
				docs = append(docs, doc{f, string(b)})
			}
		}
	}
	total := 0
	for _, d := range docs {
		total += len(d.text)
		for _, m := range e.Find([]byte(d.text)) {
			t.Errorf("%s: %s reports %q", d.name, m.RuleID, d.text[max(m.Start-40, 0):m.End])
		}
	}
	t.Logf("%d documents, %.1f MB", len(docs), float64(total)/1e6)
}
