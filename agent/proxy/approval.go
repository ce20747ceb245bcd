package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/promptrail/promptrail/agent/policy"
	"github.com/promptrail/promptrail/agent/recorder"
	"github.com/promptrail/promptrail/audit"
)

// Approvals is the collector's approval API, as the proxy uses it
// (collector/client.Client, behind the agent's adapter).
type Approvals interface {
	// RequestApproval asks for an approval; a request approved within
	// its grant comes back in state used: it may pass.
	RequestApproval(ctx context.Context, n audit.ApprovalRequest) (*audit.Approval, error)
	// Approval long-polls an approval for at most wait.
	Approval(ctx context.Context, id string, wait time.Duration) (*audit.Approval, error)
	// UseApproval spends an approved request's grant.
	UseApproval(ctx context.Context, id, recordID string) (*audit.Approval, error)
}

// DefaultApprovalWait is how long a held request waits for a decision:
// below the SDKs' (10 min) and common load balancers' (30-60 s) timeouts.
const DefaultApprovalWait = 25 * time.Second

// approvalPoll is one long poll's wait at the collector.
const approvalPoll = 20 * time.Second

// requestDigest names a request for its one-shot grant: what would go
// upstream, masked.
func requestDigest(r *http.Request, body []byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00", r.Method, r.Host, r.URL.Path, r.URL.RawQuery)
	h.Write(body)
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// hold waits for a person to approve a request a rule holds. It reports
// whether the request was stopped; then it has finished the record and
// answered the client. Approved in time (or a retry within its grant):
// the request goes on, its record naming the approval.
func (d *decrypter) hold(w http.ResponseWriter, r *http.Request, ex *recorder.Exchange, dec policy.Decision, q request, who audit.Workload) bool {
	if d.cfg.Approvals == nil {
		d.refuseHeld(w, ex, dec, &audit.ApprovalRef{State: "unavailable", Reason: "no collector to ask"},
			"the agent has no collector to ask (--collector)")
		return true
	}
	wait := d.cfg.ApprovalWait
	if wait <= 0 {
		wait = DefaultApprovalWait
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	a, err := d.cfg.Approvals.RequestApproval(ctx, audit.ApprovalRequest{
		RecordID: ex.ID(), Rule: dec.Rule, Message: dec.Message, PolicyVersion: dec.Version,
		Approvers: dec.Approvers, GrantMinutes: dec.GrantMinutes, GrantKind: dec.GrantKind, Approvals: dec.Approvals, Digest: requestDigest(r, q.body),
		Workload: who, Request: ex.Request(),
	})
	if err != nil {
		d.cfg.Logger.Warn("held request refused: the collector could not be asked", "id", ex.ID(), "rule", dec.Rule, "err", err)
		d.refuseHeld(w, ex, dec, &audit.ApprovalRef{State: "unavailable", Reason: err.Error()},
			"the collector could not be asked ("+err.Error()+")")
		return true
	}
	// A request within an approved window comes back approved at once.
	inWindow := a.State == audit.ApprovalApproved && a.GrantKind == audit.GrantWindow
	for a.State == audit.ApprovalPending {
		left := time.Until(a.Expires)
		if dl, ok := ctx.Deadline(); ok {
			left = time.Until(dl)
		}
		if left <= 0 {
			break
		}
		next, err := d.cfg.Approvals.Approval(ctx, a.ID, min(left, approvalPoll))
		if errors.Is(err, context.DeadlineExceeded) || (err != nil && ctx.Err() != nil && r.Context().Err() == nil) {
			break // not decided in time
		}
		if err != nil {
			d.refuseHeld(w, ex, dec, &audit.ApprovalRef{ID: a.ID, State: "unavailable", Reason: err.Error()},
				"the collector could not be asked about approval "+a.ID+" ("+err.Error()+")")
			return true
		}
		a = next
	}
	ref := &audit.ApprovalRef{ID: a.ID, State: a.State, By: a.DecidedBy, At: a.DecidedAt, Reason: a.Reason}
	switch a.State {
	case audit.ApprovalUsed:
		ref.State = "grant_used"
		ex.Approval(ref)
		return false
	case audit.ApprovalApproved:
		// The request that waited spends the grant, so that its retry does
		// not pass a second time.
		if _, err := d.cfg.Approvals.UseApproval(context.WithoutCancel(ctx), a.ID, ex.ID()); err != nil {
			ref.State, ref.Reason = "unavailable", err.Error()
			d.refuseHeld(w, ex, dec, ref, "approval "+a.ID+" could not be used ("+err.Error()+")")
			return true
		}
		if inWindow {
			ref.State = "grant_window"
		}
		ex.Approval(ref)
		return false
	case audit.ApprovalDenied:
		ex.Approval(ref)
		ex.Block(http.StatusForbidden, dec.Rule)
		writeApprovalError(w, http.StatusForbidden, "promptrail_approval_denied", a.ID,
			fmt.Sprintf("promptrail: policy rule %s: approval %s was denied by %s: %s; nothing was sent", dec.Rule, a.ID, a.DecidedBy, a.Reason))
	case audit.ApprovalExpired:
		ex.Approval(ref)
		ex.Block(http.StatusForbidden, dec.Rule)
		writeApprovalError(w, http.StatusForbidden, "promptrail_approval_expired", a.ID,
			fmt.Sprintf("promptrail: policy rule %s: approval %s expired undecided; send the request again to ask again; nothing was sent", dec.Rule, a.ID))
	default:
		ref.State = audit.ApprovalPending
		ex.Approval(ref)
		ex.Block(http.StatusForbidden, dec.Rule)
		writeApprovalError(w, http.StatusForbidden, "promptrail_approval_pending", a.ID,
			fmt.Sprintf("promptrail: policy rule %s requires approval and none came within %v: approval_id %s "+
				"(promptrail approvals approve %s --reason ...); once approved, send the same request again; nothing was sent",
				dec.Rule, wait, a.ID, a.ID))
	}
	return true
}

// refuseHeld answers a held request that could not be put to a person:
// fail closed.
func (d *decrypter) refuseHeld(w http.ResponseWriter, ex *recorder.Exchange, dec policy.Decision, ref *audit.ApprovalRef, why string) {
	ex.Approval(ref)
	ex.Block(http.StatusServiceUnavailable, dec.Rule)
	writeApprovalError(w, http.StatusServiceUnavailable, "promptrail_approval_unavailable", ref.ID,
		fmt.Sprintf("promptrail: policy rule %s requires approval, and %s; requests that need approval are refused then; nothing was sent", dec.Rule, why))
}

// writeApprovalError is writeAPIError with the approval's ID beside the
// code, and X-Should-Retry: false so that the SDKs' automatic retries do
// not ask again and again.
func writeApprovalError(w http.ResponseWriter, status int, code, id, msg string) {
	type apiError struct {
		Message    string  `json:"message"`
		Type       string  `json:"type"`
		Param      *string `json:"param"`
		Code       string  `json:"code"`
		ApprovalID string  `json:"approval_id,omitempty"`
	}
	b, _ := json.Marshal(struct {
		Error apiError `json:"error"`
	}{apiError{Message: msg, Type: "promptrail_error", Code: code, ApprovalID: id}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Should-Retry", "false")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
