package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/collector"
	"github.com/promptrail/promptrail/collector/auth"
	"github.com/promptrail/promptrail/collector/client"
	"github.com/promptrail/promptrail/collector/store"
)

// agentApprovals is the agent's view of a real collector: the client, its
// requests naming the agent.
type agentApprovals struct {
	*client.Client
	agentID string
}

func (a agentApprovals) RequestApproval(ctx context.Context, n audit.ApprovalRequest) (*audit.Approval, error) {
	n.AgentID = a.agentID
	return a.Client.RequestApproval(ctx, n)
}

// realCollector is an in-process collector; it returns the agent's and an
// approver's clients.
func realCollector(t *testing.T) (agentApprovals, *client.Client) {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	const agentTok, approverTok = "agent-token-0123456789abcdef", "approver-token-0123456789abcdef"
	tok, err := auth.ParseTokens([]byte("agent node-w " + agentTok + "\napprover alice " + approverTok + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := collector.NewHandler(collector.HandlerConfig{Store: st, Auth: tok})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	ag, err := client.New(srv.URL, agentTok, nil)
	if err != nil {
		t.Fatal(err)
	}
	ap, err := client.New(srv.URL, approverTok, nil)
	if err != nil {
		t.Fatal(err)
	}
	return agentApprovals{Client: ag, agentID: "node-w"}, ap
}

const windowPolicy = `
rules:
  - name: hold-gpt41-window
    when: request.model == "gpt-4.1"
    action: require_approval
    grant: {kind: window, minutes: 10}
`

// Once a window is approved, later requests of the workload that the rule
// holds go upstream without waiting, each record naming the window.
func TestWindowGrantPassesLaterRequestsThroughTheProxy(t *testing.T) {
	agent, approver := realCollector(t)
	f, _ := policyFixture(t, windowPolicy, func(dc *DecryptConfig) { dc.Approvals, dc.ApprovalWait = agent, 300*time.Millisecond })
	send := func(tag string) (int, []byte) {
		body, _ := json.Marshal(map[string]any{"model": "gpt-4.1", "messages": []map[string]string{{"role": "user", "content": tag}}})
		req, _ := http.NewRequest("POST", "https://api.openai.com/v1/chat/completions", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		status, _, b := f.send(t, req)
		return status, b
	}
	status, b := send("tag-window-first")
	var e struct {
		Error struct {
			Code       string
			ApprovalID string `json:"approval_id"`
		}
	}
	if err := json.Unmarshal(b, &e); err != nil || status != http.StatusForbidden || e.Error.Code != "promptrail_approval_pending" {
		t.Fatalf("first request: %d %s, want 403 promptrail_approval_pending", status, b)
	}
	if _, err := approver.DecideApproval(context.Background(), e.Error.ApprovalID, true, "release week"); err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"tag-window-second", "tag-window-third"} {
		start := time.Now()
		if status, b := send(tag); status != http.StatusOK {
			t.Fatalf("%s within the window: %d %s, want 200", tag, status, b)
		}
		if d := time.Since(start); d > 250*time.Millisecond {
			t.Errorf("%s waited %v within an approved window", tag, d)
		}
		r := f.sink.wait(t, tag, func(r *audit.Record) bool {
			return r.Response != nil && len(r.Request.Messages) > 0 && r.Request.Messages[0].Content == tag
		})
		if a := r.Decision.Approval; a == nil || a.ID != e.Error.ApprovalID || a.State != "grant_window" || a.By != "alice" {
			t.Fatalf("%s record approval %+v, want grant_window of %s by alice", tag, a, e.Error.ApprovalID)
		}
		upstream := false
		for _, up := range f.fake.Server.Requests() {
			upstream = upstream || strings.Contains(string(up.Body), tag)
		}
		if !upstream {
			t.Fatalf("%s did not reach upstream", tag)
		}
	}
}
