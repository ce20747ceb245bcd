package fakeopenai_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"
	"github.com/openai/openai-go/v3/responses"

	"github.com/promptrail/promptrail/internal/fakeopenai"
)

var chatParams = openai.ChatCompletionNewParams{
	Model:    "gpt-4o-mini",
	Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")},
}

func TestErrorStatuses(t *testing.T) {
	ts, client := newClient(t, fakeopenai.Config{})
	tests := []struct {
		status           int
		typ, code, param string
		retriedByDefault bool
	}{
		{400, "invalid_request_error", "context_length_exceeded", "messages", false},
		{401, "invalid_request_error", "invalid_api_key", "", false},
		{403, "request_forbidden", "unsupported_country_region_territory", "", false},
		{404, "invalid_request_error", "model_not_found", "", false},
		{429, "requests", "rate_limit_exceeded", "", true},
		{500, "server_error", "", "", true},
		{503, "server_error", "", "", true},
	}
	check := func(t *testing.T, err error, status int, typ, code, param string) {
		t.Helper()
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) {
			t.Fatalf("error %T %v, want *openai.Error", err, err)
		}
		if apiErr.StatusCode != status || apiErr.Type != typ || apiErr.Code != code || apiErr.Param != param || apiErr.Message == "" {
			t.Errorf("got %d %q %q %q %q", apiErr.StatusCode, apiErr.Type, apiErr.Code, apiErr.Param, apiErr.Message)
		}
	}
	for _, tc := range tests {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			ts.Reset()
			h := option.WithHeader("X-Fake-Status", strconv.Itoa(tc.status))
			_, err := client.Chat.Completions.New(ctxT(t), chatParams, h)
			check(t, err, tc.status, tc.typ, tc.code, tc.param)

			stream := client.Chat.Completions.NewStreaming(ctxT(t), chatParams, h)
			if stream.Next() {
				t.Error("stream yielded an event")
			}
			check(t, stream.Err(), tc.status, tc.typ, tc.code, tc.param)

			_, err = client.Responses.New(ctxT(t), responses.ResponseNewParams{
				Model: "gpt-4.1", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x")},
			}, h)
			check(t, err, tc.status, tc.typ, tc.code, tc.param)
			if n := len(ts.Requests()); n != 3 {
				t.Errorf("%d requests, want 3 (no retries)", n)
			}
			for _, r := range ts.Requests() {
				if r.Header.Get("X-Fake-Status") == "" {
					t.Errorf("recorded request lacks the control header")
				}
			}

			// x-should-retry: false stops an SDK that would retry.
			ts.Reset()
			_, err = client.Chat.Completions.New(ctxT(t), chatParams, h, option.WithMaxRetries(2),
				option.WithHeader("X-Fake-Should-Retry", "false"))
			check(t, err, tc.status, tc.typ, tc.code, tc.param)
			if n := len(ts.Requests()); n != 1 {
				t.Errorf("%d requests with x-should-retry false", n)
			}
		})
	}
	t.Run("retried when allowed", func(t *testing.T) {
		ts.Reset()
		_, err := client.Chat.Completions.New(ctxT(t), chatParams, option.WithMaxRetries(1),
			option.WithHeader("X-Fake-Status", "429"), option.WithMaxRetryDelay(100*time.Millisecond))
		check(t, err, 429, "requests", "rate_limit_exceeded", "")
		if n := len(ts.Requests()); n != 2 {
			t.Errorf("%d requests, want 2", n)
		}
	})
}

// raw sends one request with the fake's own client and returns the answer.
func raw(t *testing.T, c *http.Client, method, url, body string, headers map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, b
}

func TestErrorShapes(t *testing.T) {
	ts := fakeopenai.NewTLSServer(t, fakeopenai.Config{}, "")
	c := ts.Client()
	tests := []struct {
		name, method, path, body string
		headers                  map[string]string
		status                   int
		code                     any
	}{
		{"malformed JSON", "POST", "chat/completions", `{"model":`, nil, 400, nil},
		{"wrong type", "POST", "responses", `{"model":"m","stream":"yes"}`, nil, 400, nil},
		{"missing model", "POST", "embeddings", `{"input":"x"}`, nil, 400, "missing_required_parameter"},
		{"missing messages", "POST", "chat/completions", `{"model":"m"}`, nil, 400, "missing_required_parameter"},
		{"unknown path", "POST", "nothing/here", `{}`, nil, 404, nil},
		{"wrong method", "GET", "chat/completions", ``, nil, 404, nil},
		{"bad control header", "POST", "chat/completions", `{}`, map[string]string{"X-Fake-Delay": "soon"}, 400, "fake_bad_header"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, body := raw(t, c, tc.method, ts.BaseURL+tc.path, tc.body, tc.headers)
			var e struct {
				Error map[string]any `json:"error"`
			}
			if err := json.Unmarshal(body, &e); err != nil || res.StatusCode != tc.status {
				t.Fatalf("%d %s: %v", res.StatusCode, body, err)
			}
			for _, k := range []string{"message", "type", "param", "code"} {
				if _, ok := e.Error[k]; !ok {
					t.Errorf("error lacks %q: %s", k, body)
				}
			}
			if e.Error["code"] != tc.code || res.Header.Get("Content-Type") != "application/json" || res.Header.Get("X-Request-Id") == "" {
				t.Errorf("code %v, headers %v", e.Error["code"], res.Header)
			}
		})
	}
}

