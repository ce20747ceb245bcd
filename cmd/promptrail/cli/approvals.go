package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/internal/settings"
	"github.com/promptrail/promptrail/internal/termsafe"
)

const approvalsSummary = `Requests held for approval by a policy rule (see README "Approvals").

  promptrail approvals list [flags]               pending requests (--state all: every one)
  promptrail approvals show [flags] ID            one request, the masked request as JSON
  promptrail approvals approve [flags] ID --reason TEXT
  promptrail approvals deny [flags] ID --reason TEXT

approve and deny need an approver or admin token; list and show a reader's too.`

func runApprovals(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(Stderr, approvalsSummary)
		return errors.New("approvals: want list, show, approve or deny")
	}
	verb := args[0]
	fs := newFlagSet("approvals "+verb, approvalsSummary)
	cf := addClientFlags(fs)
	reason := fs.String("reason", "", "why: recorded in the trail and, for deny, shown to the client")
	state := fs.String("state", "pending", "list: pending, approved, denied, expired, used or all")
	rule := fs.String("rule", "", "list: only requests held by this policy `rule`")
	workload := fs.String("workload", "", "list: only requests of this workload `identity`")
	agentID := fs.String("agent", "", "list: only requests of this agent `ID`")
	if err := settings.Parse(fs, args[1:], "config"); err != nil {
		return err
	}
	// ID --reason TEXT: flags after the ID, as the usage writes them.
	var ids []string
	for fs.NArg() > 0 {
		ids = append(ids, fs.Arg(0))
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return err
		}
	}
	switch verb {
	case "list":
		if len(ids) != 0 {
			return errors.New("approvals list: no arguments")
		}
	case "show", "approve", "deny":
		if len(ids) != 1 {
			return fmt.Errorf("approvals %s: want one ID", verb)
		}
		if verb != "show" && strings.TrimSpace(*reason) == "" {
			return fmt.Errorf("approvals %s: --reason is required: it is recorded in the trail", verb)
		}
	default:
		fmt.Fprintln(Stderr, approvalsSummary)
		return fmt.Errorf("approvals: %q: want list, show, approve or deny", verb)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	switch verb {
	case "list":
		list, err := c.Approvals(ctx, *state, *agentID, *rule, *workload)
		if err != nil {
			return fmt.Errorf("approvals list: %w", err)
		}
		tw := tabwriter.NewWriter(Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CREATED\tID\tSTATE\tWORKLOAD\tRULE\tMODEL\tEXPIRES")
		for _, a := range list {
			row := []string{a.Created.Local().Format("2006-01-02 15:04:05"), a.ID, a.State, dash(workloadName(a.Workload)),
				a.Rule, dash(a.Request.Model), a.Expires.Local().Format(time.TimeOnly)}
			// From a workload and its agent: escaped (see the records table).
			for j := range row {
				row[j] = termsafe.String(row[j])
			}
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
		return tw.Flush()
	case "show":
		a, err := c.Approval(ctx, ids[0], 0)
		if err != nil {
			return fmt.Errorf("approvals show: %w", err)
		}
		return writeJSON(Stdout, a, true)
	}
	a, err := c.DecideApproval(ctx, ids[0], verb == "approve", *reason)
	if err != nil {
		return fmt.Errorf("approvals %s: %w", verb, err)
	}
	if a.State == audit.ApprovalPending {
		// A rule that needs more approvers: say how far it is.
		fmt.Fprintf(Stdout, "%s pending: %d of %d approvals (%s)\n", a.ID, len(a.ApprovedBy), a.Approvals, termsafe.String(strings.Join(a.ApprovedBy, ", ")))
		return nil
	}
	fmt.Fprintf(Stdout, "%s %s by %s\n", a.ID, a.State, termsafe.String(a.DecidedBy))
	return nil
}
