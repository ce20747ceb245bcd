package collector_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/collector/client"
)

// A rule that needs two approvers: one approval leaves the request
// pending, the same approver twice does not count, a second approver
// approves it; one denial denies, whoever approved before.
func TestTwoApproversAreNeeded(t *testing.T) {
	type step struct {
		token   string
		approve bool
		status  int    // 0: 200
		state   string // the approval's state after the step
	}
	cases := []struct {
		name      string
		steps     []step
		by        string
		approvals []string
	}{
		{"two approve", []step{
			{approverA, true, 0, audit.ApprovalPending},
			{approverA, true, http.StatusForbidden, ""},
			{approverB, true, 0, audit.ApprovalApproved},
		}, "bob", []string{"alice", "bob"}},
		{"one approves, one denies", []step{
			{approverA, true, 0, audit.ApprovalPending},
			{approverB, false, 0, audit.ApprovalDenied},
			{admin, true, http.StatusConflict, ""},
		}, "bob", []string{"alice"}},
		{"a denial first", []step{
			{approverB, false, 0, audit.ApprovalDenied},
		}, "bob", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			srv, st := approvalServer(t, time.Hour)
			n := newApproval("sha256:two-" + c.name)
			n.Approvals = 2
			a, err := policyClient(t, srv, agentA).RequestApproval(ctx, n)
			if err != nil || a.Approvals != 2 {
				t.Fatalf("request: %+v, %v", a, err)
			}
			for i, s := range c.steps {
				got, err := policyClient(t, srv, s.token).DecideApproval(ctx, a.ID, s.approve, "step")
				if s.status != 0 {
					if !client.IsStatus(err, s.status) {
						t.Fatalf("step %d: %v, want %d", i, err, s.status)
					}
					continue
				}
				if err != nil || got.State != s.state {
					t.Fatalf("step %d: %+v, %v; want state %s", i, got, err, s.state)
				}
			}
			final, err := policyClient(t, srv, agentA).Approval(ctx, a.ID, 0)
			if err != nil || final.DecidedBy != c.by || !slices.Equal(final.ApprovedBy, c.approvals) {
				t.Fatalf("final: %+v, %v; want decided by %s, approved by %v", final, err, c.by, c.approvals)
			}
			if rep, err := st.Verify(ctx); err != nil || !rep.OK {
				t.Fatalf("verify: %+v, %v", rep, err)
			}
		})
	}
}

func TestApprovalsOutOfRangeAreRefused(t *testing.T) {
	srv, _ := approvalServer(t, time.Hour)
	n := newApproval("sha256:nine")
	n.Approvals = 9
	if _, err := policyClient(t, srv, agentA).RequestApproval(context.Background(), n); !client.IsStatus(err, http.StatusBadRequest) {
		t.Fatalf("9 approvals: %v, want 400", err)
	}
}
