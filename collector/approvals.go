package collector

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/promptrail/promptrail/agent/policy"
	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/collector/auth"
	"github.com/promptrail/promptrail/collector/store"
)

// DefaultApprovalTTL is how long an approval request waits for a decision.
const DefaultApprovalTTL = time.Hour

// DefaultGrantMinutes is how long an approved request's retry may pass,
// when the rule does not say.
const DefaultGrantMinutes = 15

// maxApprovalWait bounds a long poll.
const maxApprovalWait = time.Minute

// NewApproval is the body of POST /v1/approvals.
type NewApproval = audit.ApprovalRequest

// ApprovalDecision is the body of POST /v1/approvals/{id}/approve|deny.
type ApprovalDecision struct {
	Reason string `json:"reason"`
}

// ApprovalsPage is the answer of GET /v1/approvals.
type ApprovalsPage struct {
	Approvals []audit.Approval `json:"approvals"`
}

// approvals keeps approval requests in the store and writes each step as
// a record of the collector's own chain, through the same Ingest as the
// agents' records: the records are sealed, chained and in the Merkle log,
// so verify covers them. mu serialises every change, which makes exactly
// one decision per request (a second approver gets 409) and keeps the
// chain's seq and prev_hash in step.
type approvals struct {
	store *store.Store
	log   *slog.Logger
	ttl   time.Duration
	now   func() time.Time
	// webhook, if set, is told of every new request (never waited for).
	webhook *Webhook

	mu      sync.Mutex
	seq     uint64
	prev    string
	changed chan struct{} // closed and replaced on every change
}

func openApprovals(ctx context.Context, st *store.Store, ttl time.Duration, log *slog.Logger) (*approvals, error) {
	if ttl <= 0 {
		ttl = DefaultApprovalTTL
	}
	seq, prev, err := st.ChainHead(ctx, audit.CollectorAgentID)
	if err != nil {
		return nil, fmt.Errorf("collector: approvals: %w", err)
	}
	return &approvals{store: st, log: log, ttl: ttl, now: time.Now, seq: seq, prev: prev, changed: make(chan struct{})}, nil
}

// errConflict is a step on an approval that is no longer pending.
type errConflict struct{ a *audit.Approval }

func (e errConflict) Error() string {
	return fmt.Sprintf("approval %s is %s (by %s at %s), not pending", e.a.ID, e.a.State, e.a.DecidedBy, e.a.DecidedAt.Format(time.RFC3339))
}

// step records ev as a record of the collector's chain, then stores the
// approval's new state. Callers hold mu.
func (s *approvals) step(ctx context.Context, event, by, reason string, a *audit.Approval) error {
	now := s.now().UTC()
	ev := audit.ApprovalEvent{Event: event, By: by, At: now, Reason: reason, Approval: *a}
	if event != "created" {
		// The request is in the created record; later steps name it.
		ev.Approval.Request = audit.Request{}
	}
	rec := audit.Record{
		ID: audit.NewID(now), Kind: audit.KindApproval, AgentID: audit.CollectorAgentID,
		Start: now, End: now, Workload: a.Workload,
		Decision:      audit.Decision{Action: "approval_" + event, Rule: a.Rule, Message: reason, PolicyVersion: a.PolicyVersion},
		ApprovalEvent: &ev,
	}
	if err := rec.Seal(s.seq+1, s.prev); err != nil {
		return err
	}
	res, err := s.store.Ingest(ctx, []audit.Record{rec})
	if err != nil {
		return fmt.Errorf("recording approval step %s: %w", event, err)
	}
	if len(res.Rejected) > 0 {
		return fmt.Errorf("recording approval step %s: rejected: %s", event, res.Rejected[0].Reason)
	}
	s.seq, s.prev = rec.Seq, rec.Hash
	if err := s.store.PutApproval(ctx, a); err != nil {
		return err
	}
	close(s.changed)
	s.changed = make(chan struct{})
	return nil
}

