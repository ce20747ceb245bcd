package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/promptrail/promptrail/agent/intercept"
	"github.com/promptrail/promptrail/agent/mask"
	"github.com/promptrail/promptrail/agent/secrets"
	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/internal/fakeopenai"
)

// testAWSKey is shaped like an AWS access key id, not one.
const testAWSKey = "AKIAQYLPMN5HFIQR7BDW"

// encode applies the content codings cs, in order, to b.
func encode(t *testing.T, b []byte, cs ...string) []byte {
	t.Helper()
	for _, c := range cs {
		var err error
		if b, err = fakeopenai.Encode(c, b); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// maskFixture is a decrypting proxy that masks with the default rules.
func maskFixture(t *testing.T, mutate func(*DecryptConfig)) *decryptFixture {
	t.Helper()
	return newDecryptFixture(t, func(dc *DecryptConfig, _ *Config) {
		dc.Masker = testMasker(t)
		if mutate != nil {
			mutate(dc)
		}
	})
}

// upstreamRequest returns the request the fake upstream saw whose body or
// query contains tag.
func (f *decryptFixture) upstreamRequest(t *testing.T, tag string) fakeopenai.Request {
	t.Helper()
	for _, r := range f.fake.Server.Requests() {
		if strings.Contains(string(r.Body), tag) || strings.Contains(r.RawQuery, tag) {
			return r
		}
	}
	t.Fatalf("the upstream saw no request tagged %q", tag)
	return fakeopenai.Request{}
}

// send sends req through the proxy and returns the status and body.
func (f *decryptFixture) send(t *testing.T, req *http.Request) (int, http.Header, []byte) {
	t.Helper()
	resp, err := f.client(true).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// checkMasked fails if b holds the secret or lacks the rule's marker.
func checkMasked(t *testing.T, what string, b []byte, secret, rule string) {
	t.Helper()
	if bytes.Contains(b, []byte(secret)) || !bytes.Contains(b, []byte("[MASKED:"+rule+":")) {
		t.Errorf("%s: want %s masked by %s, got %s", what, secret, rule, b)
	}
}

func hasFinding(r *audit.Record, where, rule, pathPrefix string) bool {
	for _, f := range r.Findings {
		if f.Where == where && f.Rule == rule && strings.HasPrefix(f.Path, pathPrefix) {
			return true
		}
	}
	return false
}

func TestCompressedRequestsAreDecodedMaskedAndForwardedDecoded(t *testing.T) {
	f := maskFixture(t, nil)
	for _, cs := range [][]string{{"gzip"}, {"deflate"}, {"deflate-raw"}, {"br"}, {"zstd"}, {"gzip", "br"}} {
		name := strings.Join(cs, "+")
		t.Run(name, func(t *testing.T) {
			tag := "tag-" + name
			body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + tag + ` key ` + testAWSKey + `"}]}`
			req := chatRequest(t, false, nil)
			req.Body = io.NopCloser(bytes.NewReader(encode(t, []byte(body), cs...)))
			req.ContentLength = -1
			req.Header.Set("Content-Encoding", strings.ReplaceAll(strings.Join(cs, ", "), "deflate-raw", "deflate"))
			if status, _, b := f.send(t, req); status != 200 {
				t.Fatalf("status %d: %s", status, b)
			}
			up := f.upstreamRequest(t, tag)
			checkMasked(t, "upstream body", up.Body, testAWSKey, "aws-access-token")
			if up.Header.Get("Content-Encoding") != "" {
				t.Errorf("upstream got Content-Encoding %q with a decoded body", up.Header.Get("Content-Encoding"))
			}
			r := f.sink.wait(t, name, func(r *audit.Record) bool { return strings.Contains(r.Request.Body, tag) })
			checkMasked(t, "record", []byte(r.Request.Body), testAWSKey, "aws-access-token")
			if !hasFinding(r, "request", "aws-access-token", "$.messages[0].content") {
				t.Errorf("findings %+v", r.Findings)
			}
		})
	}
}

func TestACodingWithoutABodyIsNoError(t *testing.T) {
	f := maskFixture(t, nil)
	req, _ := http.NewRequest("GET", "https://api.openai.com/v1/models?tag=nobody", nil)
	req.Header.Set("Content-Encoding", "gzip")
	if status, _, b := f.send(t, req); status != 200 {
		t.Fatalf("status %d: %s", status, b)
	}
	if up := f.upstreamRequest(t, "tag=nobody"); up.Header.Get("Content-Encoding") != "" {
		t.Errorf("upstream got Content-Encoding %q", up.Header.Get("Content-Encoding"))
	}
}

func TestUndecodableRequestsAreRefused(t *testing.T) {
	f := maskFixture(t, func(dc *DecryptConfig) { dc.MaxRequestBody = 1 << 20 })
	zeros := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + strings.Repeat("0", 64<<20) + `"}]}`
	for _, tt := range []struct {
		name, coding string
		body         []byte
		status       int
		code         string
	}{
		{"unknown coding", "compress", []byte("whatever " + testAWSKey), 415, "promptrail_unsupported_encoding"},
		{"not gzip", "gzip", []byte("plain " + testAWSKey), 400, "promptrail_bad_encoding"},
		{"truncated zstd", "zstd", encode(t, []byte("abc "+testAWSKey), "zstd")[:12], 400, "promptrail_bad_encoding"},
		{"bomb: 64 MiB in a small gzip", "gzip", encode(t, []byte(zeros), "gzip"), 413, "promptrail_request_too_large"},
		{"bomb in zstd", "zstd", encode(t, []byte(zeros), "zstd"), 413, "promptrail_request_too_large"},
		{"multipart part in an unknown transfer encoding", "", []byte("--b\r\nContent-Disposition: form-data; name=\"x\"\r\n" +
			"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 " + testAWSKey + "\r\n--b--\r\n"), 400, "promptrail_bad_encoding"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(f.fake.Server.Requests())
			req := chatRequest(t, false, map[string]string{"Content-Encoding": tt.coding, "X-Case": tt.name})
			if tt.coding == "" {
				req.Header.Set("Content-Type", "multipart/form-data; boundary=b")
			}
			req.Body = io.NopCloser(bytes.NewReader(tt.body))
			req.ContentLength = int64(len(tt.body))
			status, _, b := f.send(t, req)
			if status != tt.status || !strings.Contains(string(b), tt.code) {
				t.Fatalf("got %d %s, want %d %s", status, b, tt.status, tt.code)
			}
			if len(f.fake.Server.Requests()) != before {
				t.Fatal("an undecodable request reached the upstream")
			}
			r := f.sink.wait(t, tt.name, func(r *audit.Record) bool {
				return r.Response != nil && r.Response.Status == tt.status && r.Decision.Action == "reject"
			})
			if strings.Contains(r.Request.Body, testAWSKey) || r.Error == "" {
				t.Errorf("record: body %q error %q", r.Request.Body, r.Error)
			}
		})
	}
}

func TestResponsesInAnyEncodingReachTheClientMasked(t *testing.T) {
	f := maskFixture(t, nil)
	for _, coding := range []string{"gzip", "deflate", "deflate-raw", "br", "zstd"} {
		for _, stream := range []bool{false, true} {
			name := coding
			if stream {
				name += "-stream"
			}
			t.Run(name, func(t *testing.T) {
				reply := "Use " + testToken + " to push " + name + "."
				req := chatRequest(t, stream, map[string]string{"X-Fake-Content-Encoding": coding, "X-Fake-Reply": reply,
					"Accept-Encoding": "zstd, br, gzip, deflate", "X-Case": name})
				status, h, b := f.send(t, req)
				if status != 200 {
					t.Fatalf("status %d: %s", status, b)
				}
				if h.Get("Content-Encoding") != "" {
					t.Errorf("client got Content-Encoding %q; the proxy sends what it masked, decoded", h.Get("Content-Encoding"))
				}
				checkMasked(t, "client", b, testToken, "github-pat")
				if !stream && !bytes.Contains(b, []byte("to push "+name+".")) {
					t.Errorf("the text around the secret is gone: %s", b)
				}
				r := f.sink.wait(t, name, func(r *audit.Record) bool {
					return r.Request.Stream == stream && r.Response != nil && hasFinding(r, "response", "github-pat", "") &&
						len(r.Response.Choices) > 0 && strings.HasSuffix(r.Response.Choices[0].Content, "to push "+name+".")
				})
				raw, _ := json.Marshal(r)
				if bytes.Contains(raw, []byte(testToken)) {
					t.Errorf("the record holds the secret")
				}
			})
		}
	}
}

func TestQueryStringsKeysAndMultipartAreMasked(t *testing.T) {
	f := maskFixture(t, nil)
	t.Run("query string", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "https://api.openai.com/v1/models?tag=q1&api_key="+testAWSKey+"&"+testToken+"=1", nil)
		req.Header.Set("Authorization", "Bearer sk-test")
		if status, _, b := f.send(t, req); status != 200 {
			t.Fatalf("status %d: %s", status, b)
		}
		up := f.upstreamRequest(t, "tag=q1")
		if strings.Contains(up.RawQuery, testAWSKey) || strings.Contains(up.RawQuery, testToken) ||
			!strings.Contains(up.RawQuery, "tag=q1&api_key=%5BMASKED%3Aaws-access-token%3A") {
			t.Errorf("upstream query %q", up.RawQuery)
		}
		r := f.sink.wait(t, "query", func(r *audit.Record) bool { return strings.Contains(r.Request.Path, "tag=q1") })
		if strings.Contains(r.Request.Path, testAWSKey) || strings.Contains(r.Request.Path, testToken) ||
			!hasFinding(r, "request", "aws-access-token", "?api_key") || !hasFinding(r, "request", "github-pat", "?[MASKED:") {
			t.Errorf("record path %q findings %+v", r.Request.Path, r.Findings)
		}
	})
	t.Run("JSON object key", func(t *testing.T) {
		req := chatRequest(t, false, nil)
		body := `{"model":"gpt-4o-mini","metadata":{"` + testAWSKey + `":"tag-key"},"messages":[{"role":"user","content":"hi"}]}`
		req.Body, req.ContentLength = io.NopCloser(strings.NewReader(body)), int64(len(body))
		if status, _, b := f.send(t, req); status != 200 {
			t.Fatalf("status %d: %s", status, b)
		}
		checkMasked(t, "upstream body", f.upstreamRequest(t, "tag-key").Body, testAWSKey, "aws-access-token")
		r := f.sink.wait(t, "key", func(r *audit.Record) bool { return strings.Contains(r.Request.Body, "tag-key") })
		checkMasked(t, "record", []byte(r.Request.Body), testAWSKey, "aws-access-token")
	})
	t.Run("JSON array with escapes, typed as text", func(t *testing.T) {
		escaped := `\u0041` + testAWSKey[1:] // AKIA… with its A escaped
		body := `["tag-array", "key ` + escaped + `"]`
		req, _ := http.NewRequest("POST", "https://api.openai.com/v1/batch-notes", strings.NewReader(body))
		req.Header.Set("Content-Type", "text/plain")
		f.send(t, req)
		up := f.upstreamRequest(t, "tag-array")
		if bytes.Contains(up.Body, []byte(testAWSKey[1:])) || !bytes.Contains(up.Body, []byte("[MASKED:aws-access-token:")) {
			t.Errorf("upstream body %s", up.Body)
		}
	})
	t.Run("form body", func(t *testing.T) {
		body := "tag=form1&note=" + url.QueryEscape("push with "+testToken+" +/") + "&n=1"
		req, _ := http.NewRequest("POST", "https://api.openai.com/v1/forms", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		f.send(t, req) // the fake answers 404; what it received is the point
		up := f.upstreamRequest(t, "tag=form1")
		form, err := url.ParseQuery(string(up.Body))
		if err != nil || strings.Contains(string(up.Body), testToken) ||
			!strings.HasPrefix(form.Get("note"), "push with [MASKED:github-pat:") || form.Get("n") != "1" {
			t.Errorf("upstream form %q (%v)", up.Body, err)
		}
		r := f.sink.wait(t, "form", func(r *audit.Record) bool { return r.Request.Path == "/v1/forms" })
		if !hasFinding(r, "request", "github-pat", "form:note") {
			t.Errorf("findings %+v", r.Findings)
		}
	})
	t.Run("multipart fields and text files", func(t *testing.T) {
		binary := append([]byte{0xff, 0xfe, 0x00}, testAWSKey...) // not text: passed as sent
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		mw.WriteField("purpose", "tag-mp "+testAWSKey)
		fw, _ := mw.CreateFormFile("file", "notes.jsonl")
		fw.Write([]byte(`{"prompt":"push with ` + testToken + `"}` + "\n"))
		h := make(map[string][]string)
		h["Content-Disposition"] = []string{`form-data; name="image"; filename="x.bin"`}
		h["Content-Type"] = []string{"image/png"}
		pw, _ := mw.CreatePart(h)
		pw.Write(binary)
		pw, _ = mw.CreatePart(map[string][]string{"Content-Disposition": {`form-data; name="b64"`}, "Content-Transfer-Encoding": {"base64"}})
		pw.Write([]byte(base64.StdEncoding.EncodeToString([]byte("hidden " + testAWSKey))))
		pw, _ = mw.CreatePart(map[string][]string{"Content-Disposition": {`form-data; name="qp"`}, "Content-Transfer-Encoding": {"quoted-printable"}})
		pw.Write([]byte("quoted=20" + testToken[:10] + "=\r\n" + testToken[10:]))
		mw.Close()
		req, _ := http.NewRequest("POST", "https://api.openai.com/v1/files", bytes.NewReader(buf.Bytes()))
		req.Header.Set("Content-Type", mw.FormDataContentType())
		req.Header.Set("Authorization", "Bearer sk-test")
		f.send(t, req) // the fake answers 404 for /v1/files; what it received is the point
		up := f.upstreamRequest(t, "tag-mp")
		_, params, _ := mime.ParseMediaType(up.Header.Get("Content-Type"))
		mr := multipart.NewReader(bytes.NewReader(up.Body), params["boundary"])
		parts := map[string][]byte{}
		for {
			p, err := mr.NextPart()
			if err != nil {
				break
			}
			parts[p.FormName()], _ = io.ReadAll(p)
		}
		checkMasked(t, "field", parts["purpose"], testAWSKey, "aws-access-token")
		checkMasked(t, "base64 field", parts["b64"], testAWSKey, "aws-access-token")
		checkMasked(t, "quoted-printable field", parts["qp"], testToken, "github-pat")
		checkMasked(t, "text file", parts["file"], testToken, "github-pat")
		if !bytes.Equal(parts["image"], binary) {
			t.Errorf("binary file changed: %q", parts["image"])
		}
		r := f.sink.wait(t, "multipart", func(r *audit.Record) bool { return r.Request.Path == "/v1/files" })
		if !hasFinding(r, "request", "aws-access-token", "multipart:purpose") || !hasFinding(r, "request", "github-pat", "multipart:file:notes.jsonl") {
			t.Errorf("findings %+v", r.Findings)
		}
	})
}

func TestCommandLineIsMaskedInTheRecord(t *testing.T) {
	cmdline := "curl -H Authorization: Bearer " + testToken + " https://api.openai.com/v1/chat/completions"
	f := maskFixture(t, func(dc *DecryptConfig) {
		dc.Identify = func(_ context.Context, o intercept.Origin) audit.Workload {
			return audit.Workload{Kind: "process", PID: o.TGID, Comm: "curl", Cmdline: cmdline}
		}
	})
	if status, _, b := f.send(t, chatRequest(t, false, nil)); status != 200 {
		t.Fatalf("status %d: %s", status, b)
	}
	r := f.sink.wait(t, "exchange", func(r *audit.Record) bool { return r.Workload.Comm == "curl" })
	checkMasked(t, "cmdline", []byte(r.Workload.Cmdline), testToken, "authorization-header")
	if !strings.HasPrefix(r.Workload.Cmdline, "curl -H Authorization: Bearer [MASKED:") || !hasFinding(r, "workload", "authorization-header", "cmdline") {
		t.Errorf("cmdline %q findings %+v", r.Workload.Cmdline, r.Findings)
	}
}

func TestABlockingSecretInTheQueryStopsTheRequest(t *testing.T) {
	eng, err := secrets.NewEngine(secrets.Config{Actions: map[string]secrets.Action{"github-pat": secrets.ActionBlock}})
	if err != nil {
		t.Fatal(err)
	}
	f := maskFixture(t, func(dc *DecryptConfig) { dc.Masker = mask.New(eng, mask.Key(strings.Repeat("k", 32))) })
	before := len(f.fake.Server.Requests())
	req, _ := http.NewRequest("GET", "https://api.openai.com/v1/models?token="+testToken, nil)
	if status, _, b := f.send(t, req); status != 403 || !strings.Contains(string(b), "promptrail_blocked") {
		t.Fatalf("got %d %s, want 403 promptrail_blocked", status, b)
	}
	if len(f.fake.Server.Requests()) != before {
		t.Fatal("a blocked request reached the upstream")
	}
	r := f.sink.wait(t, "blocked", func(r *audit.Record) bool { return r.Decision.Action == "block" })
	if r.Decision.Rule != "github-pat" || strings.Contains(r.Request.Path, testToken) {
		t.Errorf("record: decision %+v path %q", r.Decision, r.Request.Path)
	}
}

func TestEncodedStreamsStayLive(t *testing.T) {
	f := maskFixture(t, nil)
	for _, coding := range []string{"gzip", "deflate", "br", "zstd"} {
		t.Run(coding, func(t *testing.T) {
			// The upstream sends two events, flushed through its encoder,
			// then nothing: they reach the client only if the proxy decodes
			// and masks as the bytes arrive.
			ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
			defer cancel()
			req := chatRequest(t, true, map[string]string{"X-Fake-Content-Encoding": coding, "X-Fake-Stall": "2"}).WithContext(ctx)
			resp, err := f.client(true).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			for i := 0; i < 2; {
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("event %d: %v", i+1, err)
				}
				if strings.HasPrefix(line, "data: ") {
					i++
				}
			}
		})
	}
}
