// Package fakeopenai is a local stand-in for the OpenAI API, used by
// promptrail's tests (promptrail intercepts LLM API calls over TLS) and
// runnable by hand through Serve.
//
// It speaks the wire shapes of the public OpenAI API reference closely
// enough that the official Go SDK (github.com/openai/openai-go/v3) and the
// official Node SDK (npm "openai") parse its answers without error:
//
//   - POST /v1/chat/completions  chat.completion, or chat.completion.chunk SSE
//   - POST /v1/responses         response, or typed Responses SSE events
//   - POST /v1/completions       text_completion (legacy), JSON or SSE
//   - POST /v1/embeddings        float or base64 (little-endian float32) vectors
//   - GET  /v1/models[/{id}]     model list / model object
//
// Anything else is a 404 and a body that is not JSON a 400, both in the API's
// error shape {"error":{"message","type","param","code"}}.
//
// Replies are deterministic: the text is Config.Reply (or SetReply's), token
// counts are whitespace-separated words, embeddings derive from a hash of the
// input. Every request is recorded (see Requests).
//
// A client in any process can steer one request with headers:
//
//	X-Fake-Status: 400|401|403|404|429|500|503|...  answer with that API error
//	X-Fake-Delay: 200ms            wait before the first byte (bare number = ms)
//	X-Fake-Event-Delay: 50ms       wait between SSE events
//	X-Fake-Stall: N                send N events (1 when "true"), then nothing
//	                               until the client leaves or the server closes;
//	                               without "stream", send headers then stall
//	X-Fake-Disconnect: N           send N events, then abort the connection
//	X-Fake-Stream-Error: N         send N events, then an in-stream error event
//	X-Fake-Reply: text             reply text for this request
//	X-Fake-Reply-Base64: b64       the same, base64 (for non-ASCII text)
//	X-Fake-Chunk-Size: N           runes per streamed delta
//	X-Fake-No-Usage: 1             no usage chunk/object even when asked for
//	X-Fake-Large: N                reply text of exactly N bytes (ASCII)
//	X-Fake-Tool-Call: name         answer with a call of function "name"
//	X-Fake-Should-Retry: true|false  set the x-should-retry response header
//	X-Fake-Content-Encoding: gzip|deflate|deflate-raw|br|zstd
//	                               encode the answer so, whatever the client
//	                               accepts (deflate-raw: RFC 1951 as deflate)
//
// Both SDKs retry 408, 409, 429 and 5xx answers by default (twice, with
// backoff starting near 0.5s), so tests that provoke errors should set the
// client's max retries to 0, or send X-Fake-Should-Retry: false, which both
// SDKs obey. Error answers carry no retry-after headers.
//
// Client behaviours worth knowing when testing stalls and aborts: the Go
// SDK's streams end with the context's error; the Node SDK's "timeout" option
// stops covering a request once headers arrive, so a stalled stream there
// only ends through an AbortSignal (and its iterator then ends without
// throwing) or undici's 300s body timeout. The Go SDK treats any SSE event
// whose JSON has a top-level "error" key, even null, as a stream error, so
// no event here carries one.
package fakeopenai

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultReply is the assistant text used when nothing else chooses one.
const DefaultReply = "Hello from the fake upstream."

// maxBody bounds how much of a request body is read and recorded.
const maxBody = 64 << 20

// maxLarge bounds X-Fake-Large.
const maxLarge = 64 << 20

// Config sets the fake's defaults; the zero value is usable.
type Config struct {
	// Reply is the default assistant text; empty means DefaultReply.
	Reply string
	// ChunkSize is how many runes each streamed text delta carries (default 5).
	ChunkSize int
	// Delay is waited before the first byte of every answer.
	Delay time.Duration
	// EventDelay is waited between SSE events.
	EventDelay time.Duration
	// Models lists the ids GET /v1/models returns; nil means a built-in list.
	Models []string
	// EmbeddingDims is the length of embedding vectors (default 8); a request's
	// "dimensions" overrides it.
	EmbeddingDims int
	// MaxRequests bounds how many requests are kept for Requests (oldest are
	// dropped); 0 keeps all.
	MaxRequests int
	// CertHosts are extra DNS names or IPs for the certificates that Serve and
	// NewTLSServer generate.
	CertHosts []string
	// Logf, when set, gets one line per request.
	Logf func(format string, args ...any)
}