// settle expires a pending approval past its time. Callers hold mu.
func (s *approvals) settle(ctx context.Context, a *audit.Approval) error {
	if a.State != audit.ApprovalPending || s.now().Before(a.Expires) {
		return nil
	}
	a.State = audit.ApprovalExpired
	return s.step(ctx, "expired", "collector", fmt.Sprintf("not decided within %v", a.Expires.Sub(a.Created).Round(time.Second)), a)
}

func (s *approvals) get(ctx context.Context, id string) (*audit.Approval, <-chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.store.GetApproval(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	return a, s.changed, s.settle(ctx, a)
}

// windowDigest names what a window grant covers, in place of the
// request's digest: every request of one workload on one agent that one
// rule holds.
func windowDigest(n NewApproval) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s", n.AgentID, n.Workload.Identity, n.Rule)
	return "window:" + hex.EncodeToString(h.Sum(nil))
}

// create answers an agent: a retry of a request approved within its grant
// uses the grant (state used: let it pass); a request within an approved
// window comes back approved (the agent's use records it); a retry of a
// pending one (for a window: any request of its workload and rule) joins
// it; anything else is a new request.
func (s *approvals) create(ctx context.Context, n NewApproval) (*audit.Approval, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().UTC()
	if n.GrantKind == audit.GrantWindow {
		n.Digest = windowDigest(n)
	}
	old, err := s.store.ApprovalByDigest(ctx, n.Digest)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return nil, err
	case old.Workload.Identity == n.Workload.Identity && old.AgentID == n.AgentID:
		if err := s.settle(ctx, old); err != nil {
			return nil, err
		}
		switch {
		case old.State == audit.ApprovalPending:
			return old, nil
		case old.State == audit.ApprovalApproved && now.Before(old.GrantUntil) && old.GrantKind == audit.GrantWindow:
			return old, nil
		case old.State == audit.ApprovalApproved && now.Before(old.GrantUntil):
			return old, s.use(ctx, old, n.RecordID)
		}
	}
	if n.GrantMinutes <= 0 {
		n.GrantMinutes = DefaultGrantMinutes
	}
	a := &audit.Approval{
		ID: audit.NewID(now), State: audit.ApprovalPending, AgentID: n.AgentID, RecordID: n.RecordID,
		Rule: n.Rule, Message: n.Message, PolicyVersion: n.PolicyVersion, Approvers: n.Approvers, Approvals: n.Approvals,
		Digest: n.Digest, GrantMinutes: n.GrantMinutes, GrantKind: n.GrantKind, Workload: n.Workload, Request: n.Request,
		Created: now, Expires: now.Add(s.ttl),
	}
	if err := s.step(ctx, "created", n.AgentID, n.Message, a); err != nil {
		return a, err
	}
	if s.webhook != nil {
		s.webhook.notify(a)
	}
	return a, nil
}

// use spends an approved request's one-shot grant. Callers hold mu.
func (s *approvals) use(ctx context.Context, a *audit.Approval, recordID string) error {
	a.State, a.UsedAt = audit.ApprovalUsed, s.now().UTC()
	return s.step(ctx, "used", a.AgentID, "grant used by record "+recordID, a)
}

// useByID spends the grant of the request that waited for it.
func (s *approvals) useByID(ctx context.Context, id, recordID string) (*audit.Approval, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.store.GetApproval(ctx, id)
	if err != nil {
		return nil, err
	}
	if a.State != audit.ApprovalApproved || !s.now().Before(a.GrantUntil) {
		return a, errConflict{a}
	}
	if a.GrantKind == audit.GrantWindow {
		// A window is not spent: the step records which request it let by.
		return a, s.step(ctx, "window_used", a.AgentID, "grant window used by record "+recordID, a)
	}
	return a, s.use(ctx, a, recordID)
}

