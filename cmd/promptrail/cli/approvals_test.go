package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/collector/client"
)

func TestApprovalsListShowDecide(t *testing.T) {
	ctx := context.Background()
	const agentTok, approverTok = "agent-token-for-cli-tests", "approver-token-for-cli-tests"
	srv := newCollectorFixture(t, "agent node-1 "+agentTok, "approver alice "+approverTok)
	agent, err := client.New(srv.url, agentTok, nil)
	if err != nil {
		t.Fatal(err)
	}
	held, err := agent.RequestApproval(ctx, audit.ApprovalRequest{AgentID: "node-1", RecordID: audit.NewID(time.Now()), Rule: "hold-secrets",
		Digest: "sha256:cli", Workload: audit.Workload{Identity: "k8s:ci/runner\x1b[2J"}, Request: audit.Request{Model: "gpt-4o"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	approver, reader := filepath.Join(dir, "approver.token"), srv.tokenFile
	if err := os.WriteFile(approver, []byte(approverTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	oldOut := Stdout
	Stdout = &out
	t.Cleanup(func() { Stdout = oldOut })
	with := func(tokFile string, args ...string) []string {
		return append([]string{"approvals", args[0], "--collector", srv.url, "--token-file", tokFile}, args[1:]...)
	}
	cases := []cliCase{
		{with(reader, "list"), "", held.ID},
		{with(reader, "show", held.ID), "", `"rule": "hold-secrets"`},
		{with(approver, "approve", held.ID), "--reason is required", ""},
		{with(reader, "approve", held.ID, "--reason", "ok"), "approver", ""},
		{with(approver, "approve", held.ID, "--reason", "ticket 7"), "", held.ID + " approved by alice"},
		{with(approver, "deny", held.ID, "--reason", "too late"), "not pending", ""},
		{with(reader, "list"), "", "CREATED"},
		{with(reader, "list", "--state", "approved"), "", held.ID},
	}
	runCLICases(t, &out, cases)
}

// A rule that needs two approvers: the first approve says how far it is.
func TestApprovalsApproveSaysHowManyMore(t *testing.T) {
	ctx := context.Background()
	const agentTok, aliceTok, bobTok = "agent-token-for-cli-tests", "alice-token-for-cli-tests", "bob-token-for-cli-tests"
	srv := newCollectorFixture(t, "agent node-1 "+agentTok, "approver alice "+aliceTok, "approver bob "+bobTok)
	agent, err := client.New(srv.url, agentTok, nil)
	if err != nil {
		t.Fatal(err)
	}
	held, err := agent.RequestApproval(ctx, audit.ApprovalRequest{AgentID: "node-1", RecordID: audit.NewID(time.Now()), Rule: "two-people",
		Digest: "sha256:cli-two", Approvals: 2, Workload: audit.Workload{Identity: "k8s:ci/runner"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	alice, bob := filepath.Join(dir, "alice.token"), filepath.Join(dir, "bob.token")
	for f, tok := range map[string]string{alice: aliceTok, bob: bobTok} {
		if err := os.WriteFile(f, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	oldOut := Stdout
	Stdout = &out
	t.Cleanup(func() { Stdout = oldOut })
	approve := func(tokFile string) []string {
		return []string{"approvals", "approve", held.ID, "--collector", srv.url, "--token-file", tokFile, "--reason", "ok"}
	}
	runCLICases(t, &out, []cliCase{
		{approve(alice), "", held.ID + " pending: 1 of 2 approvals (alice)"},
		{approve(alice), "already", ""},
		{approve(bob), "", held.ID + " approved by bob"},
	})
}
