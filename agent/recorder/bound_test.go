package recorder

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/promptrail/promptrail/audit"
)

func TestRecordsStayWithinTheRecordLimit(t *testing.T) {
	// A prompt of control characters: JSON spells each byte with six.
	escaped := strings.Repeat("\x01", 3<<20)
	tests := []struct {
		name    string
		maxBody int
		prompt  string
		answer  string
	}{
		{"5 MB prompt", 1 << 20, strings.Repeat("ab", 5<<19), `{"choices":[{"message":{"content":"ok"}}]}`},
		{"5 MB prompt and answer", 1 << 20, strings.Repeat("ab", 5<<19),
			fmt.Sprintf(`{"choices":[{"message":{"content":%q}}]}`, strings.Repeat("c", 5<<20))},
		{"escapes at the largest --max-body", MaxMaxBody, escaped, fmt.Sprintf(`{"choices":[{"message":{"content":%q}}]}`, escaped)},
		{"multi-byte runes are not split", 1001, strings.Repeat("é", 1000), `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, _ := newRecorder(t, tt.maxBody)
			body, err := json.Marshal(map[string]any{"model": "gpt-4o", "messages": []map[string]string{{"role": "user", "content": tt.prompt}}})
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest("POST", "https://api.openai.com/v1/chat/completions", nil)
			req.Header.Set("Content-Type", "application/json")
			r := exchange(t, rec, req, body, 200, "application/json", tt.answer, true)
			enc, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			if len(enc) > audit.MaxRecordBytes {
				t.Errorf("record of %d bytes, over the collector's limit of %d", len(enc), audit.MaxRecordBytes)
			}
			if !r.Request.Truncated {
				t.Error("request not flagged truncated")
			}
			if len(r.Request.Messages) != 1 || len(r.Request.Messages[0].Content) == 0 || !strings.HasPrefix(tt.prompt, r.Request.Messages[0].Content) {
				t.Errorf("the prompt's beginning is not kept: %d messages", len(r.Request.Messages))
			}
			if r.Request.Model != "gpt-4o" || r.Request.Size != int64(len(body)) {
				t.Errorf("model %q, size %d: want gpt-4o, %d", r.Request.Model, r.Request.Size, len(body))
			}
		})
	}
}

func TestMaxBodyMustLetARecordFit(t *testing.T) {
	if _, err := New(Config{Sink: &sliceSink{}, MaxBody: MaxMaxBody + 1}); err == nil {
		t.Errorf("New accepted MaxBody %d, over %d", MaxMaxBody+1, MaxMaxBody)
	}
	if _, err := New(Config{Sink: &sliceSink{}, MaxBody: MaxMaxBody}); err != nil {
		t.Errorf("New refused MaxBody %d: %v", MaxMaxBody, err)
	}
}

// journal is a Sink that keeps what Begin stores too.
type journal struct {
	sliceSink
	begun []audit.Record
}

func (j *journal) Begin(_ context.Context, r *audit.Record) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.begun = append(j.begun, *r)
	return nil
}

func TestThePendingRecordFitsTheRecordLimitToo(t *testing.T) {
	j := &journal{}
	rec, err := New(Config{Sink: j, MaxBody: MaxMaxBody})
	if err != nil {
		t.Fatal(err)
	}
	// A prompt that JSON escapes six times over: the record a crash would
	// ship is this pending copy.
	body, err := json.Marshal(map[string]any{"model": "gpt-4o", "messages": []map[string]string{{"role": "user", "content": strings.Repeat("\x01", 3<<20)}}})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("POST", "https://api.openai.com/v1/chat/completions", nil)
	req.Header.Set("Content-Type", "application/json")
	ex := rec.Begin(req, body, int64(len(body)), audit.Connection{}, audit.Workload{})
	if err := ex.Spool(context.Background()); err != nil {
		t.Fatal(err)
	}
	enc, err := json.Marshal(j.begun[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(enc) > audit.MaxRecordBytes || !j.begun[0].Request.Truncated {
		t.Errorf("pending record of %d bytes (truncated %v), want at most %d and flagged", len(enc), j.begun[0].Request.Truncated, audit.MaxRecordBytes)
	}
}
