package mask

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"unicode/utf8"
)

// The fuzz targets' seed corpora are under testdata/fuzz/<Name>/.

// chunksOf splits text into chunks whose lengths are the bytes of lens
// modulo 40 (0: an empty chunk); the rest of text is the last chunk.
func chunksOf(text, lens []byte) [][]byte {
	var chunks [][]byte
	for _, l := range lens {
		n := min(int(l)%40, len(text))
		chunks = append(chunks, text[:n])
		text = text[n:]
	}
	return append(chunks, text)
}

// FuzzStream: a stream never panics; with room to hold any secret, every
// chunking gives Text's output and findings, and the output so far is
// always a prefix of it, in pieces of valid UTF-8 if the text is; with a
// small MaxPending, the held text stays
// within it and no secret is emitted.
func FuzzStream(f *testing.F) {
	f.Add([]byte("key sk-abcdefghijklmnopqrstuvwxyz0123 end"), []byte{5, 5, 5, 5, 5})
	large, small := newTestMasker(1<<20), newTestMasker(48)
	f.Fuzz(func(t *testing.T, text, lens []byte) {
		chunks := chunksOf(text, lens)
		want, wantFs := large.Text("response", "$.choices[0].delta.content", text)
		got, s := runStream(t, large, chunks, want)
		if !bytes.Equal(got, want) {
			t.Fatalf("chunks %q:\n got %q\nwant %q", chunks, got, want)
		}
		if fs := s.Findings(); !slices.Equal(fs, wantFs) {
			t.Fatalf("chunks %q: findings %+v, want %+v", chunks, fs, wantFs)
		}
		got, _ = runStream(t, small, chunks, nil)
		checkNoSecret(t, got, secretsOf(small.d, text))
	})
}

// FuzzJSON: masking never panics; valid JSON stays valid and decodes to the
// input with its string values masked as Text masks them, and is returned
// unchanged if nothing was found; invalid JSON is reported.
func FuzzJSON(f *testing.F) {
	f.Add([]byte(`{"messages":[{"role":"user","content":"\u0073k-abcdefghijklmnopqrstuvwxyz"}]}`))
	m := newTestMasker(1 << 16)
	f.Fuzz(func(t *testing.T, doc []byte) {
		out, fs, err := m.JSON("request", doc)
		if !json.Valid(doc) {
			if !errors.Is(err, ErrInvalidJSON) {
				t.Fatalf("invalid JSON %q: error %v", doc, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("valid JSON %q: %v", doc, err)
		}
		if len(fs) == 0 && !bytes.Equal(out, doc) {
			t.Fatalf("nothing found, but %q became %q", doc, out)
		}
		if !json.Valid(out) {
			t.Fatalf("%q masked to invalid JSON %q", doc, out)
		}
		if utf8.Valid(doc) {
			checkJSONMasked(t, m, doc, out)
		}
	})
}
