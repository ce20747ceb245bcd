package audit

import "time"

// KindApproval is the kind of a record the collector writes into its own
// chain (agent ID CollectorAgentID) for each step of an approval: created,
// approved, denied, expired, grant used. They sit in the same Merkle log as
// the exchanges, so verify covers them.
const KindApproval = "approval"

// CollectorAgentID is the chain the collector seals its own records in.
// No token may ingest records for it.
const CollectorAgentID = "promptrail-collector"

// States of an approval request.
const (
	ApprovalPending  = "pending"
	ApprovalApproved = "approved"
	ApprovalDenied   = "denied"
	ApprovalExpired  = "expired"
	// ApprovalUsed: approved, and its one-shot grant was used by a retry.
	ApprovalUsed = "used"
)

// GrantWindow is the grant kind of an approval that lets every request of
// its workload and rule pass until GrantUntil (not spent by use); the
// default, once, lets one retry of the same request pass.
const GrantWindow = "window"

// Approval is a request held for a person, as the collector keeps it and
// the approver sees it: the request is the masked one.
type Approval struct {
	ID            string   `json:"id"`
	State         string   `json:"state"`
	AgentID       string   `json:"agent_id"`
	RecordID      string   `json:"record_id,omitempty"` // the exchange record that asked first
	Rule          string   `json:"rule"`
	Message       string   `json:"message,omitempty"`
	PolicyVersion string   `json:"policy_version,omitempty"`
	Approvers     []string `json:"approvers,omitempty"` // roles that may decide; empty: approver (and admin)
	Digest        string   `json:"digest"`              // sha256 of method, host, path and masked body
	GrantMinutes  int      `json:"grant_minutes"`
	GrantKind     string   `json:"grant_kind,omitempty"` // once (empty) or window
	// Approvals is how many different approvers must approve (0: 1);
	// ApprovedBy names those who have, in order.
	Approvals  int       `json:"approvals,omitempty"`
	ApprovedBy []string  `json:"approved_by,omitempty"`
	Workload   Workload  `json:"workload"`
	Request    Request   `json:"request,omitzero"`
	Created    time.Time `json:"created"`
	Expires    time.Time `json:"expires"`
	DecidedBy  string    `json:"decided_by,omitempty"`
	DecidedAt  time.Time `json:"decided_at,omitzero"`
	Reason     string    `json:"reason,omitempty"`
	// GrantUntil: an approved request's retry passes once before then.
	GrantUntil time.Time `json:"grant_until,omitzero"`
	UsedAt     time.Time `json:"used_at,omitzero"`
}

// ApprovalRequest is what an agent asks a person to approve (the body of
// the collector's POST /v1/approvals), the request masked as it would go
// upstream.
type ApprovalRequest struct {
	AgentID       string   `json:"agent_id"`
	RecordID      string   `json:"record_id"`
	Rule          string   `json:"rule"`
	Message       string   `json:"message,omitempty"`
	PolicyVersion string   `json:"policy_version,omitempty"`
	Approvers     []string `json:"approvers,omitempty"`
	Digest        string   `json:"digest"`
	GrantMinutes  int      `json:"grant_minutes,omitempty"`
	GrantKind     string   `json:"grant_kind,omitempty"`
	Approvals     int      `json:"approvals,omitempty"`
	Workload      Workload `json:"workload"`
	Request       Request  `json:"request"`
}

// ApprovalEvent is the body of an approval record: one step, by whom,
// when, why, and the approval as it stood after it.
type ApprovalEvent struct {
	Event    string    `json:"event"` // created, approved, denied, expired, used
	By       string    `json:"by,omitempty"`
	At       time.Time `json:"at"`
	Reason   string    `json:"reason,omitempty"`
	Approval Approval  `json:"approval"`
}

// ApprovalRef is what an exchange record says about the approval that
// held it.
type ApprovalRef struct {
	ID     string    `json:"id,omitempty"`
	State  string    `json:"state"` // approved, grant_used, grant_window, denied, pending (not in time), expired, unavailable
	By     string    `json:"by,omitempty"`
	At     time.Time `json:"at,omitzero"`
	Reason string    `json:"reason,omitempty"`
}
