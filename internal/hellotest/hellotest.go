// Package hellotest makes TLS ClientHellos for tests of the proxy's hello
// reader: the bytes a real crypto/tls client sends, re-framed into other
// record sizes, or altered the way other TLS stacks (or attackers) send
// them.
package hellotest

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"time"
)

// Record returns the bytes a crypto/tls client sends first for
// serverName and alpn: its ClientHello, in as many records as it needs.
func Record(serverName string, alpn []string) []byte {
	c, s := net.Pipe()
	go func() {
		cl := tls.Client(c, &tls.Config{ServerName: serverName, NextProtos: alpn, InsecureSkipVerify: true})
		cl.SetDeadline(time.Now().Add(2 * time.Second))
		cl.Handshake()
		c.Close()
	}()
	// Go writes a hello that spans records one record at a time: read
	// until the client has nothing more to say.
	var out []byte
	buf := make([]byte, 64<<10)
	s.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		n, err := s.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			break
		}
		s.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	}
	s.Close()
	return out
}

// Reframe re-frames a hello's handshake message into records of at most
// n bytes each, as a client may legally send it.
func Reframe(hello []byte, n int) []byte {
	var msg []byte
	for b := hello; len(b) >= 5; {
		l := int(b[3])<<8 | int(b[4])
		if len(b) < 5+l {
			break
		}
		msg = append(msg, b[5:5+l]...)
		b = b[5+l:]
	}
	var out []byte
	for len(msg) > 0 {
		k := min(n, len(msg))
		out = append(out, 0x16, 3, 1, byte(k>>8), byte(k))
		out = append(out, msg[:k]...)
		msg = msg[k:]
	}
	return out
}

// TrailingDot returns the hello of a client that names host with a
// trailing dot ("api.openai.com."), which Go's client never sends but
// other stacks do: recorded with an 'X' in the dot's place, then patched.
func TrailingDot(host string, alpn []string) []byte {
	hello := Record(host+"X", alpn)
	i := bytes.Index(hello, []byte(host+"X"))
	if i < 0 {
		panic("hellotest: recorded name not found")
	}
	hello[i+len(host)] = '.'
	return hello
}

// LongALPN is an ALPN list that makes a hello of about 27 KB, larger than
// one TLS record; real protocols can follow it.
func LongALPN() []string {
	var out []string
	for i := 0; i < 120; i++ {
		out = append(out, fmt.Sprintf("proto-%03d-%s", i, strings.Repeat("x", 200)))
	}
	return out
}
