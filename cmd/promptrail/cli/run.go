package cli

import (
	"context"

	"github.com/promptrail/promptrail/agent/intercept"
)

const runSummary = `Runs promptrail on this host: intercepts connections to the targets from
every process under the cgroup root except promptrail itself, with the
same flags as ` + "`promptrail agent`" + `.

Its fail mode defaults to fail-open: stopping it returns the host to
normal. Pass --fail-mode fail-closed to refuse connects to targets while it
is not running.`

func runHost(ctx context.Context, args []string) error {
	return runAgentCommand(ctx, "run", runSummary, intercept.FailOpen, args)
}
