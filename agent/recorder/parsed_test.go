package recorder

import (
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestParsedTextIsBounded: the text parsed out of a request is kept to
// MaxBody bytes in all, as the body is, and the record says it was cut.
func TestParsedTextIsBounded(t *testing.T) {
	const limit = 1000
	for _, tc := range []struct {
		name, body string
		truncated  bool
	}{
		{"small", `{"model":"m","messages":[{"role":"user","content":"hello"}]}`, false},
		{"one long message", `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("é", 3*limit) + `"}]}`, true},
		{"many messages", `{"model":"m","messages":[` + strings.Repeat(`{"role":"user","content":"`+strings.Repeat("a", 300)+`"},`, 9) + `{"role":"user","content":"end"}]}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newRecorder(t, limit)
			req := httptest.NewRequest("POST", "https://api.openai.com/v1/chat/completions", nil)
			req.Header.Set("Content-Type", "application/json")
			rec := exchange(t, r, req, []byte(tc.body), 200, "application/json", `{}`, true)
			total := 0
			for _, m := range rec.Request.Messages {
				total += len(m.Content)
				if !strings.Contains(tc.body, `content":"`+m.Content) || !utf8.ValidString(m.Content) {
					t.Errorf("content %.40q… is not a valid start of what was sent", m.Content)
				}
			}
			if total > limit || rec.Request.Truncated != tc.truncated || len(rec.Request.Messages) == 0 {
				t.Errorf("%d bytes of content kept (limit %d), truncated %v (want %v)", total, limit, rec.Request.Truncated, tc.truncated)
			}
		})
	}
}
