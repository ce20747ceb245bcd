package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/collector/auth"
	"github.com/promptrail/promptrail/collector/client"
)

// approvalTestPolicy holds gpt-4.1 calls of root (the test's client) for
// a person.
const approvalTestPolicy = `
rules:
  - name: hold-gpt41
    when: request.model == "gpt-4.1" && workload.uid == 0
    action: require_approval
    message: gpt-4.1 calls need a person
    grant: {kind: once, minutes: 10}
default:
  action: mask
`

// approvalWait is the agent's --approval-wait in this test: long enough
// for the CLI to approve, short enough for the test.
const approvalWait = 6 * time.Second

// TestApprovalHoldsARequestForAPerson runs the official Go SDK from a
// child cgroup through the real agent and collector: a held call approved
// from the CLI while the SDK waits gets the fake's answer; a denied one
// an error with the approver's reason; one not approved in time an error
// with its approval_id, and once that is approved, the SDK's retry of the
// same call passes once, and the next is held again; with the collector
// gone, the call is refused and says why. Its addresses are
// 127.0.9.0/24 and ports 159xx.
func TestApprovalHoldsARequestForAPerson(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(file, []byte(approvalTestPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	pins := pinDirNamed(t, "promptrail-i12a-")
	n := newTLSNodeAt(t, tlsNodeAddrs{upstream: "127.0.9.5", proxy: "127.0.0.1:15900", explicit: "127.0.0.1:15901", collectorDisabled: true,
		agentArgs: []string{"--policy", file, "--approval-wait", approvalWait.String(), "--pin-path", pins}})
	approverTok := "approver-token-" + randomFrom("abcdefghij", 20)
	approverFile := filepath.Join(dir, "approver.token")
	tokens, err := os.ReadFile(n.collector.tokensFile)
	if err != nil {
		t.Fatal(err)
	}
	for path, content := range map[string]string{
		n.collector.tokensFile: string(tokens) + "approver alice " + approverTok + "\n",
		approverFile:           approverTok + "\n",
	} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	n.collector.start()
	approver, err := client.New(n.collector.url(), approverTok, nil)
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cli := func(verb, id, reason string) error {
		out, err := exec.Command(promptrail(t), "approvals", verb, "--collector", n.collector.url(), "--token-file", approverFile, id, "--reason", reason).CombinedOutput()
		if err != nil {
			return fmt.Errorf("approvals %s: %v %s", verb, err, out)
		}
		return nil
	}
	// decideWhenPending decides the next pending request from another
	// goroutine while the SDK waits; its error comes on the channel.
	decideWhenPending := func(verb, reason string) <-chan error {
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), approvalWait)
			defer cancel()
			for ctx.Err() == nil {
				list, err := approver.Approvals(ctx, "", "", "hold-gpt41", "")
				if err == nil && len(list) == 1 {
					done <- cli(verb, list[0].ID, reason)
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			done <- fmt.Errorf("no pending approval within %v", approvalWait)
		}()
		return done
	}
	call := func(t *testing.T, prompt string) clientResult {
		t.Helper()
		out, _ := n.run(t, []string{envGoClient + "=chat", envModel + "=gpt-4.1", envPrompt + "=" + prompt, "SSL_CERT_FILE=" + n.agentCA}, self)
		var res clientResult
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("client: %s (%v)", out, err)
		}
		return res
	}
	upstreamSaw := func(prompt string) int {
		seen := 0
		for _, r := range n.fake.Server.Requests() {
			if strings.Contains(string(r.Body), prompt) {
				seen++
			}
		}
		return seen
	}

	t.Run("approved while the SDK waits", func(t *testing.T) {
		done := decideWhenPending("approve", "ticket OPS-1")
		res := call(t, "approval-e2e-approved")
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if res.Error != "" || res.Text != reply {
			t.Fatalf("text %q error %q %+v, want the fake's answer", res.Text, res.Error, res.APIError)
		}
		r := n.record(t, "the approved call", byPID(res.PID, "/v1/chat/completions"))
		if a := r.Decision.Approval; a == nil || a.State != audit.ApprovalApproved || a.By != "alice" || a.Reason != "ticket OPS-1" || r.Decision.Rule != "hold-gpt41" {
			t.Errorf("record decision %+v approval %+v, want approved by alice", r.Decision, r.Decision.Approval)
		}
	})

	t.Run("denied", func(t *testing.T) {
		done := decideWhenPending("deny", "no gpt-4.1 for this job")
		res := call(t, "approval-e2e-denied")
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if e := res.APIError; e == nil || e.Status != 403 || e.Code != "promptrail_approval_denied" || !strings.Contains(e.Message, "no gpt-4.1 for this job") {
			t.Fatalf("the SDK's error: %q %+v, want 403 promptrail_approval_denied with the reason", res.Error, res.APIError)
		}
		if upstreamSaw("approval-e2e-denied") != 0 {
			t.Fatal("the upstream received the denied request")
		}
	})

	t.Run("not in time, approved, retried", func(t *testing.T) {
		const prompt = "approval-e2e-late"
		res := call(t, prompt)
		e := res.APIError
		if e == nil || e.Status != 403 || e.Code != "promptrail_approval_pending" || e.ApprovalID == "" || !strings.Contains(e.Message, e.ApprovalID) {
			t.Fatalf("the SDK's error: %q %+v, want 403 promptrail_approval_pending with its approval_id", res.Error, e)
		}
		r := n.record(t, "the call not approved in time", byPID(res.PID, "/v1/chat/completions"))
		if a := r.Decision.Approval; a == nil || a.ID != e.ApprovalID || a.State != audit.ApprovalPending || r.Decision.Action != "block" {
			t.Errorf("record decision %+v approval %+v, want blocked, pending %s", r.Decision, r.Decision.Approval, e.ApprovalID)
		}
		if err := cli("approve", e.ApprovalID, "rerun is fine"); err != nil {
			t.Fatal(err)
		}
		if res := call(t, prompt); res.Error != "" || res.Text != reply {
			t.Fatalf("the retry after approval: text %q error %q %+v, want the fake's answer", res.Text, res.Error, res.APIError)
		}
		if upstreamSaw(prompt) != 1 {
			t.Fatalf("the upstream saw the call %d times, want once", upstreamSaw(prompt))
		}
		// The grant is one-shot: the next retry is held again.
		if res := call(t, prompt); res.APIError == nil || res.APIError.Code != "promptrail_approval_pending" || res.APIError.ApprovalID == e.ApprovalID {
			t.Fatalf("the second retry: %q %+v, want held again under a new approval", res.Error, res.APIError)
		}
	})

	t.Run("the trail verifies", func(t *testing.T) {
		tok, err := auth.ReadTokenFile(n.collector.read)
		if err != nil {
			t.Fatal(err)
		}
		reader, err := client.New(n.collector.url(), tok, nil)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := reader.Verify(context.Background())
		if err != nil || !rep.OK {
			t.Fatalf("verify: %+v %v", rep, err)
		}
		all, err := approver.Approvals(context.Background(), "all", "", "", "")
		if err != nil || len(all) != 4 {
			t.Fatalf("approvals: %d %v, want 4 (approved, denied, late, held again)", len(all), err)
		}
	})

	t.Run("collector away: refused", func(t *testing.T) {
		n.collector.kill()
		res := call(t, "approval-e2e-no-collector")
		if e := res.APIError; e == nil || e.Status != 503 || e.Code != "promptrail_approval_unavailable" || !strings.Contains(e.Message, "collector") {
			t.Fatalf("the SDK's error: %q %+v, want 503 promptrail_approval_unavailable saying why", res.Error, e)
		}
		if upstreamSaw("approval-e2e-no-collector") != 0 {
			t.Fatal("the upstream received a request that needed approval")
		}
	})
}
