package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/promptrail/promptrail/audit"
)

// fakeApprovals answers as a collector would: final is what the long
// poll ends with ("" pending: it waits out its wait).
type fakeApprovals struct {
	created, final string
	err            error
	delay          time.Duration // before the long poll answers final

	mu    sync.Mutex
	asked []audit.ApprovalRequest
	used  []string
}

func (f *fakeApprovals) RequestApproval(_ context.Context, n audit.ApprovalRequest) (*audit.Approval, error) {
	f.mu.Lock()
	f.asked = append(f.asked, n)
	f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return &audit.Approval{ID: "01APPROVAL", State: f.created, Expires: time.Now().Add(time.Hour), DecidedBy: "alice", Reason: "earlier"}, nil
}

func (f *fakeApprovals) Approval(ctx context.Context, id string, wait time.Duration) (*audit.Approval, error) {
	if f.final == "" {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
			return &audit.Approval{ID: id, State: audit.ApprovalPending, Expires: time.Now().Add(time.Hour)}, nil
		}
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(f.delay):
	}
	return &audit.Approval{ID: id, State: f.final, DecidedBy: "alice", DecidedAt: time.Now(), Reason: "ticket 42"}, nil
}

func (f *fakeApprovals) UseApproval(_ context.Context, id, recordID string) (*audit.Approval, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.used = append(f.used, id)
	return &audit.Approval{ID: id, State: audit.ApprovalUsed}, nil
}

const holdPolicy = `
rules:
  - name: hold-gpt41
    when: request.model == "gpt-4.1"
    action: require_approval
    message: gpt-4.1 needs a person
    approvals: 2
    grant: {minutes: 5}
`

func TestHeldRequestWaitsForItsApproval(t *testing.T) {
	cases := []struct {
		name            string
		fake            *fakeApprovals
		status          int
		code, inMsg     string
		state           string // the record's approval state
		usedGrant       bool
		reachesUpstream bool
	}{
		{"approved while waiting", &fakeApprovals{created: audit.ApprovalPending, final: audit.ApprovalApproved}, http.StatusOK, "", "", audit.ApprovalApproved, true, true},
		{"retry within the grant", &fakeApprovals{created: audit.ApprovalUsed}, http.StatusOK, "", "", "grant_used", false, true},
		{"denied", &fakeApprovals{created: audit.ApprovalPending, final: audit.ApprovalDenied}, http.StatusForbidden, "promptrail_approval_denied", "ticket 42", audit.ApprovalDenied, false, false},
		{"not in time", &fakeApprovals{created: audit.ApprovalPending}, http.StatusForbidden, "promptrail_approval_pending", "approval_id 01APPROVAL", audit.ApprovalPending, false, false},
		{"collector away", &fakeApprovals{err: errors.New("collector unreachable: connection refused")}, http.StatusServiceUnavailable, "promptrail_approval_unavailable", "connection refused", "unavailable", false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, _ := policyFixture(t, holdPolicy, func(dc *DecryptConfig) { dc.Approvals, dc.ApprovalWait = c.fake, 300*time.Millisecond })
			tag := "tag-" + strings.ReplaceAll(c.name, " ", "-")
			body, _ := json.Marshal(map[string]any{"model": "gpt-4.1", "messages": []map[string]string{{"role": "user", "content": tag}}})
			req, _ := http.NewRequest("POST", "https://api.openai.com/v1/chat/completions", strings.NewReader(string(body)))
			req.Header.Set("Content-Type", "application/json")
			status, h, b := f.send(t, req)
			if status != c.status {
				t.Fatalf("status %d (%s), want %d", status, b, c.status)
			}
			r := f.sink.wait(t, c.name, func(r *audit.Record) bool {
				return r.Response != nil && len(r.Request.Messages) > 0 && r.Request.Messages[0].Content == tag
			})
			if a := r.Decision.Approval; a == nil || a.State != c.state || r.Decision.Rule != "hold-gpt41" {
				t.Fatalf("record decision %+v approval %+v, want state %s", r.Decision, a, c.state)
			}
			if len(c.fake.asked) != 1 || c.fake.asked[0].GrantMinutes != 5 || c.fake.asked[0].Approvals != 2 || c.fake.asked[0].Request.Messages[0].Content != tag ||
				!strings.HasPrefix(c.fake.asked[0].Digest, "sha256:") {
				t.Errorf("asked %+v, want one request with its masked body, digest and grant", c.fake.asked)
			}
			if c.usedGrant != (len(c.fake.used) == 1) {
				t.Errorf("grant used %v, want %v", c.fake.used, c.usedGrant)
			}
			upstream := false
			for _, up := range f.fake.Server.Requests() {
				upstream = upstream || strings.Contains(string(up.Body), tag)
			}
			if upstream != c.reachesUpstream {
				t.Fatalf("upstream saw it: %v, want %v", upstream, c.reachesUpstream)
			}
			if c.code == "" {
				return
			}
			var e struct {
				Error struct {
					Message, Code string
					ApprovalID    string `json:"approval_id"`
				}
			}
			if err := json.Unmarshal(b, &e); err != nil || e.Error.Code != c.code || !strings.Contains(e.Error.Message, c.inMsg) || h.Get("X-Should-Retry") != "false" ||
				(c.fake.err == nil && e.Error.ApprovalID != "01APPROVAL") {
				t.Errorf("answer %s %v, want code %s with %q and X-Should-Retry: false", b, h, c.code, c.inMsg)
			}
		})
	}
}
