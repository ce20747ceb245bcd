package fakeopenai

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

// flushWriter is a compressing writer that can flush what it holds.
type flushWriter interface {
	io.WriteCloser
	Flush() error
}

// newEncoder returns a writer that encodes into w with a content coding
// (X-Fake-Content-Encoding), or an error for one the fake does not know.
func newEncoder(coding string, w io.Writer) (flushWriter, error) {
	switch coding {
	case "gzip":
		return gzip.NewWriter(w), nil
	case "deflate":
		return zlib.NewWriter(w), nil
	case "deflate-raw": // raw RFC 1951, which some servers send as deflate
		return flate.NewWriter(w, flate.DefaultCompression)
	case "br":
		return brotli.NewWriter(w), nil
	case "zstd":
		return zstd.NewWriter(w, zstd.WithEncoderConcurrency(1))
	}
	return nil, fmt.Errorf("unknown coding %q", coding)
}

// encodingWriter answers with a content coding whatever the client
// accepts, as an upstream that ignores Accept-Encoding does; every flush
// flushes the encoder, so streams stay live.
type encodingWriter struct {
	http.ResponseWriter
	coding string
	enc    flushWriter
	wrote  bool
}

func (e *encodingWriter) WriteHeader(status int) {
	if e.wrote {
		return
	}
	e.wrote = true
	h := e.Header()
	h.Del("Content-Length")
	h.Set("Content-Encoding", strings.TrimSuffix(e.coding, "-raw"))
	e.ResponseWriter.WriteHeader(status)
}

func (e *encodingWriter) Write(p []byte) (int, error) {
	e.WriteHeader(http.StatusOK)
	return e.enc.Write(p)
}

func (e *encodingWriter) FlushError() error {
	if err := e.enc.Flush(); err != nil {
		return err
	}
	return http.NewResponseController(e.ResponseWriter).Flush()
}

func (e *encodingWriter) Unwrap() http.ResponseWriter { return e.ResponseWriter }

// Encode returns b encoded with a content coding (those of
// X-Fake-Content-Encoding), as a client that compresses its requests
// sends it.
func Encode(coding string, b []byte) ([]byte, error) {
	var buf bytes.Buffer
	w, err := newEncoder(coding, &buf)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(b); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
