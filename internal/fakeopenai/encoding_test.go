package fakeopenai_test

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/json"
	"io"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"

	"github.com/promptrail/promptrail/internal/fakeopenai"
)

func TestContentEncodingControl(t *testing.T) {
	ts := fakeopenai.NewTLSServer(t, fakeopenai.Config{}, "")
	readers := map[string]func(io.Reader) (io.Reader, error){
		"gzip":        func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) },
		"deflate":     func(r io.Reader) (io.Reader, error) { return zlib.NewReader(r) },
		"deflate-raw": func(r io.Reader) (io.Reader, error) { return flate.NewReader(r), nil },
		"br":          func(r io.Reader) (io.Reader, error) { return brotli.NewReader(r), nil },
		"zstd":        func(r io.Reader) (io.Reader, error) { return zstd.NewReader(r) },
	}
	for coding, open := range readers {
		t.Run(coding, func(t *testing.T) {
			// Accept-Encoding identity: the fake encodes all the same, as an
			// upstream that ignores it does.
			res, body := raw(t, ts.Client(), "POST", ts.BaseURL+"chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
				map[string]string{"X-Fake-Content-Encoding": coding, "Accept-Encoding": "identity"})
			want := coding
			if coding == "deflate-raw" {
				want = "deflate"
			}
			if res.StatusCode != 200 || res.Header.Get("Content-Encoding") != want {
				t.Fatalf("status %d, headers %v", res.StatusCode, res.Header)
			}
			r, err := open(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			plain, err := io.ReadAll(r)
			if err != nil || !json.Valid(plain) {
				t.Fatalf("decoded %q: %v", plain, err)
			}
			if again, err := fakeopenai.Encode(coding, plain); err != nil || len(again) == 0 {
				t.Errorf("Encode(%s): %v", coding, err)
			}
		})
	}
	res, _ := raw(t, ts.Client(), "GET", ts.BaseURL+"models", "", map[string]string{"X-Fake-Content-Encoding": "compress"})
	if res.StatusCode != 400 {
		t.Errorf("unknown coding: status %d, want 400", res.StatusCode)
	}
}
