package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// recordHello captures the bytes a real crypto/tls client sends first.
func recordHello(t testing.TB, serverName string, alpn []string) []byte {
	t.Helper()
	c, s := net.Pipe()
	go func() {
		cl := tls.Client(c, &tls.Config{ServerName: serverName, NextProtos: alpn, InsecureSkipVerify: true})
		cl.SetDeadline(time.Now().Add(2 * time.Second))
		cl.Handshake()
		c.Close()
	}()
	buf := make([]byte, 64<<10)
	s.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _ := s.Read(buf)
	s.Close()
	return buf[:n]
}

func TestPeekClientHello(t *testing.T) {
	hello := recordHello(t, "api.openai.com", []string{"h2", "http/1.1"})
	noSNI := recordHello(t, "", nil)
	tests := []struct {
		name    string
		in      []byte
		want    clientHello
		notTLS  bool
		wantErr bool
	}{
		{"hello with SNI and ALPN", hello, clientHello{ServerName: "api.openai.com", ALPN: []string{"h2", "http/1.1"}}, false, false},
		{"hello without SNI", noSNI, clientHello{}, false, false},
		{"plain HTTP", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), clientHello{}, true, true},
		{"empty", nil, clientHello{}, true, true},
		{"truncated record", hello[:40], clientHello{}, false, true},
		{"garbage handshake", append([]byte{0x16, 3, 1, 0, 8}, bytes.Repeat([]byte{1}, 8)...), clientHello{}, false, true},
		{"oversized record length", []byte{0x16, 3, 1, 0xff, 0xff}, clientHello{}, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReaderSize(bytes.NewReader(tt.in), peekBufferSize)
			got, err := peekClientHello(br)
			if (err != nil) != tt.wantErr || errors.Is(err, errNotTLS) != tt.notTLS {
				t.Fatalf("err %v, want error %v (not TLS %v)", err, tt.wantErr, tt.notTLS)
			}
			if err == nil && (got.ServerName != tt.want.ServerName || len(got.ALPN) != len(tt.want.ALPN)) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			// Nothing consumed: the bytes can still be spliced.
			if br.Buffered() > 0 || len(tt.in) == 0 {
				rest := make([]byte, len(tt.in))
				n, _ := br.Read(rest)
				if !bytes.Equal(rest[:n], tt.in[:n]) {
					t.Error("peek consumed bytes")
				}
			}
		})
	}
}

func FuzzPeekClientHello(f *testing.F) {
	f.Add(recordHello(f, "api.openai.com", []string{"h2"}))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{0x16, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(in), peekBufferSize)
		h, err := peekClientHello(br)
		if err == nil && len(h.ServerName) > len(in) {
			t.Fatalf("server name longer than the input")
		}
		rest := make([]byte, len(in)+1)
		n, _ := io.ReadFull(br, rest)
		if n != len(in) || !bytes.Equal(rest[:n], in) {
			t.Fatalf("peek consumed or changed bytes: %d of %d", n, len(in))
		}
	})
}