func TestStall(t *testing.T) {
	_, client := newClient(t, fakeopenai.Config{})
	t.Run("stream", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		stream := client.Chat.Completions.NewStreaming(ctx, chatParams, option.WithHeader("X-Fake-Stall", "1"))
		if !stream.Next() || stream.Current().Choices[0].Delta.Role != "assistant" {
			t.Fatalf("no first event: %v", stream.Err())
		}
		if stream.Next() {
			t.Fatalf("second event %s", stream.Current().RawJSON())
		}
		if err := stream.Err(); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err %v, want deadline exceeded", err)
		}
	})
	t.Run("json", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		_, err := client.Chat.Completions.New(ctx, chatParams, option.WithHeader("X-Fake-Stall", "true"))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err %v", err)
		}
	})
	t.Run("server close ends it", func(t *testing.T) {
		fake := fakeopenai.NewTLSServer(t, fakeopenai.Config{}, "")
		client := openai.NewClient(option.WithBaseURL(fake.BaseURL), option.WithHTTPClient(fake.Client()),
			option.WithAPIKey("k"), option.WithMaxRetries(0))
		stream := client.Responses.NewStreaming(t.Context(),
			responses.ResponseNewParams{Model: "m", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x")}},
			option.WithHeader("X-Fake-Stall", "2"))
		n := 0
		for stream.Next() {
			if n++; n == 2 {
				fake.Close() // as tb.Cleanup does
			}
		}
		if n != 2 {
			t.Errorf("%d events before the stall ended", n)
		}
	})
}

func TestTiming(t *testing.T) {
	_, client := newClient(t, fakeopenai.Config{})
	start := time.Now()
	if _, err := client.Chat.Completions.New(ctxT(t), chatParams, option.WithHeader("X-Fake-Delay", "200ms")); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("delay: answered after %v", d)
	}
	start = time.Now()
	stream := client.Chat.Completions.NewStreaming(ctxT(t), chatParams, option.WithHeader("X-Fake-Event-Delay", "30"),
		option.WithHeader("X-Fake-Reply", "0123456789"))
	n := 0
	for stream.Next() {
		n++
	}
	// first, two deltas, finish, [DONE] = four delays
	if d := time.Since(start); stream.Err() != nil || n != 4 || d < 120*time.Millisecond {
		t.Errorf("event delay: %v, %d events in %v", stream.Err(), n, d)
	}
}

func TestLarge(t *testing.T) {
	_, client := newClient(t, fakeopenai.Config{})
	const size = 1<<20 + 7
	res, err := client.Chat.Completions.New(ctxT(t), chatParams, option.WithHeader("X-Fake-Large", "1048583"))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(res.Choices[0].Message.Content); got != size {
		t.Errorf("content is %d bytes, want %d", got, size)
	}
}

func TestBrokenStreams(t *testing.T) {
	_, client := newClient(t, fakeopenai.Config{Reply: "a fairly long reply to split into many pieces"})
	t.Run("disconnect", func(t *testing.T) {
		stream := client.Chat.Completions.NewStreaming(ctxT(t), chatParams, option.WithHeader("X-Fake-Disconnect", "3"))
		n := 0
		for stream.Next() {
			n++
		}
		if n != 3 || stream.Err() == nil {
			t.Errorf("%d events, err %v", n, stream.Err())
		}
	})
	t.Run("chat error event", func(t *testing.T) {
		stream := client.Chat.Completions.NewStreaming(ctxT(t), chatParams, option.WithHeader("X-Fake-Stream-Error", "2"))
		n := 0
		for stream.Next() {
			n++
		}
		var se *ssestream.StreamError
		if n != 2 || !errors.As(stream.Err(), &se) || !strings.Contains(se.Message, "server_error") {
			t.Errorf("%d events, err %v", n, stream.Err())
		}
	})
	t.Run("responses error event", func(t *testing.T) {
		stream := client.Responses.NewStreaming(ctxT(t), responses.ResponseNewParams{
			Model: "m", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x")},
		}, option.WithHeader("X-Fake-Stream-Error", "3"))
		var last responses.ResponseStreamEventUnion
		n := 0
		for stream.Next() {
			last = stream.Current()
			n++
		}
		if n != 4 || stream.Err() != nil || last.Type != "error" || last.AsError().Code != "server_error" || last.SequenceNumber != 3 {
			t.Errorf("%d events, last %s, err %v", n, last.RawJSON(), stream.Err())
		}
	})
}

