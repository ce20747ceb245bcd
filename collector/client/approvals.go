package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/collector"
)

func (c *Client) postJSON(ctx context.Context, path string, q url.Values, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("collector: encoding %s: %w", path, err)
	}
	b, _, err := c.do(ctx, http.MethodPost, path, q, body, http.Header{"Content-Type": {"application/json"}})
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("collector: decoding the answer of %s: %w", path, err)
	}
	return nil
}

// RequestApproval asks for an approval (agent token). The answer is a
// pending request (new, or the one a retry joins) or, for a retry of a
// request approved within its grant, one in state used: let it pass.
func (c *Client) RequestApproval(ctx context.Context, n collector.NewApproval) (*audit.Approval, error) {
	var a audit.Approval
	return &a, c.postJSON(ctx, "/v1/approvals", nil, n, &a)
}

// Approval returns an approval; wait > 0 long-polls until it is no longer
// pending or wait has passed.
func (c *Client) Approval(ctx context.Context, id string, wait time.Duration) (*audit.Approval, error) {
	var q url.Values
	if wait > 0 {
		q = url.Values{"wait": {wait.String()}}
	}
	var a audit.Approval
	return &a, c.getJSON(ctx, "/v1/approvals/"+url.PathEscape(id), q, &a)
}

// UseApproval spends the grant of an approved request (agent token): a
// 409 *Error if it is spent or expired.
func (c *Client) UseApproval(ctx context.Context, id, recordID string) (*audit.Approval, error) {
	var a audit.Approval
	return &a, c.postJSON(ctx, "/v1/approvals/"+url.PathEscape(id)+"/use", url.Values{"record": {recordID}}, struct{}{}, &a)
}

// Approvals lists approvals in state ("" pending, "all"), filtered.
func (c *Client) Approvals(ctx context.Context, state, agent, rule, workload string) ([]audit.Approval, error) {
	q := url.Values{}
	for k, v := range map[string]string{"state": state, "agent": agent, "rule": rule, "workload": workload} {
		if v != "" {
			q.Set(k, v)
		}
	}
	var p collector.ApprovalsPage
	return p.Approvals, c.getJSON(ctx, "/v1/approvals", q, &p)
}

// DecideApproval approves or denies a pending request (approver or admin
// token), with a reason; a 409 *Error if it is decided or expired.
func (c *Client) DecideApproval(ctx context.Context, id string, approve bool, reason string) (*audit.Approval, error) {
	verb := "deny"
	if approve {
		verb = "approve"
	}
	var a audit.Approval
	return &a, c.postJSON(ctx, "/v1/approvals/"+url.PathEscape(id)+"/"+verb, nil, collector.ApprovalDecision{Reason: reason}, &a)
}
