package proxy

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"golang.org/x/crypto/cryptobyte"
)

// Sizes from RFC 8446: a record header is 5 bytes (§5.1) and a plaintext
// fragment at most 2^14 bytes; a ClientHello may span many records. Its
// own fields bound it (§4.1.2): version 2, random 32, session id 1+32,
// cipher suites 2+(2^16-2), compression 1+255, extensions 2+(2^16-1), plus
// the 4-byte handshake header. Nothing a real client sends comes close,
// but a hello that is merely large (a long ALPN list makes one of ~27 KB)
// must still be read whole, never spliced because it did not fit.
const (
	recordHeaderLen          = 5
	maxFragment              = 1 << 14
	maxHelloBytes            = 4 + 2 + 32 + 33 + (2 + 65534) + (1 + 255) + (2 + 65535)
	recordTypeHandshake      = 0x16
	handshakeTypeClientHello = 0x01
	extServerName            = 0
	extALPN                  = 16
	sniHostName              = 0
)

// errNotTLS means the first bytes are not a TLS handshake record: nothing
// in them names a server.
var errNotTLS = errors.New("not TLS")

// clientHello is what the proxy needs from a ClientHello to decide.
type clientHello struct {
	// ServerName is the SNI host name, lower case and without a trailing
	// dot; RawServerName is the name as the client sent it.
	ServerName, RawServerName string
	ALPN                      []string
}

// readClientHello reads the TLS records that carry the ClientHello from r
// and returns every byte it read, so that they can still be spliced or
// replayed to the TLS server. An error that wraps errNotTLS means the
// stream does not start with a TLS handshake record; any other error
// (malformed, truncated, too slow, too large) means it claims to be TLS
// but no hello could be read, and such a connection is never spliced.
func readClientHello(r io.Reader) ([]byte, clientHello, error) {
	var raw, msg []byte
	for {
		hdr, err := readN(r, &raw, recordHeaderLen)
		if err != nil {
			if len(raw) == 0 || (len(raw) < recordHeaderLen && !looksLikeTLS(raw)) {
				return raw, clientHello{}, fmt.Errorf("%w: %w", errNotTLS, err)
			}
			return raw, clientHello{}, fmt.Errorf("reading a TLS record header after %d bytes: %w", len(raw), err)
		}
		if !looksLikeTLS(hdr) {
			if len(msg) == 0 {
				return raw, clientHello{}, errNotTLS
			}
			return raw, clientHello{}, fmt.Errorf("record of type %#x inside the ClientHello", hdr[0])
		}
		n := int(binary.BigEndian.Uint16(hdr[3:5]))
		if n == 0 || n > maxFragment {
			return raw, clientHello{}, fmt.Errorf("TLS record of %d bytes (want 1 to %d)", n, maxFragment)
		}
		frag, err := readN(r, &raw, n)
		if err != nil {
			return raw, clientHello{}, fmt.Errorf("truncated TLS record (%d bytes announced): %w", n, err)
		}
		msg = append(msg, frag...)
		if len(msg) < 4 {
			continue
		}
		if msg[0] != handshakeTypeClientHello {
			return raw, clientHello{}, fmt.Errorf("first handshake message is of type %d, not a ClientHello", msg[0])
		}
		msgLen := 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
		if msgLen > maxHelloBytes {
			return raw, clientHello{}, fmt.Errorf("ClientHello of %d bytes is larger than TLS allows (%d)", msgLen, maxHelloBytes)
		}
		if len(msg) >= msgLen {
			// Bytes past the hello in its last record belong to the next
			// handshake message, which a client cannot send yet.
			if len(msg) > msgLen {
				return raw, clientHello{}, errors.New("data after the ClientHello in its record")
			}
			h, err := parseClientHello(msg)
			return raw, h, err
		}
	}
}

// looksLikeTLS reports whether b starts like a TLS handshake record
// (type 22, protocol major version 3).
func looksLikeTLS(b []byte) bool {
	return len(b) >= 1 && b[0] == recordTypeHandshake && (len(b) < 2 || b[1] == 3)
}

// readN reads exactly n more bytes from r, appending them to *raw, and
// returns them.
func readN(r io.Reader, raw *[]byte, n int) ([]byte, error) {
	start := len(*raw)
	*raw = append(*raw, make([]byte, n)...)
	got, err := io.ReadFull(r, (*raw)[start:])
	*raw = (*raw)[:start+got]
	if err != nil {
		return nil, err
	}
	return (*raw)[start:], nil
}