// Request is one request the fake saw.
type Request struct {
	Method     string
	Path       string
	RawQuery   string
	Header     http.Header // a clone
	Body       []byte
	Proto      string // "HTTP/1.1" or "HTTP/2.0"
	Host       string
	ServerName string // TLS SNI, when served over TLS
	RemoteAddr string
	Time       time.Time
}

// Server is the fake; it is an http.Handler. Create it with New.
type Server struct {
	cfg Config

	mu    sync.Mutex
	reply string
	reqs  []Request

	done      chan struct{}
	closeOnce sync.Once
}

// New returns a fake with the given defaults. The caller serves it.
func New(cfg Config) *Server {
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = 5
	}
	if cfg.EmbeddingDims <= 0 {
		cfg.EmbeddingDims = 8
	}
	if cfg.Models == nil {
		cfg.Models = defaultModels
	}
	return &Server{cfg: cfg, reply: cfg.Reply, done: make(chan struct{})}
}

var defaultModels = []string{
	"gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-5", "gpt-5-mini",
	"o3-mini", "gpt-3.5-turbo-instruct", "text-embedding-3-small", "text-embedding-3-large",
}

// Requests returns a copy of every request seen since New or Reset.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.reqs))
	copy(out, s.reqs)
	return out
}

// Reset forgets the recorded requests (the reply set by SetReply stays).
func (s *Server) Reset() {
	s.mu.Lock()
	s.reqs = nil
	s.mu.Unlock()
}

// SetReply sets the default reply text; "" restores Config.Reply (or
// DefaultReply). Safe for concurrent use.
func (s *Server) SetReply(text string) {
	s.mu.Lock()
	if text == "" {
		text = s.cfg.Reply
	}
	s.reply = text
	s.mu.Unlock()
}

// Close ends stalls and delays in progress, so that the HTTP server serving
// the fake can shut down even while clients hold stalled streams. The fake
// keeps answering new requests, without stalls.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.done) })
}

func (s *Server) currentReply() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reply == "" {
		return DefaultReply
	}
	return s.reply
}

func (s *Server) record(r *http.Request, body []byte) {
	rec := Request{
		Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
		Header: r.Header.Clone(), Body: body, Proto: r.Proto, Host: r.Host,
		RemoteAddr: r.RemoteAddr, Time: time.Now(),
	}
	if r.TLS != nil {
		rec.ServerName = r.TLS.ServerName
	}
	s.mu.Lock()
	s.reqs = append(s.reqs, rec)
	if n := s.cfg.MaxRequests; n > 0 && len(s.reqs) > n {
		s.reqs = append([]Request(nil), s.reqs[len(s.reqs)-n:]...)
	}
	s.mu.Unlock()
}

// opts are the per-request controls, from Config and X-Fake-* headers.
type opts struct {
	status           int
	delay            time.Duration
	eventDelay       time.Duration
	stallAfter       int
	disconnectAfter  int
	streamErrorAfter int
	reply            string
	chunkSize        int
	noUsage          bool
	toolCall         string
	shouldRetry      string
}

