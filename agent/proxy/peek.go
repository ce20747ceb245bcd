package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Sizes from RFC 8446 §5.1: a record header is 5 bytes, a plaintext
// fragment at most 2^14 bytes. A ClientHello may span records; the peek
// buffer (peekBufferSize, kept for the connection's life) bounds it, far
// above the 2 KB or so that clients send, post-quantum key shares included.
const (
	peekBufferSize           = 20 << 10
	recordHeaderLen          = 5
	maxFragment              = 1 << 14
	maxHelloBytes            = 1 << 16
	recordTypeHandshake      = 0x16
	handshakeTypeClientHello = 0x01
)

// errNotTLS means the first bytes are not a TLS handshake record: the
// connection is passed through untouched.
var errNotTLS = errors.New("not a TLS ClientHello")

// clientHello is what the proxy needs from a ClientHello to decide.
type clientHello struct {
	ServerName string
	ALPN       []string
}

// peekClientHello reads the ClientHello at the start of br without
// consuming it, so that the bytes can still be spliced or handed to the
// TLS server. br must be able to buffer maxHelloBytes plus headers.
func peekClientHello(br *bufio.Reader) (clientHello, error) {
	var handshake []byte
	off := 0
	for {
		hdr, err := br.Peek(off + recordHeaderLen)
		if err != nil {
			return clientHello{}, notTLSOr(off, err)
		}
		h := hdr[off:]
		if h[0] != recordTypeHandshake || h[1] != 3 {
			return clientHello{}, errNotTLS
		}
		n := int(binary.BigEndian.Uint16(h[3:5]))
		if n == 0 || n > maxFragment {
			return clientHello{}, fmt.Errorf("TLS record of %d bytes: %w", n, errNotTLS)
		}
		rec, err := br.Peek(off + recordHeaderLen + n)
		if err != nil {
			return clientHello{}, fmt.Errorf("truncated TLS record: %w", err)
		}
		handshake = append(handshake, rec[off+recordHeaderLen:]...)
		off += recordHeaderLen + n
		if len(handshake) >= 4 {
			if handshake[0] != handshakeTypeClientHello {
				return clientHello{}, fmt.Errorf("first handshake message is type %d: %w", handshake[0], errNotTLS)
			}
			msgLen := int(handshake[1])<<16 | int(handshake[2])<<8 | int(handshake[3])
			if msgLen > maxHelloBytes {
				return clientHello{}, fmt.Errorf("ClientHello of %d bytes is too large", msgLen)
			}
			if len(handshake) >= 4+msgLen {
				return parseClientHello(handshake[:4+msgLen])
			}
		}
	}
}

func notTLSOr(off int, err error) error {
	if off == 0 && errors.Is(err, io.EOF) {
		return fmt.Errorf("connection closed before any byte: %w", errNotTLS)
	}
	return fmt.Errorf("reading TLS record: %w", err)
}

// errHelloSeen stops the TLS server once it has parsed the hello.
var errHelloSeen = errors.New("client hello parsed")

// parseClientHello lets crypto/tls parse the handshake message: the
// standard library's parser is the one that is fuzzed and maintained.
func parseClientHello(msg []byte) (clientHello, error) {
	var rec bytes.Buffer
	for len(msg) > 0 {
		n := min(len(msg), maxFragment)
		rec.Write([]byte{recordTypeHandshake, 3, 1, byte(n >> 8), byte(n)})
		rec.Write(msg[:n])
		msg = msg[n:]
	}
	var hello clientHello
	seen := false
	srv := tls.Server(&replayConn{r: &rec}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			hello = clientHello{ServerName: h.ServerName, ALPN: append([]string(nil), h.SupportedProtos...)}
			seen = true
			return nil, errHelloSeen
		},
	})
	err := srv.Handshake()
	if seen {
		return hello, nil
	}
	return clientHello{}, fmt.Errorf("malformed ClientHello: %v", err)
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

// peekedConn is a connection whose first bytes sit in a bufio.Reader
// after a peek; reads drain the buffer first.
type peekedConn struct {
	*net.TCPConn
	br *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.br.Read(p) }

// WriteTo lets io.Copy hand the rest of the stream to splice(2) once the
// buffered bytes are written.
func (c *peekedConn) WriteTo(w io.Writer) (int64, error) { return c.br.WriteTo(w) }
