package proxy

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/promptrail/promptrail/agent/mask"
	"github.com/promptrail/promptrail/agent/openai"
	"github.com/promptrail/promptrail/agent/secrets"
	"github.com/promptrail/promptrail/audit"
)

// maskRequest masks the secrets in a request body before it is forwarded
// and returns the masked body and what was found. A body with a part it
// cannot decode to mask (a multipart part in an unknown transfer encoding,
// or malformed base64) is an error: it must not be forwarded.
func maskRequest(m *mask.Masker, r *http.Request, body []byte) ([]byte, []audit.Finding, error) {
	if len(body) == 0 {
		return body, nil, nil
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var (
		masked []byte
		fs     []mask.Finding
	)
	switch {
	case mt == "multipart/form-data":
		var err error
		if masked, fs, err = maskMultipart(m, r.Header.Get("Content-Type"), body); err != nil {
			return nil, nil, err
		}
	case mt == "application/x-www-form-urlencoded":
		var form string
		form, fs = maskFormPairs(m, string(body), "form:")
		masked = []byte(form)
	case mt == "application/json" || strings.HasSuffix(mt, "+json") || looksJSON(body):
		// Invalid JSON comes back masked as text.
		masked, fs, _ = m.JSON("request", body)
	default:
		masked, fs = m.Text("request", "", body)
	}
	return masked, auditFindings(fs), nil
}

// looksJSON reports whether body starts like a JSON object or array, so
// that it is masked on its decoded strings whatever its type says (a
// secret written with \u escapes is then found).
func looksJSON(body []byte) bool {
	b := bytes.TrimSpace(body)
	return len(b) > 0 && (b[0] == '{' || b[0] == '[')
}

// blockingRule returns the rule of the first finding whose action blocks
// the request, or "".
func blockingRule(fs []audit.Finding) string {
	for _, f := range fs {
		if f.Action == string(secrets.ActionBlock) {
			return f.Rule
		}
	}
	return ""
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

// maskQuery masks u's query string (see maskFormPairs; paths "?name").
func maskQuery(m *mask.Masker, u *url.URL) []audit.Finding {
	q, fs := maskFormPairs(m, u.RawQuery, "?")
	if len(fs) == 0 {
		return nil
	}
	u.RawQuery, u.ForceQuery = q, false
	return auditFindings(fs)
}

// maskFormPairs masks the names and values of URL-encoded name=value
// pairs (a query string, a form body) on their decoded form, rewriting
// only the pairs in which something was found. A finding's path is prefix
// and the name, masked.
func maskFormPairs(m *mask.Masker, raw, prefix string) (string, []mask.Finding) {
	if raw == "" {
		return raw, nil
	}
	pairs := strings.Split(raw, "&")
	var all []mask.Finding
	for i, p := range pairs {
		rawK, rawV, hasV := strings.Cut(p, "=")
		k, errK := url.QueryUnescape(rawK)
		v, errV := url.QueryUnescape(rawV)
		if errK != nil || errV != nil {
			// Not valid escapes: mask what is there as it is.
			k, v = rawK, rawV
		}
		mk, kfs := m.Text("request", "", []byte(k))
		path := prefix + string(mk)
		mv, vfs := m.Text("request", path, []byte(v))
		if len(kfs)+len(vfs) == 0 {
			continue
		}
		for j := range kfs {
			kfs[j].Path = path
		}
		all = append(append(all, kfs...), vfs...)
		pairs[i] = url.QueryEscape(string(mk))
		if hasV {
			pairs[i] += "=" + url.QueryEscape(string(mv))
		}
	}
	if len(all) == 0 {
		return raw, nil
	}
	return strings.Join(pairs, "&"), all
}

// maskMultipart masks the text parts of a multipart/form-data body: every
// field, and every file whose content is text (a text, JSON, XML or YAML
// type, or no type and valid UTF-8); binary files are passed as sent. The
// body is rebuilt with the same boundary and part headers only when
// something was masked. A body that does not parse is masked whole as
// text: nothing goes upstream unexamined; a part that cannot be decoded
// from its transfer encoding is an error.
func maskMultipart(m *mask.Masker, contentType string, body []byte) ([]byte, []mask.Finding, error) {
	_, params, _ := mime.ParseMediaType(contentType)
	boundary := params["boundary"]
	if boundary == "" {
		masked, fs := m.Text("request", "", body)
		return masked, fs, nil
	}
	type part struct {
		header  textproto.MIMEHeader
		content []byte
	}
	var (
		parts   []part
		fs      []mask.Finding
		changed bool
	)
	r := multipart.NewReader(bytes.NewReader(body), boundary)
	for {
		p, err := r.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			masked, fs := m.Text("request", "", body)
			return masked, fs, nil
		}
		content, err := io.ReadAll(p)
		if err != nil {
			masked, fs := m.Text("request", "", body)
			return masked, fs, nil
		}
		plain, encoded, err := transferDecoded(p.Header, content)
		if err != nil {
			return nil, nil, fmt.Errorf("multipart part %q: %w", p.FormName(), err)
		}
		if textPart(p.Header, plain) {
			path := "multipart:" + p.FormName()
			if fn := p.FileName(); fn != "" {
				path += ":" + fn
			}
			var pfs []mask.Finding
			ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
			if ct == "application/json" {
				plain, pfs, _ = m.JSON("request", plain)
				for i := range pfs {
					pfs[i].Path = path + strings.TrimPrefix(pfs[i].Path, "$")
				}
			} else {
				plain, pfs = m.Text("request", path, plain)
			}
			if len(pfs) > 0 {
				// A masked part goes as it was decoded, without its
				// transfer encoding.
				changed, content = true, plain
				if encoded {
					p.Header.Del("Content-Transfer-Encoding")
				}
			}
			fs = append(fs, pfs...)
		}
		parts = append(parts, part{p.Header, content})
	}
	if len(parts) == 0 {
		masked, fs := m.Text("request", "", body)
		return masked, fs, nil
	}
	if !changed {
		return body, nil, nil
	}
	var out bytes.Buffer
	for _, p := range parts {
		out.WriteString("--" + boundary + "\r\n")
		keys := make([]string, 0, len(p.header))
		for k := range p.header {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			for _, v := range p.header[k] {
				out.WriteString(k + ": " + v + "\r\n")
			}
		}
		out.WriteString("\r\n")
		out.Write(p.content)
		out.WriteString("\r\n")
	}
	out.WriteString("--" + boundary + "--\r\n")
	return out.Bytes(), fs, nil
}

// transferDecoded returns a part's content decoded from its
// Content-Transfer-Encoding (RFC 2045: base64, quoted-printable), and
// whether it was encoded. RFC 7578 deprecates the header for form data,
// but a client may still send it, and a secret in base64 would pass
// unseen. An unknown encoding is an error.
func transferDecoded(h textproto.MIMEHeader, content []byte) ([]byte, bool, error) {
	switch cte := strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))); cte {
	case "", "7bit", "8bit", "binary":
		return content, false, nil
	case "base64":
		out := make([]byte, base64.StdEncoding.DecodedLen(len(content)))
		n, err := base64.StdEncoding.Decode(out, content) // ignores line breaks
		if err != nil {
			return nil, true, fmt.Errorf("base64 content: %w", err)
		}
		return out[:n], true, nil
	case "quoted-printable":
		out, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(content)))
		if err != nil {
			return nil, true, fmt.Errorf("quoted-printable content: %w", err)
		}
		return out, true, nil
	default:
		return nil, false, fmt.Errorf("unknown Content-Transfer-Encoding %q", cte)
	}
}

// textPart reports whether a part is text that masking applies to: a
// field, or a file of a textual type, or of no type and valid UTF-8.
func textPart(h textproto.MIMEHeader, content []byte) bool {
	_, params, err := mime.ParseMediaType(h.Get("Content-Disposition"))
	if _, isFile := params["filename"]; err != nil || !isFile {
		return true
	}
	ct, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	switch {
	case err != nil || ct == "" || ct == "application/octet-stream":
		return utf8.Valid(content)
	case strings.HasPrefix(ct, "text/"), strings.HasSuffix(ct, "+json"), strings.HasSuffix(ct, "+xml"),
		ct == "application/json", ct == "application/x-ndjson", ct == "application/jsonl",
		ct == "application/xml", ct == "application/yaml", ct == "application/x-yaml", ct == "application/javascript":
		return true
	}
	return false
}
