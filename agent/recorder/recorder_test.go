package recorder

import (
	"bytes"
	"context"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/promptrail/promptrail/audit"
)

type sliceSink struct {
	mu   sync.Mutex
	recs []audit.Record
}

func (s *sliceSink) Write(_ context.Context, r *audit.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, *r)
	return nil
}

func newRecorder(t *testing.T, maxBody int) (*Recorder, *sliceSink) {
	t.Helper()
	sink := &sliceSink{}
	r, err := New(Config{Sink: sink, MaxBody: maxBody})
	if err != nil {
		t.Fatal(err)
	}
	return r, sink
}

// exchange runs one request/response through a Recorder; readAll says
// whether the response body is read to its end before it is closed.
func exchange(t *testing.T, r *Recorder, req *http.Request, body []byte, status int, ctype, respBody string, readAll bool) audit.Record {
	t.Helper()
	ex := r.Begin(req, body, int64(len(body)), audit.Connection{Mode: "transparent"}, audit.Workload{Kind: "process", PID: 7})
	resp := &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {ctype}}, Body: io.NopCloser(strings.NewReader(respBody))}
	ex.Observe(resp, 0, func() {})
	if readAll {
		io.Copy(io.Discard, resp.Body)
	} else {
		resp.Body.Read(make([]byte, 10))
	}
	resp.Body.Close()
	return r.cfg.Sink.(*sliceSink).recs[len(r.cfg.Sink.(*sliceSink).recs)-1]
}

func TestRecordsOfEachKind(t *testing.T) {
	rec, _ := newRecorder(t, 64)
	chatBody := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}`)
	stream := "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n" +
		"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n" +
		"data: [DONE]\n\n"

	t.Run("streamed chat, read to the end", func(t *testing.T) {
		req := httptest.NewRequest("POST", "https://api.openai.com/v1/chat/completions", nil)
		r := exchange(t, rec, req, chatBody, 200, "text/event-stream", stream, true)
		if r.Incomplete || r.Response.Choices[0].Content != "Hello" || r.Response.UsageSource != "none" || r.Response.EventCount != 3 {
			t.Errorf("record: incomplete %v response %+v", r.Incomplete, r.Response)
		}
		// The parsed prompt ("hi") counts toward the 64 bytes first.
		if !r.Request.Truncated || len(r.Request.Body) != 62 || r.Request.Model != "gpt-4o-mini" {
			t.Errorf("request body of %d bytes kept %d (truncated %v), model %q", len(chatBody), len(r.Request.Body), r.Request.Truncated, r.Request.Model)
		}
		if r.TTFTMS <= 0 {
			t.Error("no time to first token")
		}
	})
	t.Run("client leaves early", func(t *testing.T) {
		req := httptest.NewRequest("POST", "https://api.openai.com/v1/chat/completions", nil)
		r := exchange(t, rec, req, chatBody, 200, "text/event-stream", stream, false)
		if !r.Incomplete || r.Error == "" {
			t.Errorf("an abandoned stream was recorded complete: %+v", r)
		}
	})
	t.Run("other endpoint keeps a bounded raw body", func(t *testing.T) {
		req := httptest.NewRequest("GET", "https://api.openai.com/v1/models", nil)
		r := exchange(t, rec, req, nil, 200, "application/json", strings.Repeat("m", 100), true)
		if r.Request.Endpoint != "other" || len(r.Response.Body) != 64 || !r.Response.Truncated || r.Response.Size != 100 {
			t.Errorf("response body kept %d of %d bytes (truncated %v)", len(r.Response.Body), r.Response.Size, r.Response.Truncated)
		}
	})
	t.Run("multipart upload is metadata and text parts", func(t *testing.T) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		mw.WriteField("purpose", "fine-tune")
		fw, _ := mw.CreateFormFile("file", "train.jsonl")
		fw.Write([]byte(`{"secret":"file contents never recorded"}`))
		mw.Close()
		req := httptest.NewRequest("POST", "https://api.openai.com/v1/files", nil)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		r := exchange(t, rec, req, buf.Bytes(), 200, "application/json", `{"id":"file-1"}`, true)
		mp := r.Request.Multipart
		if mp == nil || len(mp.Files) != 1 || mp.Files[0].Filename != "train.jsonl" || len(mp.Fields) != 1 || mp.Fields[0].Value != "fine-tune" {
			t.Fatalf("multipart in record: %+v", mp)
		}
		if strings.Contains(r.Request.Body, "never recorded") {
			t.Error("the uploaded file's contents are in the record")
		}
	})
}
