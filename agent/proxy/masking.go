package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/promptrail/promptrail/agent/mask"
	"github.com/promptrail/promptrail/agent/openai"
	"github.com/promptrail/promptrail/agent/secrets"
	"github.com/promptrail/promptrail/audit"
)

// maskRequest masks the secrets in a request body before it is forwarded
// and returns the masked body, what was found and, when a finding's rule
// blocks, that rule.
func maskRequest(m *mask.Masker, r *http.Request, body []byte) ([]byte, []audit.Finding, string) {
	if len(body) == 0 {
		return body, nil, ""
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var (
		masked []byte
		fs     []mask.Finding
	)
	switch {
	case mt == "multipart/form-data":
		// Uploads are recorded as metadata only; their text fields and
		// files go upstream as sent. Documented limitation.
		return body, nil, ""
	case mt == "application/json" || bytes.HasPrefix(bytes.TrimSpace(body), []byte("{")):
		// Invalid JSON comes back masked as text.
		masked, fs, _ = m.JSON("request", body)
	default:
		masked, fs = m.Text("request", "", body)
	}
	out := auditFindings(fs)
	for _, f := range out {
		if f.Action == string(secrets.ActionBlock) {
			return masked, out, f.Rule
		}
	}
	return masked, out, ""
}

func auditFindings(fs []mask.Finding) []audit.Finding {
	out := make([]audit.Finding, 0, len(fs))
	for _, f := range fs {
		out = append(out, audit.Finding{Rule: f.Rule, Where: f.Where, Path: f.Path, Count: f.Count,
			Fingerprint: f.Fingerprint, Action: string(f.Action)})
	}
	return out
}

// wholeBudget bounds a response body masked whole: its size, the
// in-flight bytes it holds, the time its masking takes.
type wholeBudget struct {
	limit       int64
	mem         *memHold
	maskTimeout time.Duration
}

// maskResponse replaces resp.Body with a masked one: JSON bodies are read
// whole (bounded) and masked; event streams are masked as they flow.
func maskResponse(m *mask.Masker, resp *http.Response, ep openai.Endpoint, wb wholeBudget) error {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "text/event-stream" {
		resp.Body = newMaskedSSE(resp.Body, ep, m)
		return nil
	}
	return maskWhole(m, resp, mt, wb)
}

// maskWhole masks a non-stream body: JSON on its decoded strings when it
// fits in the limit, else (and for other types) as text through a stream
// masker, so an arbitrarily large body is still never passed unmasked.
func maskWhole(m *mask.Masker, resp *http.Response, mt string, wb wholeBudget) error {
	ctx := resp.Request.Context()
	b, err := readBody(ctx, resp.Body, wb.mem, resp.ContentLength, wb.limit)
	// No room in the budget to hold it whole: masked as text as it flows,
	// as a body over the limit is.
	noRoom := isMemBudget(err)
	if err != nil && !noRoom {
		return fmt.Errorf("reading the response to mask it: %w", err)
	}
	if noRoom || int64(len(b)) > wb.limit || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		resp.Body = newMaskedText(m, io.MultiReader(bytes.NewReader(b), resp.Body), resp.Body)
		resp.ContentLength = -1
		resp.Header.Del("Content-Length")
		return nil
	}
	resp.Body.Close()
	ctx, cancel := context.WithTimeout(ctx, wb.maskTimeout)
	defer cancel()
	bm, stopped := m.Bounded(ctx)
	masked, fs, _ := bm.JSON("response", b) // invalid JSON comes back masked as text
	if err := stopped(); err != nil {
		return fmt.Errorf("%w (%w)", errMaskBudget(wb.maskTimeout, "response"), err)
	}
	resp.Body = &maskedBody{Reader: bytes.NewReader(masked), findings: auditFindings(fs)}
	resp.ContentLength = int64(len(masked))
	resp.Header.Set("Content-Length", strconv.Itoa(len(masked)))
	return nil
}

// maskedBody is a body masked whole.
type maskedBody struct {
	*bytes.Reader
	findings []audit.Finding
}

func (b *maskedBody) Close() error                   { return nil }
func (b *maskedBody) AuditFindings() []audit.Finding { return b.findings }

// maskedText masks a body as one text stream.
type maskedText struct {
	src    io.Reader
	closer io.Closer
	st     *mask.Stream
	buf    []byte
	out    []byte
	done   bool
}

func newMaskedText(m *mask.Masker, src io.Reader, closer io.Closer) *maskedText {
	return &maskedText{src: src, closer: closer, st: m.NewStream("response", ""), buf: make([]byte, 32<<10)}
}

func (t *maskedText) Read(p []byte) (int, error) {
	for len(t.out) == 0 && !t.done {
		n, err := t.src.Read(t.buf)
		t.out = append(t.out, t.st.Write(t.buf[:n])...)
		if errors.Is(err, io.EOF) {
			t.out = append(t.out, t.st.Close()...)
			t.done = true
		} else if err != nil {
			t.st.Abort()
			return 0, err
		}
	}
	if len(t.out) == 0 {
		return 0, io.EOF
	}
	n := copy(p, t.out)
	t.out = t.out[n:]
	return n, nil
}

func (t *maskedText) Close() error {
	if !t.done {
		t.st.Abort()
	}
	return t.closer.Close()
}

func (t *maskedText) AuditFindings() []audit.Finding { return auditFindings(t.st.Findings()) }
