package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/promptrail/promptrail/agent"
	"github.com/promptrail/promptrail/agent/intercept"
	"github.com/promptrail/promptrail/collector"
	"github.com/promptrail/promptrail/collector/auth"
	"github.com/promptrail/promptrail/internal/settings"
)

const runSummary = `Runs promptrail on this host: a collector (Badger store in
--data-dir/collector, API on --collector-listen) and an agent that
intercepts connections to the targets from every process under the cgroup
root except promptrail itself, with the same flags as ` + "`promptrail agent`" + `.

On first start it writes tokens to --data-dir: agent.token (the agent's),
reader.token (for ` + "`promptrail query`, `verify` and `export`" + `, which find it there
by default) and collector/tokens (what the collector accepts). With
--collector URL it ships to that collector instead and runs none itself.

Its fail mode defaults to fail-open: stopping it returns the host to
normal. Pass --fail-mode fail-closed to refuse connects to targets while it
is not running.`

func runHost(ctx context.Context, args []string) error {
	fs := newFlagSet("run", runSummary)
	f := addAgentFlags(fs, "/var/lib/promptrail", intercept.FailOpen)
	listen := fs.String("collector-listen", "127.0.0.1:7070", "`ip:port` of the embedded collector's API")
	retention := &durationFlag{}
	fs.Var(retention, "retention", "the embedded collector drops records older than this `long` (default: keep forever)")
	if err := settings.Parse(fs, args, "config"); err != nil {
		return err
	}
	cfg, err := f.agentConfig()
	if err != nil {
		return err
	}
	if cfg.Collector != "" {
		return agent.Run(ctx, cfg)
	}
	colDir := filepath.Join(cfg.DataDir, "collector")
	agentToken, err := localTokens(cfg.DataDir, colDir)
	if err != nil {
		return err
	}
	a, err := auth.OpenTokens(filepath.Join(colDir, "tokens"))
	if err != nil {
		return err
	}
	// The collector outlives the agent, so that the agent's last records
	// are shipped before both stop: it has its own context, cancelled
	// once the agent has returned.
	colCtx, stopCollector := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCollector()
	ready := make(chan net.Addr, 1)
	colDone := make(chan error, 1)
	go a.Watch(colCtx, tokensReload, cfg.Logger)
	go func() {
		colDone <- collector.Run(colCtx, collector.Config{DataDir: colDir, Listen: *listen, Auth: a, Retention: retention.d,
			Logger: cfg.Logger.With("component", "collector"), Ready: func(addr net.Addr) { ready <- addr }})
	}()
	select {
	case addr := <-ready:
		cfg.Collector = "http://" + addr.String()
	case err := <-colDone:
		return fmt.Errorf("collector did not start: %w", err)
	}
	cfg.TokenFile = agentToken
	agentErr := agent.Run(ctx, cfg)
	stopCollector()
	return errors.Join(agentErr, <-colDone)
}

// localTokens makes, on first start, the tokens of an all-in-one host:
// one the agent presents and one for the query commands, both also in
// the collector's tokens file. It returns the agent token's file.
func localTokens(dataDir, colDir string) (string, error) {
	agentFile := filepath.Join(dataDir, "agent.token")
	readerFile := filepath.Join(dataDir, "reader.token")
	tokens := filepath.Join(colDir, "tokens")
	if _, err := os.Stat(tokens); err == nil {
		return agentFile, nil
	}
	if err := os.MkdirAll(colDir, 0o700); err != nil {
		return "", fmt.Errorf("creating %s: %w", colDir, err)
	}
	at, rt := auth.NewToken(), auth.NewToken()
	files := []struct{ path, content string }{
		{agentFile, at + "\n"},
		{readerFile, rt + "\n"},
		// Written last: its presence says the others exist.
		{tokens, fmt.Sprintf("# written by promptrail run\nagent * %s\nreader local %s\n", at, rt)},
	}
	for _, f := range files {
		if err := os.WriteFile(f.path, []byte(f.content), 0o600); err != nil {
			return "", fmt.Errorf("writing %s: %w", f.path, err)
		}
	}
	return agentFile, nil
}