func (s *Server) parseOpts(h http.Header) (*opts, *apiError) {
	o := &opts{
		delay: s.cfg.Delay, eventDelay: s.cfg.EventDelay,
		reply: s.currentReply(), chunkSize: s.cfg.ChunkSize,
		toolCall: strings.TrimSpace(h.Get("X-Fake-Tool-Call")),
	}
	var bad *apiError
	num := func(name string, min, max int) int {
		v := strings.TrimSpace(h.Get(name))
		if v == "" || bad != nil {
			return 0
		}
		if strings.EqualFold(v, "true") {
			v = "1"
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < min || n > max {
			bad = badHeader(name, v)
		}
		return n
	}
	dur := func(name string, def time.Duration) time.Duration {
		v := strings.TrimSpace(h.Get(name))
		if v == "" || bad != nil {
			return def
		}
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			return time.Duration(n) * time.Millisecond
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			bad = badHeader(name, v)
		}
		return d
	}
	o.status = num("X-Fake-Status", 0, 599)
	if o.status != 0 && o.status < 400 {
		return nil, badHeader("X-Fake-Status", h.Get("X-Fake-Status"))
	}
	o.delay = dur("X-Fake-Delay", o.delay)
	o.eventDelay = dur("X-Fake-Event-Delay", o.eventDelay)
	o.stallAfter = num("X-Fake-Stall", 0, 1<<20)
	o.disconnectAfter = num("X-Fake-Disconnect", 0, 1<<20)
	o.streamErrorAfter = num("X-Fake-Stream-Error", 0, 1<<20)
	if n := num("X-Fake-Chunk-Size", 1, maxLarge); n > 0 {
		o.chunkSize = n
	}
	if v := h.Get("X-Fake-Reply"); v != "" {
		o.reply = v
	}
	if v := h.Get("X-Fake-Reply-Base64"); v != "" && bad == nil {
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v))
		if err != nil {
			return nil, badHeader("X-Fake-Reply-Base64", v)
		}
		o.reply = string(b)
	}
	if n := num("X-Fake-Large", 1, maxLarge); n > 0 {
		o.reply = largeText(n)
	}
	if v := strings.TrimSpace(h.Get("X-Fake-No-Usage")); v != "" && v != "0" && !strings.EqualFold(v, "false") {
		o.noUsage = true
	}
	if v := strings.ToLower(strings.TrimSpace(h.Get("X-Fake-Should-Retry"))); v != "" {
		if v != "true" && v != "false" {
			return nil, badHeader("X-Fake-Should-Retry", v)
		}
		o.shouldRetry = v
	}
	if bad != nil {
		return nil, bad
	}
	return o, nil
}

// largeText is n bytes of ASCII words.
func largeText(n int) string {
	const unit = "large reply "
	b := bytes.Repeat([]byte(unit), n/len(unit)+1)
	return string(b[:n])
}

// ServeHTTP answers one API request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	s.record(r, body)
	if s.cfg.Logf != nil {
		s.cfg.Logf("fakeopenai: %s %s %s (%d bytes)", r.Proto, r.Method, r.URL.Path, len(body))
	}
	w.Header().Set("X-Request-Id", randID("req_", 32))
	w.Header().Set("Openai-Version", "2020-10-01")
	if err != nil {
		writeError(w, &apiError{status: http.StatusRequestEntityTooLarge, typ: "invalid_request_error",
			message: "fake: request body too large or unreadable: " + err.Error()})
		return
	}
	o, bad := s.parseOpts(r.Header)
	if bad != nil {
		writeError(w, bad)
		return
	}
	if o.shouldRetry != "" {
		w.Header().Set("X-Should-Retry", o.shouldRetry)
	}
	w.Header().Set("Openai-Processing-Ms", strconv.FormatInt(o.delay.Milliseconds(), 10))
	if s.wait(r.Context(), o.delay) != nil {
		return
	}
	if o.status != 0 {
		writeError(w, errorForStatus(o.status))
		return
	}

	if c := strings.TrimSpace(r.Header.Get("X-Fake-Content-Encoding")); c != "" {
		enc, err := newEncoder(c, w)
		if err != nil {
			writeError(w, badHeader("X-Fake-Content-Encoding", c))
			return
		}
		defer enc.Close()
		w = &encodingWriter{ResponseWriter: w, coding: c, enc: enc}
	}
	x := &exchange{s: s, w: w, r: r, body: body, o: o}
	switch path := r.URL.Path; {
	case path == "/v1/chat/completions" && r.Method == http.MethodPost:
		s.chatCompletions(x)
	case path == "/v1/responses" && r.Method == http.MethodPost:
		s.responses(x)
	case path == "/v1/completions" && r.Method == http.MethodPost:
		s.completions(x)
	case path == "/v1/embeddings" && r.Method == http.MethodPost:
		s.embeddings(x)
	case path == "/v1/models" && r.Method == http.MethodGet:
		s.listModels(x)
	case strings.HasPrefix(path, "/v1/models/") && r.Method == http.MethodGet:
		s.getModel(x, strings.TrimPrefix(path, "/v1/models/"))
	default:
		writeError(w, &apiError{status: http.StatusNotFound, typ: "invalid_request_error",
			message: fmt.Sprintf("Invalid URL (%s %s)", r.Method, path)})
	}
}

