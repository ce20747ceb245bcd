package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
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

// recordsOf re-frames a hello's handshake message into records of at
// most n bytes, as a client may legally send it.
func recordsOf(t testing.TB, hello []byte, n int) []byte {
	t.Helper()
	var msg []byte
	for b := hello; len(b) >= recordHeaderLen; {
		l := int(b[3])<<8 | int(b[4])
		msg = append(msg, b[recordHeaderLen:recordHeaderLen+l]...)
		b = b[recordHeaderLen+l:]
	}
	var out []byte
	for len(msg) > 0 {
		k := min(n, len(msg))
		out = append(out, recordTypeHandshake, 3, 1, byte(k>>8), byte(k))
		out = append(out, msg[:k]...)
		msg = msg[k:]
	}
	return out
}

// withTrailingDot turns the 'X' that ends a recorded name into a dot,
// which Go's client would never send but other stacks do.
func withTrailingDot(t testing.TB, hello []byte, nameX string) []byte {
	t.Helper()
	i := bytes.Index(hello, []byte(nameX))
	if i < 0 {
		t.Fatalf("name %q not in the hello", nameX)
	}
	out := bytes.Clone(hello)
	out[i+len(nameX)-1] = '.'
	return out
}

// longALPN makes a hello of about 27 KB, larger than one TLS record.
func longALPN() []string {
	var out []string
	for i := 0; i < 120; i++ {
		out = append(out, fmt.Sprintf("proto-%03d-%s", i, strings.Repeat("x", 200)))
	}
	return out
}

func TestReadClientHello(t *testing.T) {
	hello := recordHello(t, "api.openai.com", []string{"h2", "http/1.1"})
	big := recordHello(t, "api.openai.com", longALPN())
	if len(big) < 20<<10 {
		t.Fatalf("long-ALPN hello is only %d bytes", len(big))
	}
	tests := []struct {
		name     string
		in       []byte
		wantName string
		wantRaw  string
		wantALPN int
		notTLS   bool
		wantErr  bool
	}{
		{"hello with SNI and ALPN", hello, "api.openai.com", "api.openai.com", 2, false, false},
		{"hello without SNI", recordHello(t, "", nil), "", "", 0, false, false},
		{"hello over several records", recordsOf(t, hello, 7), "api.openai.com", "api.openai.com", 2, false, false},
		{"hello over many 1-byte records", recordsOf(t, hello, 1), "api.openai.com", "api.openai.com", 2, false, false},
		{"hello larger than a record", big, "api.openai.com", "api.openai.com", 120, false, false},
		{"trailing dot", withTrailingDot(t, recordHello(t, "api.openai.comX", nil), "api.openai.comX"), "api.openai.com", "api.openai.com.", 0, false, false},
		{"upper case", recordHello(t, "API.OpenAI.COM", nil), "api.openai.com", "API.OpenAI.COM", 0, false, false},
		{"plain HTTP", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "", "", 0, true, true},
		{"one byte, not TLS", []byte("G"), "", "", 0, true, true},
		{"empty", nil, "", "", 0, true, true},
		{"truncated record", hello[:40], "", "", 0, false, true},
		{"truncated header", hello[:3], "", "", 0, false, true},
		{"garbage handshake", append([]byte{0x16, 3, 1, 0, 8}, bytes.Repeat([]byte{1}, 8)...), "", "", 0, false, true},
		{"oversized record length", []byte{0x16, 3, 1, 0xff, 0xff}, "", "", 0, false, true},
		{"empty record", []byte{0x16, 3, 1, 0, 0}, "", "", 0, false, true},
		{"hello claiming 16 MB", []byte{0x16, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff}, "", "", 0, false, true},
		{"alert record after the first", append(recordsOf(t, hello, 50)[:55], 0x15, 3, 1, 0, 2, 2, 40), "", "", 0, false, true},
		{"server name with a NUL", bytes.Replace(recordHello(t, "api.openai.comX", nil), []byte("api.openai.comX"), []byte("api.openai.com\x00"), 1), "", "", 0, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, got, err := readClientHello(bytes.NewReader(tt.in))
			if (err != nil) != tt.wantErr || errors.Is(err, errNotTLS) != tt.notTLS {
				t.Fatalf("err %v, want error %v (not TLS %v)", err, tt.wantErr, tt.notTLS)
			}
			if !bytes.HasPrefix(tt.in, raw) {
				t.Fatal("returned bytes are not what was read")
			}
			if err == nil {
				if !bytes.Equal(raw, tt.in) {
					t.Errorf("read %d of the hello's %d bytes", len(raw), len(tt.in))
				}
				if got.ServerName != tt.wantName || got.RawServerName != tt.wantRaw || len(got.ALPN) != tt.wantALPN {
					t.Errorf("got name %q (raw %q), %d ALPN; want %q (%q), %d", got.ServerName, got.RawServerName, len(got.ALPN), tt.wantName, tt.wantRaw, tt.wantALPN)
				}
			}
		})
	}
}

// TestStdlibAccepts: the hellos that crypto/tls would reject are caught
// before a target connection is handed to it.
func TestStdlibAccepts(t *testing.T) {
	if err := stdlibAccepts(recordHello(t, "api.openai.com", []string{"h2"})); err != nil {
		t.Errorf("a Go client's hello: %v", err)
	}
	dot := withTrailingDot(t, recordHello(t, "api.openai.comX", nil), "api.openai.comX")
	if err := stdlibAccepts(dot); err == nil {
		t.Error("crypto/tls accepts a trailing-dot name: the refusal path is dead code")
	}
}

type slowReader struct {
	first []byte
	err   error
}

func (s *slowReader) Read(p []byte) (int, error) {
	if len(s.first) == 0 {
		return 0, s.err
	}
	n := copy(p, s.first)
	s.first = s.first[n:]
	return n, nil
}

func TestSlowHelloIsAnErrorNotNotTLS(t *testing.T) {
	hello := recordHello(t, "api.openai.com", nil)
	_, _, err := readClientHello(&slowReader{first: hello[:20], err: os.ErrDeadlineExceeded})
	if err == nil || errors.Is(err, errNotTLS) {
		t.Fatalf("err %v: a hello cut by the deadline must count as unreadable TLS", err)
	}
}

func FuzzReadClientHello(f *testing.F) {
	f.Add(recordHello(f, "api.openai.com", []string{"h2"}))
	f.Add(recordsOf(f, recordHello(f, "api.openai.com", []string{"h2"}), 3))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{0x16, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		raw, h, err := readClientHello(bytes.NewReader(in))
		if !bytes.HasPrefix(in, raw) {
			t.Fatal("returned bytes are not a prefix of the input")
		}
		if err != nil {
			return
		}
		if h.ServerName != normalizeServerName(h.RawServerName) || (h.RawServerName != "" && !validHostName(h.RawServerName)) {
			t.Fatalf("server name %q (raw %q) not normalised or not a host name", h.ServerName, h.RawServerName)
		}
	})
}
