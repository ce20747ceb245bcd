package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/promptrail/promptrail/audit"
)

// apiError is the code of an OpenAI-shaped error body.
func apiErrorCode(t *testing.T, b []byte) string {
	t.Helper()
	var e struct {
		Error struct{ Message, Type, Code string }
	}
	if err := json.Unmarshal(b, &e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
		t.Fatalf("body %q is not an API error: %v", b, err)
	}
	return e.Error.Code
}

// slowBody is a request body that sends head and then nothing until the
// test ends.
func slowBody(t *testing.T, head string) io.Reader {
	t.Helper()
	pr, pw := io.Pipe()
	go pw.Write([]byte(head))
	t.Cleanup(func() { pw.Close() })
	return pr
}

func postBody(t *testing.T, body io.Reader, length int64) *http.Request {
	t.Helper()
	req, err := http.NewRequest("POST", "https://api.openai.com/v1/chat/completions", body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = length
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Fake-Should-Retry", "false")
	return req
}

// TestBudgetsRefuseWithAnErrorAndARecord: each budget, when hit, gets its
// status and promptrail code in the API's error shape, and a record of
// the refusal; nothing goes upstream.
func TestBudgetsRefuseWithAnErrorAndARecord(t *testing.T) {
	var hits codeCounter
	f := newDecryptFixture(t, func(dc *DecryptConfig, _ *Config) {
		dc.MaxInflightBytes = 4 << 20 // 3.5 MiB for large bodies, 512 KiB for small ones
		dc.InflightWait = 200 * time.Millisecond
		dc.BodyReadTimeout = 300 * time.Millisecond
		dc.OnBudgetHit = hits.add
	})
	holding := false
	for _, tc := range []struct {
		name   string
		h2     bool
		setup  func(t *testing.T) *http.Request
		raw    string // instead of setup: sent on a TLS connection, then nothing
		status int
		code   string
		// retry sends the request again until it gets status: the
		// budget is taken by a request in the background.
		retry bool
	}{
		{name: "body slower than the read timeout, HTTP/1.1", status: 408, code: "promptrail_body_timeout",
			// Go's HTTP/1.1 client waits for its body to be written before
			// it returns a response: this client writes by hand.
			raw: "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 1000\r\n\r\n{\"model\":"},
		{name: "body slower than the read timeout, HTTP/2", h2: true, status: 408, code: "promptrail_body_timeout",
			setup: func(t *testing.T) *http.Request {
				b := slowBody(t, `{"model":`)
				return postBody(t, b, 1000)
			}},
		{name: "body larger than the whole in-flight budget", h2: true, status: 413, code: "promptrail_memory_budget",
			setup: func(t *testing.T) *http.Request {
				return postBody(t, bytes.NewReader(bytes.Repeat([]byte("a"), 1200<<10)), 1200<<10)
			}},
		{name: "in-flight budget taken by another request", h2: true, status: 503, code: "promptrail_memory_budget", retry: true,
			setup: func(t *testing.T) *http.Request {
				// A request in the background announces 800 KiB (2.4 MiB
				// charged) and stalls, holding its buffer while this one
				// asks for 1.8 MiB.
				if !holding {
					holding = true
					b := slowBody(t, `{`)
					go f.client(false).Do(postBody(t, b, 800<<10))
				}
				return postBody(t, bytes.NewReader(bytes.Repeat([]byte("a"), 600<<10)), 600<<10)
			}},
		{name: "small request while a large body holds the budget", h2: true, status: 200,
			setup: func(t *testing.T) *http.Request { return chatRequest(t, false, nil) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.fake.Server.Requests())
			var (
				resp *http.Response
				b    []byte
				id   string
			)
			for try, deadline := 0, time.Now().Add(10*time.Second); tc.raw == ""; try++ {
				req := tc.setup(t)
				id = fmt.Sprintf("%s #%d", tc.name, try)
				req.Header.Set("X-Test-Case", id)
				var err error
				if resp, err = f.client(tc.h2).Do(req); err != nil {
					t.Fatal(err)
				}
				b, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
				if !tc.retry || resp.StatusCode == tc.status || time.Now().After(deadline) {
					break
				}
			}
			if tc.raw != "" {
				resp, b = f.rawRequest(t, tc.raw)
			}
			if resp.StatusCode == 200 && tc.status == 200 {
				return
			}
			if resp.StatusCode != tc.status || apiErrorCode(t, b) != tc.code {
				t.Fatalf("got %d %s, want %d %s", resp.StatusCode, b, tc.status, tc.code)
			}
			if hits.count(tc.code) == 0 {
				t.Errorf("OnBudgetHit was not told of %s", tc.code)
			}
			f.sink.wait(t, tc.name, func(r *audit.Record) bool {
				return r.Decision.Action == "reject" && r.Response != nil && r.Response.Status == tc.status && strings.Contains(r.Error, "promptrail:")
			})
			for _, r := range f.fake.Server.Requests()[before:] {
				if r.Header.Get("X-Test-Case") == id {
					t.Errorf("the refused request reached the upstream")
				}
			}
		})
	}
}

