package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/promptrail/promptrail/audit"
)

// TestHostileHellos: whatever a client does with its ClientHello, it
// either is decrypted and recorded, or spliced with a connection record,
// or refused with one; a refused connection sends nothing upstream.
func TestHostileHellos(t *testing.T) {
	f := newDecryptFixture(t, func(_ *DecryptConfig, c *Config) {
		c.HelloTimeout = 300 * time.Millisecond
		c.Undecrypted = func(_ netip.AddrPort, class string) bool { return class != ClassNoSNI }
	})
	upstreamSaw := func() int { return len(f.fake.Server.Requests()) }
	refused := func(t *testing.T, what string, match func(*audit.Record) bool) *audit.Record {
		t.Helper()
		r := f.sink.wait(t, what, func(r *audit.Record) bool { return r.Kind == audit.KindConnection && match(r) })
		if r.Decision.Action != "refuse" || r.Workload.Comm != "client" || r.Connection.OrigDst == "" {
			t.Errorf("%s: record %+v, want a refusal that names the process and destination", what, r)
		}
		return r
	}

	t.Run("slow hello", func(t *testing.T) {
		before := upstreamSaw()
		c, err := net.Dial("tcp", f.proxyAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		hello := recordHello(t, "api.openai.com", nil)
		c.Write(hello[:20])
		time.Sleep(500 * time.Millisecond) // past HelloTimeout
		c.Write(hello[20:])
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, _ := c.Read(make([]byte, 1)); n != 0 {
			t.Fatal("a hello cut by the deadline got an answer")
		}
		r := refused(t, "slow hello", func(r *audit.Record) bool { return strings.Contains(r.Decision.Message, "timeout") })
		if r.Decision.Rule != ruleBadHello {
			t.Errorf("rule %q, want %q", r.Decision.Rule, ruleBadHello)
		}
		if upstreamSaw() != before {
			t.Error("the upstream heard from a refused connection")
		}
	})
	t.Run("hello larger than a record is decrypted", func(t *testing.T) {
		c := f.tlsConn(t, "api.openai.com", append(longALPN(), "http/1.1"))
		defer c.Close()
		io.WriteString(c, "GET /v1/models?big-hello HTTP/1.1\r\nHost: api.openai.com\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		f.sink.wait(t, "big hello", func(r *audit.Record) bool { return strings.Contains(r.Request.Path, "big-hello") })
	})
	t.Run("trailing dot on a target name", func(t *testing.T) {
		before := upstreamSaw()
		hello := trailingDot("api.openai.com", []string{"http/1.1"})
		if got := f.rawExchange(t, hello); len(got) != 0 {
			t.Fatalf("client got %x, want the connection closed", got)
		}
		refused(t, "trailing dot", func(r *audit.Record) bool { return r.Connection.SNI == "api.openai.com." })
		if upstreamSaw() != before {
			t.Error("the upstream heard from a refused connection")
		}
	})
	t.Run("upper-case target name is decrypted", func(t *testing.T) {
		c := f.tlsConn(t, "API.OpenAI.com", []string{"http/1.1"})
		defer c.Close()
		io.WriteString(c, "GET /v1/models?upper HTTP/1.1\r\nHost: api.openai.com\r\nConnection: close\r\n\r\n")
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
			t.Fatal(err)
		} else {
			resp.Body.Close()
		}
		r := f.sink.wait(t, "upper case", func(r *audit.Record) bool { return strings.Contains(r.Request.Path, "upper") })
		if r.Connection.SNI != "api.openai.com" {
			t.Errorf("SNI %q, want the normalised name", r.Connection.SNI)
		}
	})
	t.Run("no SNI refused by the setting", func(t *testing.T) {
		before := upstreamSaw()
		c, err := tls.Dial("tcp", f.proxyAddr, &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			io.WriteString(c, "GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n\r\n")
			c.Close()
		}
		refused(t, "no SNI", func(r *audit.Record) bool { return r.Decision.Rule == ClassNoSNI })
		if upstreamSaw() != before {
			t.Error("the upstream heard from a refused connection")
		}
	})
	t.Run("other SNI spliced with a record", func(t *testing.T) {
		c, err := tls.Dial("tcp", f.proxyAddr, &tls.Config{ServerName: "fronted.example", InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		// Domain fronting: the upstream here serves any Host; the record
		// still says who sent how much to the target's address.
		io.WriteString(c, "GET /v1/models?fronted HTTP/1.1\r\nHost: api.openai.com\r\nConnection: close\r\n\r\n")
		io.ReadAll(c)
		c.Close()
		r := f.sink.wait(t, "other SNI", func(r *audit.Record) bool { return r.Connection.SNI == "fronted.example" })
		if r.Kind != audit.KindConnection || r.Decision.Action != "splice" || r.Decision.Rule != ClassOtherSNI ||
			r.Connection.BytesSent == 0 || r.Workload.Comm != "client" {
			t.Errorf("record %+v, want a spliced connection with bytes and workload", r)
		}
	})
}

// TestExplicitProxyIsNotAnOpenProxy: the HTTPS_PROXY listener tunnels
// nothing and forwards nothing but CONNECT to a target, which it decrypts.
func TestExplicitProxyIsNotAnOpenProxy(t *testing.T) {
	f := newDecryptFixture(t, nil)
	fake := f.fake.HTTP.Listener.Addr().String()
	for _, tt := range []struct{ name, req string }{
		{"CONNECT elsewhere", "CONNECT " + fake + " HTTP/1.1\r\nHost: " + fake + "\r\n\r\n"},
		{"CONNECT another name", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"},
		{"CONNECT to a target's port 22", "CONNECT api.openai.com.evil:22 HTTP/1.1\r\nHost: api.openai.com.evil:22\r\n\r\n"},
		{"plain HTTP to anywhere", "GET http://" + fake + "/v1/models HTTP/1.1\r\nHost: " + fake + "\r\n\r\n"},
		{"plain HTTP to the API", "POST http://api.openai.com/v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 2\r\n\r\n{}"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(f.fake.Server.Requests())
			c, err := net.Dial("tcp", f.explicitAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, tt.req)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("status %d, want 403", resp.StatusCode)
			}
			host := strings.Fields(tt.req)[1]
			f.sink.wait(t, tt.name, func(r *audit.Record) bool {
				return r.Connection.Mode == "explicit" && r.Decision.Action == "refuse" && strings.Contains(r.Decision.Message, host)
			})
			if len(f.fake.Server.Requests()) != before {
				t.Error("a refused proxy request reached the upstream")
			}
		})
	}
}

// TestConnectionRecordsAreRateLimitedPerWorkload: a workload that opens
// connections faster than its record rate gets them refused without a
// record, so it cannot flood the spool; none of them reaches the upstream
// unrecorded.
func TestConnectionRecordsAreRateLimitedPerWorkload(t *testing.T) {
	var refused atomic.Int32
	f := newDecryptFixture(t, func(_ *DecryptConfig, c *Config) {
		c.ConnectionRecordRate = 0.5 // burst of 2, then one every 2 s
		c.OnConnRefused = func(code string) {
			if code == "promptrail_connection_record_rate" {
				refused.Add(1)
			}
		}
	})
	answered := 0
	for range 8 {
		if got := f.rawExchange(t, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); len(got) > 0 {
			answered++
		}
	}
	waitFor(t, func() bool { return refused.Load() == 6 })
	if answered != 2 {
		t.Errorf("%d connections reached the upstream, want the 2 of the burst", answered)
	}
	count := func() int {
		n := 0
		for _, r := range f.sink.all() {
			if r.Decision.Rule == ClassNotTLS {
				n++
			}
		}
		return n
	}
	waitFor(t, func() bool { return count() >= 2 })
	if n := count(); n != 2 {
		t.Errorf("%d connection records, want 2 (one per connection that was spliced)", n)
	}
}