// wait sleeps d, or less when the request ends or the server closes.
func (s *Server) wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return nil
	}
}

// stall blocks until the request ends or the server closes.
func (s *Server) stall(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-s.done:
	}
}

// exchange is one request being answered.
type exchange struct {
	s    *Server
	w    http.ResponseWriter
	r    *http.Request
	body []byte
	o    *opts
}

// decode parses the JSON body into v, answering 400 on failure.
func (x *exchange) decode(v any) bool {
	if err := json.Unmarshal(x.body, v); err != nil {
		writeError(x.w, malformedJSON(err))
		return false
	}
	return true
}

// writeJSON sends a 200 JSON answer, or stalls after the headers when asked.
func (x *exchange) writeJSON(v any) {
	b, err := marshal(v)
	if err != nil {
		writeError(x.w, &apiError{status: 500, typ: "server_error", message: "fake: " + err.Error()})
		return
	}
	h := x.w.Header()
	h.Set("Content-Type", "application/json")
	if x.o.stallAfter > 0 {
		x.w.WriteHeader(http.StatusOK)
		_ = http.NewResponseController(x.w).Flush()
		x.s.stall(x.r.Context())
		// Never let a stalled answer end as a valid empty body.
		panic(http.ErrAbortHandler)
	}
	h.Set("Content-Length", strconv.Itoa(len(b)))
	x.w.WriteHeader(http.StatusOK)
	_, _ = x.w.Write(b)
}

// sse writes one Server-Sent Events stream, applying the stream controls.
type sse struct {
	x        *exchange
	rc       *http.ResponseController
	sent     int
	keptOpen bool
	failed   bool
	// fail gives the in-stream error event for X-Fake-Stream-Error; nil
	// means the Chat Completions shape: a data line {"error":{...}}.
	fail func() (event string, data any)
}

func (x *exchange) startSSE() *sse {
	h := x.w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	x.w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(x.w)
	_ = rc.Flush()
	return &sse{x: x, rc: rc}
}

// send writes one event (event may be "") whose data is v marshalled, or v
// itself when it is a string. It returns false when the stream must end.
func (e *sse) send(event string, v any) bool {
	o, s, ctx := e.x.o, e.x.s, e.x.r.Context()
	if o.streamErrorAfter > 0 && e.sent == o.streamErrorAfter && !e.failed {
		e.failed = true
		if e.fail != nil {
			event, v = e.fail()
		} else {
			event, v = "", streamError().body()
		}
		e.send(event, v)
		return false
	}
	if e.sent > 0 && s.wait(ctx, o.eventDelay) != nil {
		return false
	}
	var data []byte
	if str, ok := v.(string); ok {
		data = []byte(str)
	} else {
		var err error
		if data, err = marshal(v); err != nil {
			return false
		}
	}
	var buf bytes.Buffer
	if event != "" {
		fmt.Fprintf(&buf, "event: %s\n", event)
	}
	fmt.Fprintf(&buf, "data: %s\n\n", data)
	if e.sent == 2 && !e.keptOpen {
		// Real APIs and proxies interleave comment lines; clients must skip them.
		buf.WriteString(": keep-alive\n\n")
		e.keptOpen = true
	}
	if _, err := e.x.w.Write(buf.Bytes()); err != nil {
		return false
	}
	if e.rc.Flush() != nil {
		return false
	}
	e.sent++
	switch {
	case o.disconnectAfter > 0 && e.sent == o.disconnectAfter:
		panic(http.ErrAbortHandler) // net/http aborts the connection or stream quietly
	case o.stallAfter > 0 && e.sent == o.stallAfter:
		s.stall(ctx)
		return false
	}
	return ctx.Err() == nil
}
