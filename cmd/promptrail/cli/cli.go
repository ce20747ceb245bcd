// Package cli holds promptrail's subcommands, one file each. Each parses
// its flags (command line, PROMPTRAIL_* environment, --config file) into a
// package's Config and calls it; none holds logic of its own.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"

	"github.com/promptrail/promptrail/internal/settings"
)

// Stdout and Stderr are where commands write, replaceable in tests.
var (
	Stdout io.Writer = os.Stdout
	Stderr io.Writer = os.Stderr
)

type command struct {
	summary string
	run     func(ctx context.Context, args []string) error
}

func commands() map[string]command {
	return map[string]command{
		"agent":     {"run the node agent (Kubernetes DaemonSet)", runAgent},
		"run":       {"run promptrail on this host: intercept every process but itself", runHost},
		"cleanup":   {"remove the programs that a fail-closed agent left pinned", runCleanup},
		"rejected":  {"list the records the collector refused for good, kept in a stopped agent's spool", runRejected},
		"ca":        {"print the CA certificate that clients must trust", runCA},
		"dev":       {"developer tools: dev fake-openai serves a fake OpenAI API", runDev},
		"collector": {"run the collector: ingest, tamper-evident store, query API", runCollector},
		"query":     {"list audit records from the collector", runQuery},
		"verify":    {"verify the collector's store (chains, Merkle log) or one record's proof", runVerify},
		"export":    {"export audit records from the collector as JSON lines", runExport},
		"policy":    {"check a policy file, push it to the collector, or get the one in force", runPolicy},
		"approvals": {"list, show, approve or deny requests a policy rule holds for a person", runApprovals},
	}
}

// Run runs the subcommand that args name.
func Run(ctx context.Context, args []string) error {
	cmds := commands()
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(cmds)
		return nil
	}
	c, ok := cmds[args[0]]
	if !ok {
		usage(cmds)
		return fmt.Errorf("unknown command %q", args[0])
	}
	err := c.run(ctx, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

func usage(cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(Stderr, "promptrail: see and control what your workloads send to LLM APIs.\n\nUsage: promptrail <command> [flags]\n\nCommands:")
	for _, n := range names {
		fmt.Fprintf(Stderr, "  %-10s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(Stderr, "\nRun `promptrail <command> --help` for the flags of a command.")
}

// newFlagSet returns a flag set whose --help explains the command.
func newFlagSet(name, summary string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(Stderr)
	fs.Usage = settings.Usage(fs, Stderr, "Usage: promptrail "+name+" [flags]\n\n"+summary)
	return fs
}

// logFlags are the logging flags that every long-running command has.
type logFlags struct{ format, level *string }

func addLogFlags(fs *flag.FlagSet) logFlags {
	return logFlags{
		format: fs.String("log-format", "text", "log format: text or json (one object per line)"),
		level:  fs.String("log-level", "info", "log level: debug, info, warn or error"),
	}
}

func (l logFlags) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*l.level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", *l.level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(*l.format) {
	case "text":
		return slog.New(slog.NewTextHandler(Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", *l.format)
}
