package recorder

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"sync"
	"time"

	"github.com/promptrail/promptrail/agent/openai"
	"github.com/promptrail/promptrail/audit"
)

// Observe starts recording resp and replaces its body with one that
// records what passes through it. The record is finished when the body
// reaches its end (complete) or is closed before it (incomplete: the client
// went away, the upstream failed, or stalled for idle and was cancelled).
// cancel aborts the upstream request.
func (e *Exchange) Observe(resp *http.Response, idle time.Duration, cancel func()) {
	out := &audit.Response{Status: resp.StatusCode, ContentType: resp.Header.Get("Content-Type")}
	e.rec.Response = out
	mt, _, _ := mime.ParseMediaType(out.ContentType)
	o := &observer{e: e, body: resp.Body, out: out, idle: idle, cancel: cancel}
	if mt == "text/event-stream" {
		o.sse = openai.NewSSEParser(maxEventBytes)
		o.asm = openai.NewStreamAssembler(e.rec.Request.Endpoint, e.r.cfg.MaxEvents)
	}
	if idle > 0 {
		o.timer = time.AfterFunc(idle, o.stalled)
	}
	resp.Body = o
}

// maxEventBytes bounds one server-sent event as the recorder parses it; a
// larger one (an endless line, say) is skipped and the parse error noted.
const maxEventBytes = 4 << 20

type observer struct {
	e      *Exchange
	body   io.ReadCloser
	out    *audit.Response
	idle   time.Duration
	cancel func()
	timer  *time.Timer

	mu        sync.Mutex
	buf       []byte // the captured JSON (non-stream) body, bounded
	sse       *openai.SSEParser
	asm       *openai.StreamAssembler
	sseErr    error
	firstByte bool
	eof       bool
	isStalled bool
	readErr   error
}

func (o *observer) Read(p []byte) (int, error) {
	n, err := o.body.Read(p)
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.timer != nil {
		o.timer.Reset(o.idle)
	}
	if n > 0 {
		o.see(p[:n])
	}
	if errors.Is(err, io.EOF) {
		o.eof = true
	} else if err != nil && o.readErr == nil {
		o.readErr = err
	}
	return n, err
}

// see records a chunk of the body as it passes.
func (o *observer) see(chunk []byte) {
	o.out.Size += int64(len(chunk))
	if !o.firstByte {
		o.firstByte = true
		if o.sse == nil {
			o.e.rec.TTFTMS = ms(time.Since(o.e.start))
		}
	}
	if o.sse == nil {
		if room := o.e.r.cfg.MaxBody - len(o.buf); room > 0 {
			o.buf = append(o.buf, chunk[:min(room, len(chunk))]...)
		}
		return
	}
	err := o.sse.Feed(chunk, func(ev openai.Event) {
		had := o.asm.FirstContent()
		o.asm.Add(ev)
		if !had && o.asm.FirstContent() {
			o.e.rec.TTFTMS = ms(time.Since(o.e.start))
		}
	})
	if err != nil && o.sseErr == nil {
		o.sseErr = err
	}
}

func (o *observer) stalled() {
	o.mu.Lock()
	o.isStalled = true
	o.mu.Unlock()
	o.cancel()
}

// FindingsReporter is implemented by bodies that mask what passes through
// them (package proxy's masking readers); the record gets their findings.
type FindingsReporter interface {
	AuditFindings() []audit.Finding
}

// Close finishes the record.
func (o *observer) Close() error {
	err := o.body.Close()
	if fr, ok := o.body.(FindingsReporter); ok {
		o.e.AddFindings(fr.AuditFindings()...)
	}
	if o.timer != nil {
		o.timer.Stop()
	}
	o.mu.Lock()
	complete := o.eof && o.readErr == nil
	o.summarize()
	switch {
	case o.isStalled:
		o.e.rec.Error = "upstream stalled: no response bytes for " + o.idle.String()
	case o.readErr != nil:
		o.e.rec.Error = "response interrupted: " + o.readErr.Error()
	case !complete:
		o.e.rec.Error = "client went away before the response ended"
	}
	o.mu.Unlock()
	o.e.finish(!complete)
	return err
}

// summarize fills the record's response from what was observed.
func (o *observer) summarize() {
	var r openai.Response
	if o.sse != nil {
		o.sse.Flush(func(ev openai.Event) { o.asm.Add(ev) })
		r = o.asm.Result()
		o.out.Events = o.asm.Events()
		o.out.EventCount = len(o.out.Events) + o.asm.Dropped()
		o.out.Truncated = o.asm.Dropped() > 0
		if o.sseErr != nil {
			o.out.ParseError = o.sseErr.Error()
		}
	} else {
		var err error
		r, err = openai.ParseResponse(o.e.rec.Request.Endpoint, o.out.Status, o.out.ContentType, o.buf)
		o.out.Body, o.out.Truncated = bounded(o.buf, o.e.r.cfg.MaxBody, o.out.Size)
		if err != nil && o.e.rec.Request.Endpoint != openai.Other {
			o.out.ParseError = err.Error()
		}
	}
	o.out.ID, o.out.Model, o.out.Choices = r.ID, r.Model, r.Choices
	o.out.Usage, o.out.UsageSource, o.out.APIError, o.out.Embeddings = r.Usage, r.UsageSource, r.Error, r.Embeddings
	if len(r.Choices) > 0 {
		o.out.FinishReason = r.Choices[0].FinishReason
	}
}
