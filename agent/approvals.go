package agent

import (
	"context"
	"net/http"
	"time"

	"github.com/promptrail/promptrail/agent/proxy"
	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/collector/auth"
	"github.com/promptrail/promptrail/collector/client"
)

// collectorApprovals puts held requests to the collector's approval API
// as this agent. The token file is read per call, so a rotated token is
// picked up as it is by the shipper.
type collectorApprovals struct {
	collector, tokenFile, agentID string
	hc                            *http.Client // no timeout: each call is bounded by its context
}

var _ proxy.Approvals = (*collectorApprovals)(nil)

func newCollectorApprovals(collector, tokenFile, agentID string) *collectorApprovals {
	return &collectorApprovals{collector: collector, tokenFile: tokenFile, agentID: agentID, hc: &http.Client{}}
}

func (c *collectorApprovals) client() (*client.Client, error) {
	tok := ""
	if c.tokenFile != "" {
		var err error
		if tok, err = auth.ReadTokenFile(c.tokenFile); err != nil {
			return nil, err
		}
	}
	return client.New(c.collector, tok, c.hc)
}

func (c *collectorApprovals) RequestApproval(ctx context.Context, n audit.ApprovalRequest) (*audit.Approval, error) {
	cl, err := c.client()
	if err != nil {
		return nil, err
	}
	n.AgentID = c.agentID
	return cl.RequestApproval(ctx, n)
}

func (c *collectorApprovals) Approval(ctx context.Context, id string, wait time.Duration) (*audit.Approval, error) {
	cl, err := c.client()
	if err != nil {
		return nil, err
	}
	return cl.Approval(ctx, id, wait)
}

func (c *collectorApprovals) UseApproval(ctx context.Context, id, recordID string) (*audit.Approval, error) {
	cl, err := c.client()
	if err != nil {
		return nil, err
	}
	return cl.UseApproval(ctx, id, recordID)
}
