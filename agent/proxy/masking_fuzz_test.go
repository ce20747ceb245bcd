package proxy

import (
	"bytes"
	"errors"
	"io"
	"mime/multipart"
	"testing"
)

// FuzzMaskMultipart masks arbitrary bodies as multipart/form-data: it
// never panics, a body that does not parse is masked as text, and one that
// does keeps its parts (and its bytes, when nothing was found).
func FuzzMaskMultipart(f *testing.F) {
	const boundary = "fuzzboundary"
	seed := func(parts ...[2]string) []byte {
		var b bytes.Buffer
		w := multipart.NewWriter(&b)
		w.SetBoundary(boundary)
		for _, p := range parts {
			if p[0] == "file" {
				fw, _ := w.CreateFormFile("file", "notes.txt")
				fw.Write([]byte(p[1]))
				continue
			}
			w.WriteField(p[0], p[1])
		}
		w.Close()
		return b.Bytes()
	}
	f.Add(seed([2]string{"purpose", "fine-tune"}))
	f.Add(seed([2]string{"purpose", "key " + testAWSKey}, [2]string{"file", "push with " + testToken}))
	f.Add([]byte("--" + boundary + "\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n" + testAWSKey)) // no end
	f.Add([]byte("not multipart " + testToken))
	m := testMasker(f)
	ct := "multipart/form-data; boundary=" + boundary
	f.Fuzz(func(t *testing.T, body []byte) {
		out, fs, err := maskMultipart(m, ct, body)
		if err != nil {
			if !bytes.Contains(bytes.ToLower(body), []byte("content-transfer-encoding")) {
				t.Fatalf("error %v for a body without a transfer encoding", err)
			}
			return
		}
		in := countParts(body, boundary)
		if in <= 0 {
			// Not multipart: masked whole, as text.
			if want, _ := m.Text("request", "", body); !bytes.Equal(out, want) {
				t.Fatalf("a body that does not parse: got %q, want it masked as text %q", out, want)
			}
			return
		}
		if len(fs) == 0 && !bytes.Equal(out, body) {
			t.Fatalf("nothing found, yet the body changed:\n%q\nto %q", body, out)
		}
		if got := countParts(out, boundary); got != in {
			t.Fatalf("%d parts in, %d out:\n%q", in, got, out)
		}
	})
}

// countParts returns how many parts body has, or -1 if it does not parse.
func countParts(body []byte, boundary string) int {
	r := multipart.NewReader(bytes.NewReader(body), boundary)
	n := 0
	for {
		p, err := r.NextRawPart()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return n
			}
			return -1
		}
		var b bytes.Buffer
		if _, err := b.ReadFrom(p); err != nil {
			return -1
		}
		n++
	}
}
