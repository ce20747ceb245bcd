package proxy

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/promptrail/promptrail/audit"
)

// A streamed request held for approval gets its SSE headers and keep-alive
// comments while it waits; approved, the Go SDK's stream reads the
// upstream's answer; refused, the SDK's stream ends with the error.
func TestHeldStreamKeepsTheClientWaiting(t *testing.T) {
	cases := []struct {
		name    string
		fake    *fakeApprovals
		errHas  string // "" : the stream succeeds
		upsteam bool
	}{
		{"approved after a while", &fakeApprovals{created: audit.ApprovalPending, final: audit.ApprovalApproved, delay: 400 * time.Millisecond}, "", true},
		{"denied", &fakeApprovals{created: audit.ApprovalPending, final: audit.ApprovalDenied, delay: 200 * time.Millisecond}, "ticket 42", false},
		{"not in time", &fakeApprovals{created: audit.ApprovalPending}, "promptrail_approval_pending", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, _ := policyFixture(t, holdPolicy, func(dc *DecryptConfig) {
				dc.Approvals, dc.ApprovalWait, dc.ApprovalKeepAlive = c.fake, time.Second, 50*time.Millisecond
			})
			// The raw stream: comments first, then the answer or the error event.
			req, _ := http.NewRequest("POST", "https://api.openai.com/v1/chat/completions",
				strings.NewReader(`{"model":"gpt-4.1","stream":true,"messages":[{"role":"user","content":"raw `+c.name+`"}]}`))
			req.Header.Set("Content-Type", "application/json")
			resp, err := f.client(true).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" ||
				!strings.HasPrefix(string(body), ": keep-alive\n\n: keep-alive\n\n") {
				t.Fatalf("raw: %d %v %q, want 200 text/event-stream starting with keep-alives", resp.StatusCode, resp.Header, body)
			}
			if c.errHas == "" && !strings.Contains(string(body), "data: [DONE]") {
				t.Fatalf("raw: %q, want the upstream's stream", body)
			}
			if c.errHas != "" && !strings.Contains(string(body), "event: error\ndata: {\"error\"") {
				t.Fatalf("raw: %q, want an error event", body)
			}

			sdk := openai.NewClient(option.WithHTTPClient(f.client(true)), option.WithBaseURL("https://api.openai.com/v1/"),
				option.WithAPIKey("sk-test"), option.WithMaxRetries(0))
			stream := sdk.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
				Model: "gpt-4.1", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("sdk " + c.name)},
			})
			var text strings.Builder
			for stream.Next() {
				for _, ch := range stream.Current().Choices {
					text.WriteString(ch.Delta.Content)
				}
			}
			err = stream.Err()
			switch {
			case c.errHas == "" && (err != nil || text.Len() == 0):
				t.Fatalf("SDK stream: %q, %v; want the upstream's answer", text.String(), err)
			case c.errHas != "" && (err == nil || !strings.Contains(err.Error(), c.errHas)):
				t.Fatalf("SDK stream error %v, want one with %q", err, c.errHas)
			}
			upstream := false
			for _, up := range f.fake.Server.Requests() {
				upstream = upstream || strings.Contains(string(up.Body), "sdk "+c.name)
			}
			if upstream != c.upsteam {
				t.Fatalf("upstream saw it: %v, want %v", upstream, c.upsteam)
			}
		})
	}
}
