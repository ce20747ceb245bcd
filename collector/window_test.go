package collector_test

import (
	"context"
	"testing"
	"time"

	"github.com/promptrail/promptrail/audit"
)

// A window grant lets every request of its workload and rule through
// once approved, without being spent; another workload asks again.
func TestWindowGrantLetsTheWorkloadsRequestsThrough(t *testing.T) {
	ctx := context.Background()
	srv, st := approvalServer(t, time.Hour)
	agent := policyClient(t, srv, agentA)
	window := func(digest, identity string) *audit.Approval {
		t.Helper()
		n := newApproval(digest)
		n.GrantKind, n.Workload.Identity = audit.GrantWindow, identity
		a, err := agent.RequestApproval(ctx, n)
		if err != nil {
			t.Fatalf("request %s for %s: %v", digest, identity, err)
		}
		return a
	}
	first := window("sha256:w1", "k8s:team/app")
	if first.State != audit.ApprovalPending || first.GrantKind != audit.GrantWindow {
		t.Fatalf("first: %+v", first)
	}
	// While it waits, another request of the same workload and rule joins it.
	if other := window("sha256:w2", "k8s:team/app"); other.ID != first.ID || other.State != audit.ApprovalPending {
		t.Fatalf("a second request while pending: %+v, want to join %s", other, first.ID)
	}
	if _, err := policyClient(t, srv, approverA).DecideApproval(ctx, first.ID, true, "release week"); err != nil {
		t.Fatal(err)
	}
	for _, digest := range []string{"sha256:w1", "sha256:w3", "sha256:w4"} {
		a := window(digest, "k8s:team/app")
		if a.ID != first.ID || a.State != audit.ApprovalApproved {
			t.Fatalf("request %s within the window: %+v, want approval %s approved", digest, a, first.ID)
		}
		used, err := agent.UseApproval(ctx, a.ID, "rec-"+digest)
		if err != nil || used.State != audit.ApprovalApproved {
			t.Fatalf("use of the window by %s: %+v, %v; want it still approved", digest, used, err)
		}
	}
	if a := window("sha256:w1", "k8s:team/other"); a.ID == first.ID || a.State != audit.ApprovalPending {
		t.Fatalf("another workload: %+v, want a new pending request", a)
	}
	// created, approved, 3 window_used, created: all in the chain.
	rep, err := st.Verify(ctx)
	if err != nil || !rep.OK || rep.Records != 6 {
		t.Fatalf("verify: %+v, %v; want 6 approval records", rep, err)
	}
}
