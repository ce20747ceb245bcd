package secrets

import (
	"bufio"
	"os"
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
