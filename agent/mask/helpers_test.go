package mask

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"unicode/utf8"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// testKey is a fixed key, so that golden files hold fixed fingerprints.
func testKey() Key {
	k := make(Key, KeySize)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

func newTestMasker(maxPending int) *Masker {
	return New(newTestDetector(maxPending), testKey())
}

// corpus reads the texts under testdata/stream, by file name.
func corpus(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "stream", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no stream corpus: %v", err)
	}
	texts := make(map[string][]byte)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		texts[filepath.Base(f)] = b
	}
	return texts
}

func sortedNames(m map[string][]byte) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// secretsOf returns the secrets that d finds in text.
func secretsOf(d Detector, text []byte) [][]byte {
	var out [][]byte
	for _, m := range d.Find(text) {
		out = append(out, text[m.Start:m.End])
	}
	return out
}

// checkNoSecret fails if out holds one of secrets.
func checkNoSecret(t *testing.T, out []byte, secrets [][]byte) {
	t.Helper()
	for _, s := range secrets {
		if bytes.Contains(out, s) {
			t.Fatalf("output holds the secret %q:\n%s", s, out)
		}
	}
}

// runStream writes chunks to a new Stream and returns the concatenated
// output, checking that the output so far is always a prefix of want (nil:
// no check), that every piece is valid UTF-8 if the text is, and that the
// held text stays within max.
func runStream(t testing.TB, m *Masker, chunks [][]byte, want []byte) ([]byte, *Stream) {
	t.Helper()
	s := m.NewStream("response", "$.choices[0].delta.content")
	var out []byte
	max := m.d.MaxPending()
	valid := utf8.Valid(bytes.Join(chunks, nil))
	for i, c := range chunks {
		piece := s.Write(c)
		if valid && !utf8.Valid(piece) {
			t.Fatalf("after chunk %d (%q) emitted %q, not valid UTF-8", i, c, piece)
		}
		out = append(out, piece...)
		if want != nil && !bytes.HasPrefix(want, out) {
			t.Fatalf("after chunk %d (%q) the output is not a prefix of the masked text:\n got %q\nwant %q", i, c, out, want)
		}
		if h := s.Held(); h > max {
			t.Fatalf("after chunk %d the stream holds %d bytes, over %d", i, h, max)
		}
	}
	out = append(out, s.Close()...)
	return out, s
}

// splitAt splits b at the given increasing offsets.
func splitAt(b []byte, offs ...int) [][]byte {
	var out [][]byte
	prev := 0
	for _, o := range offs {
		out = append(out, b[prev:o])
		prev = o
	}
	return append(out, b[prev:])
}

// golden compares got with the file path, or rewrites it with -update.
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s:\n got %s\nwant %s", path, got, want)
	}
}
