package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/promptrail/promptrail/internal/testlog"

	"github.com/promptrail/promptrail/agent/recorder"
	"github.com/promptrail/promptrail/agent/tlsca"
	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/internal/fakeopenai"
)

// memSink keeps records for tests to wait on.
type memSink struct {
	mu   sync.Mutex
	recs []*audit.Record
}

func (m *memSink) Write(_ context.Context, r *audit.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := *r
	m.recs = append(m.recs, &c)
	return nil
}

// all returns the records so far.
func (m *memSink) all() []*audit.Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*audit.Record(nil), m.recs...)
}

func (m *memSink) wait(t testing.TB, what string, match func(*audit.Record) bool) *audit.Record {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		m.mu.Lock()
		for _, r := range m.recs {
			if match(r) {
				m.mu.Unlock()
				return r
			}
		}
		m.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no record of %s", what)
	return nil
}

// decryptFixture is a proxy that decrypts api.openai.com and sends every
// connection to a fake upstream, with no kernel involved: the origin
// lookup is faked, so these tests run anywhere.
type decryptFixture struct {
	proxyAddr    string
	explicitAddr string // the same server's HTTPS_PROXY listener
	clientCAs    *x509.CertPool
	fake         *fakeopenai.TLSServer
	sink         *memSink
	logs         *testlog.Buffer
}

func newDecryptFixture(t testing.TB, mutate func(*DecryptConfig, *Config)) *decryptFixture {
	t.Helper()
	f := &decryptFixture{sink: &memSink{}, logs: &testlog.Buffer{}}
	f.fake = fakeopenai.NewTLSServer(t, fakeopenai.Config{Reply: "Hello from the fake."}, "")
	upCA := filepath.Join(t.TempDir(), "up.pem")
	os.WriteFile(upCA, f.fake.CAPEM, 0o600)
	up, err := NewUpstreamTransport(UpstreamConfig{ExtraCAs: upCA})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := tlsca.LoadOrCreate(t.TempDir(), tlsca.Constraints{Names: []string{"api.openai.com"}})
	if err != nil {
		t.Fatal(err)
	}
	f.clientCAs = x509.NewCertPool()
	f.clientCAs.AddCert(ca.Certificate())
	logger := slog.New(slog.NewTextHandler(f.logs, nil))
	rec, err := recorder.New(recorder.Config{Sink: f.sink, MaxBody: 64 << 10, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	lns, err := Listen([]netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")})
	if err != nil {
		t.Fatal(err)
	}
	dst := f.fake.HTTP.Listener.Addr().(*net.TCPAddr).AddrPort()
	dc := &DecryptConfig{CA: ca, Recorder: rec, Upstream: up}
	cfg := Config{Listeners: lns, Origins: fakeOrigins{dst: dst}, Logger: logger, Decrypt: dc,
		DecryptName: func(n string) bool { return n == "api.openai.com" }}
	if mutate != nil {
		mutate(dc, &cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	explicit, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 2)
	go func() { srv.Serve(ctx); done <- struct{}{} }()
	go func() { srv.ServeExplicit(ctx, explicit); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	f.proxyAddr = srv.Addrs()[0].String()
	f.explicitAddr = explicit.Addr().String()
	return f
}

// client returns an HTTP client that reaches api.openai.com through the
// proxy and trusts only the node CA, as an intercepted workload does.
func (f *decryptFixture) client(h2 bool) *http.Client {
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, f.proxyAddr)
		},
		TLSClientConfig:   &tls.Config{RootCAs: f.clientCAs},
		ForceAttemptHTTP2: h2,
	}}
}

func chatRequest(t *testing.T, stream bool, headers map[string]string) *http.Request {
	t.Helper()
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Tell me a secret"}]`
	if stream {
		body += `,"stream":true,"stream_options":{"include_usage":true}`
	}
	req, _ := http.NewRequest("POST", "https://api.openai.com/v1/chat/completions", strings.NewReader(body+"}"))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer sk-test")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	return req
}

func TestDecryptedExchangesAreRecorded(t *testing.T) {
	f := newDecryptFixture(t, nil)
	for _, tt := range []struct {
		name   string
		h2     bool
		stream bool
		proto  string
	}{
		{"json over HTTP/1.1", false, false, "HTTP/1.1"},
		{"json over HTTP/2", true, false, "HTTP/2.0"},
		{"stream over HTTP/2", true, true, "HTTP/2.0"},
		{"stream over HTTP/1.1", false, true, "HTTP/1.1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := f.client(tt.h2).Do(chatRequest(t, tt.stream, map[string]string{"X-Fake-Reply": tt.name}))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Proto != tt.proto {
				t.Fatalf("status %d proto %s, want 200 %s: %s", resp.StatusCode, resp.Proto, tt.proto, b)
			}
			r := f.sink.wait(t, tt.name, func(r *audit.Record) bool {
				return r.Response != nil && len(r.Response.Choices) > 0 && r.Response.Choices[0].Content == tt.name
			})
			if r.Request.Model != "gpt-4o-mini" || r.Request.Messages[0].Content != "Tell me a secret" || r.Request.Stream != tt.stream {
				t.Errorf("request in record: %+v", r.Request)
			}
			if r.Response.Usage == nil || r.Incomplete || r.Connection.SNI != "api.openai.com" || r.Connection.Proto != tt.proto {
				t.Errorf("record: usage %+v incomplete %v connection %+v", r.Response.Usage, r.Incomplete, r.Connection)
			}
			if strings.Contains(r.Request.Body, "sk-test") {
				t.Error("the record holds the API key from the Authorization header")
			}
		})
	}
}