// parseClientHello reads the server name and ALPN list from a ClientHello
// handshake message (RFC 8446 §4.1.2, RFC 6066 §3, RFC 7301 §3.1). It is
// stricter than a server needs to be where ambiguity could let the proxy
// and the upstream see different names: one server_name extension, one
// host name in it, every length exact.
func parseClientHello(msg []byte) (clientHello, error) {
	s := cryptobyte.String(msg[4:])
	var (
		version                   uint16
		random, sessionID, suites cryptobyte.String
		compression, exts         cryptobyte.String
		hello                     clientHello
		seenSNI, seenALPN         bool
	)
	if !s.ReadUint16(&version) || !s.ReadBytes((*[]byte)(&random), 32) ||
		!s.ReadUint8LengthPrefixed(&sessionID) || !s.ReadUint16LengthPrefixed(&suites) ||
		!s.ReadUint8LengthPrefixed(&compression) {
		return clientHello{}, errors.New("malformed ClientHello: truncated fixed fields")
	}
	if s.Empty() {
		return hello, nil // no extensions: no SNI
	}
	if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
		return clientHello{}, errors.New("malformed ClientHello: bad extensions length")
	}
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return clientHello{}, errors.New("malformed ClientHello: truncated extension")
		}
		switch typ {
		case extServerName:
			if seenSNI {
				return clientHello{}, errors.New("malformed ClientHello: two server_name extensions")
			}
			seenSNI = true
			name, err := parseServerName(data)
			if err != nil {
				return clientHello{}, err
			}
			hello.RawServerName = name
		case extALPN:
			if seenALPN {
				return clientHello{}, errors.New("malformed ClientHello: two ALPN extensions")
			}
			seenALPN = true
			var list cryptobyte.String
			if !data.ReadUint16LengthPrefixed(&list) || !data.Empty() {
				return clientHello{}, errors.New("malformed ClientHello: bad ALPN extension")
			}
			for !list.Empty() {
				var proto cryptobyte.String
				if !list.ReadUint8LengthPrefixed(&proto) || len(proto) == 0 {
					return clientHello{}, errors.New("malformed ClientHello: bad ALPN protocol name")
				}
				hello.ALPN = append(hello.ALPN, string(proto))
			}
		}
	}
	hello.ServerName = normalizeServerName(hello.RawServerName)
	return hello, nil
}

func parseServerName(data cryptobyte.String) (string, error) {
	var list cryptobyte.String
	if !data.ReadUint16LengthPrefixed(&list) || !data.Empty() {
		return "", errors.New("malformed ClientHello: bad server_name extension")
	}
	name := ""
	for !list.Empty() {
		var typ uint8
		var host cryptobyte.String
		if !list.ReadUint8(&typ) || !list.ReadUint16LengthPrefixed(&host) {
			return "", errors.New("malformed ClientHello: bad server_name entry")
		}
		if typ != sniHostName {
			continue
		}
		if name != "" {
			return "", errors.New("malformed ClientHello: two host names in server_name")
		}
		if !validHostName(string(host)) {
			return "", fmt.Errorf("malformed ClientHello: server name %q is not a DNS host name", string(host))
		}
		name = string(host)
	}
	return name, nil
}

// validHostName accepts the letters, digits, hyphens, underscores and dots
// of DNS host names (one trailing dot allowed), at most 253 characters
// without it. Anything else (NUL, spaces, non-ASCII) could be read
// differently by the proxy and the upstream.
func validHostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 || strings.HasPrefix(s, ".") || strings.Contains(s, "..") {
		return false
	}
	for _, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// normalizeServerName is the form names are matched in: lower case, no
// trailing dot ("API.OpenAI.com." names the same host as "api.openai.com").
func normalizeServerName(s string) string {
	return strings.ToLower(strings.TrimSuffix(s, "."))
}

// errHelloSeen stops the TLS server once it has parsed the hello.
var errHelloSeen = errors.New("client hello parsed")

// stdlibAccepts reports whether crypto/tls, which terminates decrypted
// connections, accepts the hello in raw; the error says why not. A hello
// that our reader takes but the TLS server would reject (a trailing dot in
// the name, say) is refused with that reason rather than failing later
// without a record.
func stdlibAccepts(raw []byte) error {
	seen := false
	srv := tls.Server(&replayConn{r: bytes.NewReader(raw)}, &tls.Config{
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			seen = true
			return nil, errHelloSeen
		},
	})
	err := srv.Handshake()
	if seen {
		return nil
	}
	return fmt.Errorf("the TLS server cannot parse this ClientHello: %v", err)
}

// replayConn feeds recorded bytes to a TLS server and swallows its replies.
type replayConn struct{ r io.Reader }

func (c *replayConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *replayConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *replayConn) Close() error                     { return nil }
func (c *replayConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *replayConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *replayConn) SetDeadline(time.Time) error      { return nil }
func (c *replayConn) SetReadDeadline(time.Time) error  { return nil }
func (c *replayConn) SetWriteDeadline(time.Time) error { return nil }

// helloConn is a client connection whose first bytes (the hello) were
// read already: reads return them first.
type helloConn struct {
	*net.TCPConn
	pending []byte
}

func (c *helloConn) Read(p []byte) (int, error) {
	if len(c.pending) == 0 {
		return c.TCPConn.Read(p)
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// WriteTo lets io.Copy hand the rest of the stream to splice(2) once the
// hello's bytes are written.
func (c *helloConn) WriteTo(w io.Writer) (int64, error) {
	var n int64
	if len(c.pending) > 0 {
		m, err := w.Write(c.pending)
		n += int64(m)
		c.pending = c.pending[m:]
		if err != nil {
			return n, err
		}
	}
	m, err := io.Copy(w, c.TCPConn)
	return n + m, err
}
