package proxy

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"github.com/promptrail/promptrail/internal/hellotest"
)

func recordHello(_ testing.TB, serverName string, alpn []string) []byte {
	return hellotest.Record(serverName, alpn)
}

func recordsOf(_ testing.TB, hello []byte, n int) []byte { return hellotest.Reframe(hello, n) }

func trailingDot(host string, alpn []string) []byte { return hellotest.TrailingDot(host, alpn) }

func longALPN() []string { return hellotest.LongALPN() }

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
		{"trailing dot", trailingDot("api.openai.com", nil), "api.openai.com", "api.openai.com.", 0, false, false},
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
	dot := trailingDot("api.openai.com", nil)
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
