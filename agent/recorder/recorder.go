// Package recorder turns one intercepted HTTP exchange with an LLM API into
// an audit record: it parses the request, observes the response as it
// passes (JSON, or server-sent events reassembled as they stream) without
// changing a byte of it, and hands the finished record to a Sink.
package recorder

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/promptrail/promptrail/agent/openai"
	"github.com/promptrail/promptrail/audit"
)

// Sink stores finished records.
type Sink interface {
	Write(ctx context.Context, r *audit.Record) error
}

// Journal is a Sink that also stores the record of a request before the
// request goes upstream (see Exchange.Spool); Write then replaces it.
type Journal interface {
	Sink
	Begin(ctx context.Context, r *audit.Record) error
}

// Config configures a Recorder.
type Config struct {
	// Sink receives every record. Required.
	Sink Sink
	// MaxBody bounds the bytes of text one side of a record keeps: the
	// request's parsed messages, prompt, input and body together, and the
	// response's choices, events and body together; what is cut is
	// flagged truncated. Zero: 1 MiB; at most MaxMaxBody, so that a
	// record always fits the collector's record limit.
	MaxBody int
	// MaxEvents bounds the server-sent events kept per stream. Zero: 10000.
	MaxEvents int
	// AgentID and Node name the recording agent in every record.
	AgentID, Node string
	// Logger reports records that could not be stored. Nil: slog.Default().
	Logger *slog.Logger
}

// MaxMaxBody is the largest Config.MaxBody: two sides of it and the rest
// of a record (identity, findings, framing: 64 KiB allowed) fit
// audit.MaxRecordBytes. A record whose JSON escapes blow it up past the
// limit all the same is shrunk further when it is finished.
const MaxMaxBody = (audit.MaxRecordBytes - fixedBytes) / 2

// Recorder records exchanges. It is safe for concurrent use.
type Recorder struct{ cfg Config }