// decide approves or denies a pending request, once.
func (s *approvals) decide(ctx context.Context, id string, p auth.Principal, approve bool, reason string) (*audit.Approval, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.store.GetApproval(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.settle(ctx, a); err != nil {
		return nil, err
	}
	if a.State != audit.ApprovalPending {
		return a, errConflict{a}
	}
	if len(a.Approvers) > 0 && p.Role != auth.RoleAdmin && !slices.Contains(a.Approvers, string(p.Role)) {
		return a, errForbidden(fmt.Sprintf("rule %s names approvers %v; %s %q is not one", a.Rule, a.Approvers, p.Role, p.Name))
	}
	if p.Name == a.Workload.Identity {
		return a, errForbidden(fmt.Sprintf("%q may not decide a request attributed to itself", p.Name))
	}
	now := s.now().UTC()
	if approve && a.Approvals > 1 {
		if slices.Contains(a.ApprovedBy, p.Name) {
			return a, errForbidden(fmt.Sprintf("rule %s needs %d different approvers; %q has approved already", a.Rule, a.Approvals, p.Name))
		}
		a.ApprovedBy = append(a.ApprovedBy, p.Name)
		if len(a.ApprovedBy) < a.Approvals {
			// Still pending: the step records who approved so far.
			return a, s.step(ctx, "approval_added", p.Name, reason, a)
		}
	}
	a.DecidedBy, a.DecidedAt, a.Reason = p.Name, now, reason
	event := "denied"
	a.State = audit.ApprovalDenied
	if approve {
		event, a.State = "approved", audit.ApprovalApproved
		a.GrantUntil = now.Add(time.Duration(a.GrantMinutes) * time.Minute)
	}
	return a, s.step(ctx, event, p.Name, reason, a)
}

type errForbidden string

func (e errForbidden) Error() string { return string(e) }

func (s *approvals) list(ctx context.Context, state, agent, rule, workload string) ([]audit.Approval, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	all, err := s.store.Approvals(ctx, func(a *audit.Approval) bool {
		return (agent == "" || a.AgentID == agent) && (rule == "" || a.Rule == rule) && (workload == "" || a.Workload.Identity == workload)
	})
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for i := range all {
		if err := s.settle(ctx, &all[i]); err != nil {
			return nil, err
		}
		if state == "all" || all[i].State == state {
			all[i].Request = audit.Request{Model: all[i].Request.Model, Path: all[i].Request.Path, Endpoint: all[i].Request.Endpoint}
			out = append(out, all[i])
		}
	}
	return out, nil
}

func (a *api) approvalRoutes(mux *http.ServeMux) {
	viewers := []auth.Role{auth.RoleApprover, auth.RoleReader, auth.RoleAgent}
	mux.HandleFunc("POST /v1/approvals", a.authorized(auth.RoleAgent, a.createApproval))
	mux.HandleFunc("GET /v1/approvals", a.authorizedAny([]auth.Role{auth.RoleApprover, auth.RoleReader}, a.listApprovals))
	mux.HandleFunc("GET /v1/approvals/{id}", a.authorizedAny(viewers, a.getApproval))
	mux.HandleFunc("POST /v1/approvals/{id}/approve", a.authorized(auth.RoleApprover, a.decideApproval(true)))
	mux.HandleFunc("POST /v1/approvals/{id}/deny", a.authorized(auth.RoleApprover, a.decideApproval(false)))
	mux.HandleFunc("POST /v1/approvals/{id}/use", a.authorized(auth.RoleAgent, a.useApproval))
}

func (a *api) createApproval(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	var n NewApproval
	if err := json.NewDecoder(io.LimitReader(r.Body, audit.MaxRecordBytes)).Decode(&n); err != nil {
		writeError(w, http.StatusBadRequest, "bad_json", "approval request: "+err.Error())
		return
	}
	switch {
	case n.AgentID == "" || n.Digest == "" || n.Rule == "":
		writeError(w, http.StatusBadRequest, "bad_approval", "agent_id, digest and rule are required")
		return
	case n.Approvals < 0 || n.Approvals > policy.MaxApprovals:
		writeError(w, http.StatusBadRequest, "bad_approval", fmt.Sprintf("approvals %d: want 1 to %d", n.Approvals, policy.MaxApprovals))
		return
	case n.GrantKind != "" && n.GrantKind != "once" && n.GrantKind != audit.GrantWindow:
		writeError(w, http.StatusBadRequest, "bad_approval", fmt.Sprintf("grant_kind %q: want once or window", n.GrantKind))
		return
	case !p.MayIngestFor(n.AgentID) || n.AgentID == audit.CollectorAgentID:
		writeError(w, http.StatusForbidden, "unknown_agent", fmt.Sprintf("token %q may not ask for agent %q", p.Name, n.AgentID))
		return
	}
	ap, err := a.approvals.create(r.Context(), n)
	if err != nil {
		a.log.Error("approval request not stored", "agent", n.AgentID, "err", err)
		writeError(w, http.StatusServiceUnavailable, "store_unavailable", "the approval request was not stored: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, ap)
}

func (a *api) listApprovals(w http.ResponseWriter, r *http.Request, _ auth.Principal) {
	q := r.URL.Query()
	state := q.Get("state")
	if state == "" {
		state = audit.ApprovalPending
	}
	list, err := a.approvals.list(r.Context(), state, q.Get("agent"), q.Get("rule"), q.Get("workload"))
	if err != nil {
		writeError(w, http.StatusInternalServerError, "list_failed", err.Error())
		return
	}
	if list == nil {
		list = []audit.Approval{}
	}
	writeJSON(w, http.StatusOK, ApprovalsPage{Approvals: list})
}

// getApproval answers GET /v1/approvals/{id}; with ?wait=D it answers when
// the request is no longer pending or D (at most a minute) has passed.
func (a *api) getApproval(w http.ResponseWriter, r *http.Request, _ auth.Principal) {
	var wait time.Duration
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			writeError(w, http.StatusBadRequest, "bad_query", "wait: want a duration such as 20s")
			return
		}
		wait = min(d, maxApprovalWait)
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		ap, changed, err := a.approvals.get(r.Context(), r.PathValue("id"))
		if err != nil {
			a.writeApprovalError(w, r.PathValue("id"), err)
			return
		}
		if ap.State != audit.ApprovalPending || wait == 0 {
			writeJSON(w, http.StatusOK, ap)
			return
		}
		expiry := time.NewTimer(time.Until(ap.Expires))
		select {
		case <-changed:
		case <-expiry.C:
		case <-r.Context().Done():
			expiry.Stop()
			return
		case <-deadline.C:
			expiry.Stop()
			writeJSON(w, http.StatusOK, ap)
			return
		}
		expiry.Stop()
	}
}

func (a *api) decideApproval(approve bool) principalHandler {
	return func(w http.ResponseWriter, r *http.Request, p auth.Principal) {
		var d ApprovalDecision
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&d); err != nil || d.Reason == "" {
			writeError(w, http.StatusBadRequest, "reason_required", `a decision needs a reason: {"reason":"..."}`)
			return
		}
		ap, err := a.approvals.decide(r.Context(), r.PathValue("id"), p, approve, d.Reason)
		if err != nil {
			a.writeApprovalError(w, r.PathValue("id"), err)
			return
		}
		a.log.Info("approval decided", "id", ap.ID, "state", ap.State, "by", p.Name, "reason", d.Reason)
		writeJSON(w, http.StatusOK, ap)
	}
}

func (a *api) useApproval(w http.ResponseWriter, r *http.Request, _ auth.Principal) {
	ap, err := a.approvals.useByID(r.Context(), r.PathValue("id"), r.URL.Query().Get("record"))
	if err != nil {
		a.writeApprovalError(w, r.PathValue("id"), err)
		return
	}
	writeJSON(w, http.StatusOK, ap)
}

func (a *api) writeApprovalError(w http.ResponseWriter, id string, err error) {
	var conflict errConflict
	var forbidden errForbidden
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", "no approval "+id)
	case errors.As(err, &conflict):
		writeError(w, http.StatusConflict, "approval_"+conflict.a.State, err.Error())
	case errors.As(err, &forbidden):
		writeError(w, http.StatusForbidden, "forbidden", err.Error())
	default:
		a.log.Error("approval step failed", "id", id, "err", err)
		writeError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
	}
}
