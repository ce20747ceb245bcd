package proxy

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// fuzzCodings are the coding lists FuzzDecodeBody picks from.
var fuzzCodings = [][]string{{"gzip"}, {"deflate"}, {"br"}, {"zstd"}, {"gzip", "br"}, {"zstd", "deflate"}, {"compress"}}

// FuzzDecodeBody feeds arbitrary bytes to the decoder of each coding: it
// never panics, never returns more than the limit, and decodes what was
// encoded back to the input.
func FuzzDecodeBody(f *testing.F) {
	for _, s := range []string{"", "hello", `{"messages":[{"content":"AKIAQYLPMN5HFIQR7BDW"}]}`} {
		f.Add([]byte(s), uint8(0), false)
		f.Add([]byte(s), uint8(3), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, pick uint8, encoded bool) {
		cs := fuzzCodings[int(pick)%len(fuzzCodings)]
		const limit = 1 << 16
		in := data
		if encoded && cs[0] != "compress" {
			in = encode(t, data, cs...)
		}
		out, err := decodeBody(in, cs, limit)
		if len(out) > limit {
			t.Fatalf("decoded %d bytes, over the limit %d", len(out), limit)
		}
		if cs[0] == "compress" && !errors.Is(err, errUnknownEncoding) {
			t.Fatalf("unknown coding: error %v", err)
		}
		if encoded && cs[0] != "compress" && len(data) <= limit && (err != nil || !bytes.Equal(out, data)) {
			t.Fatalf("round trip through %v: %v, got %d bytes for %d", cs, err, len(out), len(data))
		}
	})
}

func TestCodings(t *testing.T) {
	for _, tt := range []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{"identity"}, ""},
		{[]string{"GZIP"}, "gzip"},
		{[]string{"x-gzip, br"}, "gzip br"},
		{[]string{"deflate", " zstd ,identity"}, "deflate zstd"},
	} {
		got := codings(tt.in)
		if s := strings.Join(got, " "); s != tt.want {
			t.Errorf("codings(%q) = %q, want %q", tt.in, s, tt.want)
		}
	}
}