// New returns a Recorder.
func New(cfg Config) (*Recorder, error) {
	if cfg.Sink == nil {
		return nil, errors.New("recorder: no sink")
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.MaxBody < 0 || cfg.MaxBody > MaxMaxBody {
		return nil, fmt.Errorf("recorder: --max-body %d: want 1 to %d bytes, so that a record (two bodies and the rest) fits the collector's record limit of %d bytes",
			cfg.MaxBody, MaxMaxBody, audit.MaxRecordBytes)
	}
	if cfg.MaxEvents == 0 {
		cfg.MaxEvents = 10000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Recorder{cfg: cfg}, nil
}

// Exchange is the record of one request/response in progress.
type Exchange struct {
	r     *Recorder
	start time.Time
	rec   audit.Record

	once sync.Once
	late func() (audit.Workload, bool)
}

// Begin starts the record of a request whose body has been read whole
// (body may be truncated by the caller's limit; size is the full size).
func (r *Recorder) Begin(req *http.Request, body []byte, size int64, conn audit.Connection, w audit.Workload) *Exchange {
	start := time.Now()
	e := &Exchange{r: r, start: start}
	conn.Proto = req.Proto
	e.rec = audit.Record{
		ID: audit.NewID(start), Kind: audit.KindExchange, AgentID: r.cfg.AgentID, Node: r.cfg.Node, Start: start.UTC(),
		Workload: w, Connection: conn, Decision: audit.Decision{Action: "allow"},
	}
	q := &e.rec.Request
	q.Method, q.Host, q.Path = req.Method, req.Host, req.URL.RequestURI()
	q.ContentType = req.Header.Get("Content-Type")
	q.Size = size
	q.Endpoint = openai.Classify(req.Method, req.URL.Path)
	q.Body, q.Truncated = bounded(body, r.cfg.MaxBody, size)
	if len(body) == 0 {
		return e
	}
	mt, _, _ := mime.ParseMediaType(q.ContentType)
	switch {
	case mt == "multipart/form-data":
		mp, err := openai.ParseMultipart(q.ContentType, body, r.cfg.MaxBody)
		q.Multipart = &mp
		q.Body = "" // files are described, never kept
		setErr(&q.ParseError, err)
	case q.Endpoint != openai.Other || strings.Contains(mt, "json"):
		parsed, err := openai.ParseRequest(q.Endpoint, q.ContentType, body)
		q.Model, q.Stream, q.Messages, q.Prompt, q.Input, q.Tools = parsed.Model, parsed.Stream, parsed.Messages, parsed.Prompt, parsed.Input, parsed.Tools
		setErr(&q.ParseError, err)
	}
	// The pending copy Spool stores ships as it is after a crash: it
	// must fit the record limit too.
	fitRecord(&e.rec, r.cfg.MaxBody)
	return e
}

// Endpoint returns the API endpoint of the request.
func (e *Exchange) Endpoint() openai.Endpoint { return e.rec.Request.Endpoint }

// ID returns the record's ID.
func (e *Exchange) ID() string { return e.rec.ID }

// Spool stores the request's record durably before the request goes
// upstream, if the sink is a Journal. An error means the request is not on
// record; the caller decides whether it may go upstream all the same
// (then MarkUnspooled).
func (e *Exchange) Spool(ctx context.Context) error {
	j, ok := e.r.cfg.Sink.(Journal)
	if !ok {
		return nil
	}
	return j.Begin(ctx, &e.rec)
}

// FillWorkloadLater sets a function that the record asks, when it is
// finished, for a workload identity that was not resolved when the
// request began.
func (e *Exchange) FillWorkloadLater(f func() (audit.Workload, bool)) { e.late = f }

// MarkUnspooled flags a record whose request went upstream although Spool
// failed.
func (e *Exchange) MarkUnspooled(err error) {
	e.rec.Unspooled = true
	e.rec.Error = "not spooled before forwarding: " + err.Error()
}

// AddFindings adds what masking found; a masked request's decision
// becomes "mask".
func (e *Exchange) AddFindings(fs ...audit.Finding) {
	e.rec.Findings = append(e.rec.Findings, fs...)
	if len(fs) > 0 && e.rec.Decision.Action == "allow" {
		e.rec.Decision.Action = "mask"
	}
}

// Decided records the policy decision on the request: its version, the
// rule and its message. The action stays what happened to the body
// ("allow" or "mask") until Block.
func (e *Exchange) Decided(version, rule, message string) {
	e.rec.Decision.PolicyVersion, e.rec.Decision.Rule, e.rec.Decision.Message = version, rule, message
}

// Request returns the record's request: masked, as the record keeps it.
func (e *Exchange) Request() audit.Request { return e.rec.Request }

// Approval records the approval that held the request.
func (e *Exchange) Approval(a *audit.ApprovalRef) { e.rec.Decision.Approval = a }

// Block finishes a request that a rule blocked: nothing went upstream. A
// message given to Decided stays.
func (e *Exchange) Block(status int, rule string) {
	e.rec.Response = &audit.Response{Status: status}
	e.rec.Decision.Action, e.rec.Decision.Rule = "block", rule
	e.finish(false)
}

// Reject finishes a request that never went upstream (too large, bad).
func (e *Exchange) Reject(status int, reason string) {
	e.rec.Response = &audit.Response{Status: status}
	e.rec.Decision.Action = "reject"
	e.rec.Error = reason
	e.finish(false)
}

// Fail finishes an exchange whose upstream round trip failed before a
// response arrived.
func (e *Exchange) Fail(status int, err error) {
	e.rec.Response = &audit.Response{Status: status}
	e.rec.Error = err.Error()
	e.finish(true)
}

func (e *Exchange) finish(incomplete bool) {
	e.once.Do(func() {
		end := time.Now()
		e.rec.End = end.UTC()
		e.rec.DurationMS = ms(end.Sub(e.start))
		e.rec.Incomplete = incomplete
		if e.late != nil {
			if w, ok := e.late(); ok {
				e.rec.Workload = w
			}
		}
		fitRecord(&e.rec, e.r.cfg.MaxBody)
		// Records are written after the client has its answer; a slow sink
		// must not hold the request, but must not lose the record either.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.r.cfg.Sink.Write(ctx, &e.rec); err != nil {
			e.r.cfg.Logger.Error("audit record not stored", "id", e.rec.ID, "err", err)
		}
	})
}

func bounded(b []byte, limit int, size int64) (string, bool) {
	if len(b) > limit {
		return string(b[:limit]), true
	}
	return string(b), size > int64(len(b))
}

func setErr(dst *string, err error) {
	if err != nil {
		*dst = err.Error()
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
