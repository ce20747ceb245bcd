package cli

import (
	"context"

	"github.com/promptrail/promptrail/agent"
	"github.com/promptrail/promptrail/agent/intercept"
	"github.com/promptrail/promptrail/internal/settings"
)

const runSummary = `Runs promptrail on this host: intercepts connections to the targets from
every process under the cgroup root except promptrail itself, with the
same flags as ` + "`promptrail agent`" + `.

Its fail mode defaults to fail-open: stopping it returns the host to
normal. Pass --fail-mode fail-closed to refuse connects to targets while it
is not running.`

func runHost(ctx context.Context, args []string) error {
	fs := newFlagSet("run", runSummary)
	f := addAgentFlags(fs, "/var/lib/promptrail", intercept.FailOpen)
	if err := settings.Parse(fs, args, "config"); err != nil {
		return err
	}
	cfg, err := f.agentConfig()
	if err != nil {
		return err
	}
	return agent.Run(ctx, cfg)
}
