package proxy

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

// Errors of content decoding, told apart by the status they get.
var (
	// errUnknownEncoding: a coding the proxy cannot decode (415); the
	// body is never forwarded, since it could not be masked.
	errUnknownEncoding = errors.New("unsupported content coding")
	// errDecodedTooLarge: the decoded body is over the limit (413).
	errDecodedTooLarge = errors.New("decoded body over the limit")
)

// maxZstdWindow bounds the memory a zstd frame may ask for. RFC 8878
// recommends decoders support at least 8 MiB; HTTP's zstd coding (RFC
// 9659) limits the window to 8 MiB.
const maxZstdWindow = 8 << 20

// codings returns the content codings of a Content-Encoding value in the
// order they were applied, identity left out. Codings are compared case-
// insensitively (RFC 9110, 8.4.1); x-gzip is gzip.
func codings(header []string) []string {
	var out []string
	for _, v := range header {
		for _, c := range strings.Split(v, ",") {
			c = strings.ToLower(strings.TrimSpace(c))
			if c == "x-gzip" {
				c = "gzip"
			}
			if c != "" && c != "identity" {
				out = append(out, c)
			}
		}
	}
	return out
}

// decodingReader reads r decoded from the content codings cs (applied in
// that order, so undone in reverse). Its Close releases the decoders, not
// r.
type decodingReader struct {
	io.Reader
	closers []func()
}

func (d *decodingReader) Close() error {
	for _, c := range d.closers {
		c()
	}
	return nil
}

// newDecodingReader returns a reader of r decoded from cs. An unknown
// coding is an error wrapping errUnknownEncoding; a malformed stream fails
// when it is read.
func newDecodingReader(r io.Reader, cs []string) (*decodingReader, error) {
	d := &decodingReader{Reader: r}
	for i := len(cs) - 1; i >= 0; i-- {
		var err error
		switch cs[i] {
		case "gzip":
			d.Reader = &lazy{open: func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }, src: d.Reader}
		case "deflate":
			// RFC 9110 says deflate is zlib (RFC 1950); some clients send
			// raw deflate (RFC 1951), which a zlib header check tells apart.
			d.Reader = &lazy{open: openDeflate, src: d.Reader}
		case "br":
			d.Reader = brotli.NewReader(d.Reader)
		case "zstd":
			var z *zstd.Decoder
			z, err = zstd.NewReader(d.Reader, zstd.WithDecoderConcurrency(1),
				zstd.WithDecoderMaxWindow(maxZstdWindow), zstd.WithDecoderLowmem(true))
			if err == nil {
				d.Reader, d.closers = z, append(d.closers, z.Close)
			}
		default:
			err = fmt.Errorf("%w %q", errUnknownEncoding, cs[i])
		}
		if err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

// openDeflate opens a zlib stream, or a raw deflate stream when r does not
// start with a zlib header.
func openDeflate(r io.Reader) (io.Reader, error) {
	br := bufio.NewReader(r)
	h, err := br.Peek(2)
	if err != nil {
		return nil, fmt.Errorf("deflate: %w", err)
	}
	if h[0]&0x0f == 8 && (uint16(h[0])<<8|uint16(h[1]))%31 == 0 {
		return zlib.NewReader(br)
	}
	return flate.NewReader(br), nil
}

// lazy opens its decoder on the first Read, so that a decoder that reads
// a header does not block newDecodingReader on a streaming body.
type lazy struct {
	open func(io.Reader) (io.Reader, error)
	src  io.Reader
	r    io.Reader
	err  error
}

func (l *lazy) Read(p []byte) (int, error) {
	if l.r == nil && l.err == nil {
		l.r, l.err = l.open(l.src)
	}
	if l.err != nil {
		return 0, l.err
	}
	return l.r.Read(p)
}

// decodeBody decodes a whole body from the codings cs and returns at most
// limit bytes of it; a longer result is an error wrapping
// errDecodedTooLarge, so that a small compressed body cannot make the
// proxy hold more than a plain one could.
func decodeBody(body []byte, cs []string, limit int64) ([]byte, error) {
	d, err := newDecodingReader(bytes.NewReader(body), cs)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	out, err := io.ReadAll(io.LimitReader(d, limit+1))
	if err != nil {
		return nil, fmt.Errorf("decoding %s: %w", strings.Join(cs, ", "), err)
	}
	if int64(len(out)) > limit {
		return nil, fmt.Errorf("%w of %d bytes", errDecodedTooLarge, limit)
	}
	return out, nil
}

// decodeResponse decodes a response body that the upstream encoded (with
// a coding other than the gzip the transport asks for and undoes itself),
// so that it is masked and recorded; the client gets it decoded. A coding
// the proxy cannot decode fails the exchange (502): it would pass
// unmasked.
func decodeResponse(resp *http.Response) error {
	cs := codings(resp.Header.Values("Content-Encoding"))
	if len(cs) == 0 {
		return nil
	}
	dec, err := newDecodingReader(resp.Body, cs)
	if err != nil {
		return fmt.Errorf("response body: %w", err)
	}
	resp.Body = &decodedBody{decodingReader: dec, src: resp.Body}
	resp.Header.Del("Content-Encoding")
	resp.Header.Del("Content-Length")
	resp.ContentLength = -1
	resp.Uncompressed = true
	return nil
}

// decodedBody is a response body read decoded.
type decodedBody struct {
	*decodingReader
	src io.Closer
}

func (b *decodedBody) Close() error {
	b.decodingReader.Close()
	return b.src.Close()
}

// decodeRequest decodes r's body from its Content-Encoding, at most limit
// bytes, and drops the header: the body goes upstream decoded, with its
// new length. Without a coding, body is returned as it is.
func decodeRequest(r *http.Request, body []byte, limit int64) ([]byte, error) {
	cs := codings(r.Header.Values("Content-Encoding"))
	if len(cs) == 0 {
		return body, nil
	}
	if len(body) == 0 {
		// No body to decode (a GET that names a coding): nothing to mask.
		r.Header.Del("Content-Encoding")
		return body, nil
	}
	out, err := decodeBody(body, cs, limit)
	if err != nil {
		return nil, err
	}
	r.Header.Del("Content-Encoding")
	return out, nil
}
