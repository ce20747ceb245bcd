package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

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
		masked, fs = maskMultipart(m, r.Header.Get("Content-Type"), body)
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

// maskResponse replaces resp.Body with a masked one: JSON bodies are read
// whole (bounded) and masked; event streams are masked as they flow.
func maskResponse(m *mask.Masker, resp *http.Response, ep openai.Endpoint, limit int64) error {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "text/event-stream" {
		resp.Body = newMaskedSSE(resp.Body, ep, m)
		return nil
	}
	return maskWhole(m, resp, mt, limit)
}

// maskWhole masks a non-stream body: JSON on its decoded strings when it
// fits in limit, else (and for other types) as text through a stream
// masker, so an arbitrarily large body is still never passed unmasked.
func maskWhole(m *mask.Masker, resp *http.Response, mt string, limit int64) error {
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fmt.Errorf("reading the response to mask it: %w", err)
	}
	if int64(len(b)) > limit || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		resp.Body = newMaskedText(m, io.MultiReader(bytes.NewReader(b), resp.Body), resp.Body)
		resp.ContentLength = -1
		resp.Header.Del("Content-Length")
		return nil
	}
	resp.Body.Close()
	masked, fs, _ := m.JSON("response", b) // invalid JSON comes back masked as text
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

// maskQuery masks the names and values of u's query string on their
// decoded form, rewriting only the pairs in which something was found, and
// returns the findings (path "?name", the name masked).
func maskQuery(m *mask.Masker, u *url.URL) []audit.Finding {
	if u.RawQuery == "" {
		return nil
	}
	pairs := strings.Split(u.RawQuery, "&")
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
		path := "?" + string(mk)
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
		return nil
	}
	u.RawQuery = strings.Join(pairs, "&")
	u.ForceQuery = false
	return auditFindings(all)
}

// maskMultipart masks the text parts of a multipart/form-data body: every
// field, and every file whose content is text (a text, JSON, XML or YAML
// type, or no type and valid UTF-8); binary files are passed as sent. The
// body is rebuilt with the same boundary and part headers only when
// something was masked. A body that does not parse is masked whole as
// text: nothing goes upstream unexamined.
func maskMultipart(m *mask.Masker, contentType string, body []byte) ([]byte, []mask.Finding) {
	_, params, _ := mime.ParseMediaType(contentType)
	boundary := params["boundary"]
	if boundary == "" {
		return m.Text("request", "", body)
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
			return m.Text("request", "", body)
		}
		content, err := io.ReadAll(p)
		if err != nil {
			return m.Text("request", "", body)
		}
		if textPart(p.Header, content) {
			path := "multipart:" + p.FormName()
			if fn := p.FileName(); fn != "" {
				path += ":" + fn
			}
			var pfs []mask.Finding
			ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
			if ct == "application/json" {
				content, pfs, _ = m.JSON("request", content)
				for i := range pfs {
					pfs[i].Path = path + strings.TrimPrefix(pfs[i].Path, "$")
				}
			} else {
				content, pfs = m.Text("request", path, content)
			}
			changed = changed || len(pfs) > 0
			fs = append(fs, pfs...)
		}
		parts = append(parts, part{p.Header, content})
	}
	if len(parts) == 0 {
		return m.Text("request", "", body)
	}
	if !changed {
		return body, nil
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
	return out.Bytes(), fs
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