// TestConnectionCapPerWorkload: connections of one cgroup over the cap are
// closed at once; a slot that frees up is usable again.
func TestConnectionCapPerWorkload(t *testing.T) {
	var hits codeCounter
	f := newDecryptFixture(t, func(_ *DecryptConfig, c *Config) {
		c.MaxConnsPerWorkload = 2
		c.OnConnRefused = func(string) { hits.add("cap") }
	})
	held := []net.Conn{f.tlsConn(t, "api.openai.com", []string{"http/1.1"}), f.tlsConn(t, "api.openai.com", []string{"http/1.1"})}
	c, err := net.Dial("tcp", f.proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("a third connection: read %v, want it closed (EOF) at once", err)
	}
	if hits.count("cap") != 1 {
		t.Errorf("OnConnRefused called %d times, want 1", hits.count("cap"))
	}
	held[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := f.client(false).Do(chatRequest(t, false, nil))
		if err == nil {
			io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no request served after a slot freed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	held[1].Close()
}

// rawRequest writes raw on a TLS connection to the proxy, sends nothing
// more, and reads the response.
func (f *decryptFixture) rawRequest(t *testing.T, raw string) (*http.Response, []byte) {
	t.Helper()
	c := f.tlsConn(t, "api.openai.com", []string{"http/1.1"})
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// keywordBait is n bytes of a JSON request whose content is dense with the
// keywords of gitleaks' generic rule, in a shape that runs its regex at
// every keyword.
func keywordBait(n int) []byte {
	const unit = "api_api=aaaaaaaaaaaaaaaaa token_token=aaaaaaaaaaaaaaaaa secret_secret=aaaaaaaaaaaaaaaaa "
	head, tail := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"`, `"}]}`
	return []byte(head + strings.Repeat(unit, (n-len(head)-len(tail))/len(unit)) + tail)
}

// TestMaskBudget: a body whose masking outlasts the mask timeout is not
// passed on (neither up nor down), is answered in the API's error shape,
// and its record keeps none of the unmasked text.
func TestMaskBudget(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		body    []byte
		status  int
	}{
		{"request of keyword bait", 100 * time.Millisecond, keywordBait(4 << 20), 413},
		// A reply with a keyword in it and a deadline that has passed
		// before the search starts: the request has no keyword, so only
		// the response search is stopped.
		{"response", time.Nanosecond, []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`), 502},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newDecryptFixture(t, func(dc *DecryptConfig, _ *Config) {
				dc.Masker = testMasker(t)
				dc.MaskTimeout = tc.timeout
			})
			before := len(f.fake.Server.Requests())
			start := time.Now()
			req := postBody(t, bytes.NewReader(tc.body), int64(len(tc.body)))
			req.Header.Set("X-Fake-Reply", "Hello from the fake, here is a token")
			resp, err := f.client(true).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Logf("%d-byte body refused after %v", len(tc.body), time.Since(start))
			if resp.StatusCode != tc.status || apiErrorCode(t, b) != "promptrail_mask_budget" {
				t.Fatalf("got %d %s, want %d promptrail_mask_budget", resp.StatusCode, b, tc.status)
			}
			r := f.sink.wait(t, tc.name, func(r *audit.Record) bool {
				return r.Response != nil && r.Response.Status == tc.status && strings.Contains(r.Error, "took longer than")
			})
			if tc.status == 413 {
				if r.Request.Body != "" || len(f.fake.Server.Requests()) != before {
					t.Errorf("a body that was not masked was recorded (%d bytes) or forwarded", len(r.Request.Body))
				}
			}
			if strings.Contains(string(b), "Hello from the fake") {
				t.Error("the unmasked response reached the client")
			}
		})
	}
}

// TestSlowHeadersAreCut: a client that completes the TLS handshake and
// then sends its request headers a byte at a time is disconnected once the
// header timeout passes.
func TestSlowHeadersAreCut(t *testing.T) {
	f := newDecryptFixture(t, func(dc *DecryptConfig, _ *Config) { dc.HandshakeTimeout = 300 * time.Millisecond })
	c := f.tlsConn(t, "api.openai.com", []string{"http/1.1"})
	defer c.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for _, b := range []byte("POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nX-Slow: ") {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := c.Write([]byte{b}); err != nil {
				return
			}
		}
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(c); isTimeout(err) {
		t.Fatal("a client sending its headers a byte at a time was still connected after 10s")
	}
}

// TestResponseWithoutRoomIsMaskedAsItFlows: a response too large for the
// in-flight budget is not refused but masked as text on its way, with no
// whole copy held.
func TestResponseWithoutRoomIsMaskedAsItFlows(t *testing.T) {
	f := newDecryptFixture(t, func(dc *DecryptConfig, _ *Config) {
		dc.Masker = testMasker(t)
		dc.MaxInflightBytes = 4 << 20
		dc.InflightWait = 100 * time.Millisecond
	})
	req := chatRequest(t, false, map[string]string{"X-Fake-Large": strconv.Itoa(2 << 20)})
	resp, err := f.client(true).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(b) < 2<<20 || !strings.Contains(string(b), "large reply") {
		t.Fatalf("got %d with %d bytes, want the 2 MiB reply", resp.StatusCode, len(b))
	}
	f.sink.wait(t, "the large reply", func(r *audit.Record) bool {
		return r.Response != nil && r.Response.Status == 200 && r.Response.Size >= 2<<20
	})
}

// codeCounter counts the codes a hook is called with.
type codeCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *codeCounter) add(code string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[code]++
}

func (c *codeCounter) count(code string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[code]
}
