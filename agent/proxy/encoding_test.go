package proxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"
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

func TestDecodeResponse(t *testing.T) {
	for _, tt := range []struct {
		name, coding string
		body         []byte
		want         string
		wantErr      error
	}{
		{"identity", "identity", []byte("plain"), "plain", nil},
		{"br", "br", encode(t, []byte("hello br"), "br"), "hello br", nil},
		{"gzip then zstd", "gzip, zstd", encode(t, []byte("two codings"), "gzip", "zstd"), "two codings", nil},
		{"unknown coding", "compress", []byte("x"), "", errUnknownEncoding},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp := &http.Response{Header: http.Header{"Content-Encoding": {tt.coding}, "Content-Length": {"99"}},
				Body: io.NopCloser(bytes.NewReader(tt.body)), ContentLength: 99}
			err := decodeResponse(resp)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			got, err := io.ReadAll(resp.Body)
			if err != nil || string(got) != tt.want {
				t.Fatalf("body %q (%v), want %q", got, err, tt.want)
			}
			if tt.coding != "identity" && (resp.Header.Get("Content-Encoding") != "" || resp.ContentLength != -1) {
				t.Errorf("headers %v, length %d: want the coding gone and the length unknown", resp.Header, resp.ContentLength)
			}
			resp.Body.Close()
		})
	}
}
