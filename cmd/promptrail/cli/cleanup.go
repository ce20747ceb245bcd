package cli

import (
	"context"
	"fmt"

	"github.com/promptrail/promptrail/agent/intercept"
	"github.com/promptrail/promptrail/internal/settings"
)

const cleanupSummary = `Removes the eBPF programs that a fail-closed agent left pinned, so that
connections to the targets go direct again. Run it after uninstalling the
agent, or to stop enforcement on a node without an agent.`

func runCleanup(ctx context.Context, args []string) error {
	fs := newFlagSet("cleanup", cleanupSummary)
	pinPath := fs.String("pin-path", intercept.DefaultPinPath, "bpffs `directory` where the agent pinned its programs")
	if err := settings.Parse(fs, args, ""); err != nil {
		return err
	}
	if err := intercept.Remove(*pinPath); err != nil {
		return err
	}
	fmt.Fprintf(Stdout, "removed promptrail programs pinned under %s\n", *pinPath)
	return nil
}