// TestHTTP1Wire reads a stream's raw bytes over HTTP/1.1.
func TestHTTP1Wire(t *testing.T) {
	ts := fakeopenai.NewTLSServer(t, fakeopenai.Config{Reply: "raw bytes on the wire"}, "")
	c := ts.Client()
	tr := c.Transport.(*http.Transport)
	tr.ForceAttemptHTTP2 = false
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	res, body := raw(t, c, "POST", ts.BaseURL+"chat/completions",
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"stream":true,"stream_options":{"include_usage":true}}`, nil)
	if res.Proto != "HTTP/1.1" || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("%s %v", res.Proto, res.Header)
	}
	text := string(body)
	for _, want := range []string{"\n: keep-alive\n\n", `"usage":null`, `"choices":[],`, "data: [DONE]\n\n", `"delta":{"role":"assistant","content":""`} {
		if !strings.Contains(text, want) {
			t.Errorf("stream lacks %q:\n%s", want, text)
		}
	}
	if !strings.HasSuffix(text, "data: [DONE]\n\n") || strings.Contains(text, "event:") {
		t.Errorf("stream:\n%s", text)
	}
	if reqs := ts.Requests(); reqs[0].Proto != "HTTP/1.1" {
		t.Errorf("recorded proto %q", reqs[0].Proto)
	}
}

// TestInterceptedName dials the fake as if it were api.openai.com, as a
// client redirected by promptrail would, on another loopback address.
func TestInterceptedName(t *testing.T) {
	ts := fakeopenai.NewTLSServer(t, fakeopenai.Config{}, "127.0.0.2:0")
	addr := ts.HTTP.Listener.Addr().String()
	c := ts.Client()
	c.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	client := openai.NewClient(option.WithHTTPClient(c), option.WithAPIKey("k"), option.WithMaxRetries(0),
		option.WithBaseURL("https://api.openai.com/v1/"))
	if _, err := client.Chat.Completions.New(ctxT(t), chatParams); err != nil {
		t.Fatal(err)
	}
	r := ts.Requests()[0]
	if r.Host != "api.openai.com" || r.ServerName != "api.openai.com" || !strings.HasPrefix(r.RemoteAddr, "127.0.0.1:") {
		t.Errorf("host %q sni %q remote %q", r.Host, r.ServerName, r.RemoteAddr)
	}
	if _, body := raw(t, ts.Client(), "GET", ts.BaseURL+"models", "", nil); !strings.Contains(string(body), `"object":"list"`) {
		t.Errorf("by IP: %s", body)
	}
}

func TestServe(t *testing.T) {
	var mu sync.Mutex
	var logs []string
	logf := func(format string, args ...any) {
		mu.Lock()
		logs = append(logs, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- fakeopenai.Serve(ctx, "127.0.0.1:0", "", "", fakeopenai.Config{Reply: "served"}, logf) }()
	var url, caFile string
	for deadline := time.Now().Add(10 * time.Second); url == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		for _, l := range logs {
			if m := regexp.MustCompile(`CA certificate in (\S+)`).FindStringSubmatch(l); m != nil {
				caFile = m[1]
			}
			if m := regexp.MustCompile(`serving (https://\S+/v1/)`).FindStringSubmatch(l); m != nil {
				url = m[1]
			}
		}
		mu.Unlock()
	}
	pemBytes, err := os.ReadFile(caFile)
	if err != nil || url == "" {
		t.Fatalf("url %q, CA %q: %v", url, caFile, err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	client := openai.NewClient(option.WithHTTPClient(c), option.WithBaseURL(url), option.WithAPIKey("k"), option.WithMaxRetries(0))
	res, err := client.Chat.Completions.New(ctxT(t), chatParams)
	if err != nil || res.Choices[0].Message.Content != "served" {
		t.Fatalf("%v %v", err, res)
	}
	// A stalled stream must not keep Serve from returning.
	stream := client.Chat.Completions.NewStreaming(t.Context(), chatParams, option.WithHeader("X-Fake-Stall", "1"))
	if !stream.Next() {
		t.Fatal(stream.Err())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if _, err := os.Stat(caFile); !os.IsNotExist(err) {
		t.Errorf("CA file left behind: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(strings.Join(logs, "\n"), "POST /v1/chat/completions") {
		t.Errorf("no request log in\n%s", strings.Join(logs, "\n"))
	}
}