func TestStreamsFlowEventByEvent(t *testing.T) {
	f := newDecryptFixture(t, nil)
	// Events 300ms apart: the first must reach the client long before the
	// last, or the proxy is buffering.
	resp, err := f.client(true).Do(chatRequest(t, true, map[string]string{"X-Fake-Event-Delay": "300ms"}))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	start := time.Now()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "data: ") {
		t.Fatalf("first line %q: %v", line, err)
	}
	if waited := time.Since(start); waited > 2*time.Second {
		t.Fatalf("first event took %v: the proxy held the stream back", waited)
	}
}

func TestBadInputGetsABoundedOutcome(t *testing.T) {
	f := newDecryptFixture(t, func(dc *DecryptConfig, c *Config) {
		dc.MaxRequestBody = 4 << 10
		dc.UpstreamIdleTimeout = 500 * time.Millisecond
		c.HelloTimeout = 300 * time.Millisecond
	})
	t.Run("upstream error passes through", func(t *testing.T) {
		resp, err := f.client(true).Do(chatRequest(t, false, map[string]string{"X-Fake-Status": "429"}))
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 429 {
			t.Fatalf("status %d, want the upstream's 429", resp.StatusCode)
		}
		r := f.sink.wait(t, "429", func(r *audit.Record) bool { return r.Response != nil && r.Response.Status == 429 })
		if r.Response.APIError == nil || r.Response.APIError.Code == "" {
			t.Errorf("429 record has no API error: %+v", r.Response)
		}
	})
	t.Run("oversized body", func(t *testing.T) {
		req, _ := http.NewRequest("POST", "https://api.openai.com/v1/chat/completions", bytes.NewReader(bytes.Repeat([]byte("a"), 8<<10)))
		resp, err := f.client(true).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 413 || !strings.Contains(string(b), "promptrail_request_too_large") {
			t.Fatalf("got %d %s, want 413 in the API's error shape", resp.StatusCode, b)
		}
		f.sink.wait(t, "413", func(r *audit.Record) bool { return r.Decision.Action == "reject" && r.Request.Size > 4<<10 })
	})
	t.Run("oversized headers", func(t *testing.T) {
		req := chatRequest(t, false, map[string]string{"X-Big": strings.Repeat("b", 128<<10)})
		resp, err := f.client(false).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("status %d, want 431", resp.StatusCode)
		}
	})
	t.Run("stalled stream is cut and marked", func(t *testing.T) {
		resp, err := f.client(true).Do(chatRequest(t, true, map[string]string{"X-Fake-Stall": "2"}))
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body) // ends, with an error, once the proxy gives up
		resp.Body.Close()
		r := f.sink.wait(t, "stall", func(r *audit.Record) bool { return strings.Contains(r.Error, "stalled") })
		if !r.Incomplete || r.Response.EventCount == 0 {
			t.Errorf("stalled record: incomplete %v, %d events", r.Incomplete, r.Response.EventCount)
		}
	})
	t.Run("client goes away mid-stream", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		req := chatRequest(t, true, map[string]string{"X-Fake-Event-Delay": "100ms", "X-Fake-Reply": "going away"}).WithContext(ctx)
		resp, err := f.client(true).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		bufio.NewReader(resp.Body).ReadString('\n')
		cancel()
		resp.Body.Close()
		r := f.sink.wait(t, "client gone", func(r *audit.Record) bool {
			return r.Incomplete && strings.Contains(r.Request.Body, "Tell me") && r.Error != "" && !strings.Contains(r.Error, "stalled")
		})
		if r.Response == nil {
			t.Errorf("record of an abandoned stream has no response: %+v", r)
		}
	})
	t.Run("smuggling shape", func(t *testing.T) {
		before := len(f.fake.Server.Requests())
		c := f.tlsConn(t, "api.openai.com", []string{"http/1.1"})
		defer c.Close()
		io.WriteString(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/smuggled HTTP/1.1\r\nHost: api.openai.com\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.ReadAll(c)
		// The proxy parses the request once (Transfer-Encoding wins, RFC 9112
		// §6.3) and forwards what it parsed, re-framed: the upstream cannot
		// see a different request boundary than the proxy did.
		reqs := f.fake.Server.Requests()[before:]
		if len(reqs) == 0 {
			t.Fatal("nothing reached the upstream")
		}
		if reqs[0].Path != "/v1/chat/completions" || len(reqs[0].Body) != 0 {
			t.Errorf("upstream got %s with a %d-byte body, want the empty chunked body the proxy parsed", reqs[0].Path, len(reqs[0].Body))
		}
		for _, r := range reqs {
			if r.Header.Get("Content-Length") != "" && r.Header.Get("Transfer-Encoding") != "" {
				t.Errorf("upstream request %s carries both Content-Length and Transfer-Encoding", r.Path)
			}
		}
		f.sink.wait(t, "the smuggling-shaped request", func(r *audit.Record) bool {
			return r.Request.Path == "/v1/chat/completions" && r.Request.Size == 0
		})
	})
	t.Run("malformed ClientHello is refused and recorded", func(t *testing.T) {
		before := len(f.fake.Server.Requests())
		got := f.rawExchange(t, append([]byte{0x16, 3, 1, 0, 6}, []byte{1, 0, 0, 2, 0xff, 0xff}...))
		if len(got) != 0 {
			t.Fatalf("client got %x, want the connection closed unanswered", got)
		}
		r := f.sink.wait(t, "bad hello", func(r *audit.Record) bool { return r.Decision.Rule == "bad-hello" })
		if r.Kind != audit.KindConnection || r.Decision.Action != "refuse" || r.Connection.OrigDst == "" {
			t.Errorf("record %+v, want a refused connection with its destination", r)
		}
		if n := len(f.fake.Server.Requests()); n != before {
			t.Errorf("the upstream saw %d requests from a refused connection", n-before)
		}
	})
	t.Run("plain HTTP on the TLS port is spliced and recorded", func(t *testing.T) {
		got := f.rawExchange(t, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		if !bytes.Contains(got, []byte("HTTP/1.0 400")) {
			t.Fatalf("client got %q, want the upstream's answer to plain HTTP", got)
		}
		r := f.sink.wait(t, "not TLS", func(r *audit.Record) bool { return r.Decision.Rule == "not-tls" })
		if r.Decision.Action != "splice" || r.Connection.BytesSent == 0 || r.Connection.BytesReceived == 0 {
			t.Errorf("record %+v, want a spliced connection with its byte counts", r.Connection)
		}
	})
	t.Run("silent client is closed", func(t *testing.T) {
		c, err := net.Dial("tcp", f.proxyAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("read on a silent connection: %v, want it closed by the proxy", err)
		}
	})
	t.Run("other connections still work", func(t *testing.T) {
		resp, err := f.client(true).Do(chatRequest(t, false, nil))
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
}

func (f *decryptFixture) tlsConn(t *testing.T, sni string, alpn []string) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", f.proxyAddr, &tls.Config{ServerName: sni, RootCAs: f.clientCAs, NextProtos: alpn})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// rawExchange sends b, half-closes and returns what comes back.
func (f *decryptFixture) rawExchange(t *testing.T, b []byte) []byte {
	t.Helper()
	c, err := net.Dial("tcp", f.proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(b)
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(c)
	return got
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
