package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"

	"github.com/promptrail/promptrail/agent/policy"
	"github.com/promptrail/promptrail/internal/settings"
)

const policySummary = `Policy files (see README "Policy").

  promptrail policy check FILE            compile FILE locally; print its version and rules
  promptrail policy push [flags] FILE     replace the collector's policy (admin token)
  promptrail policy get [flags]           print the collector's policy; its version on stderr`

func runPolicy(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(Stderr, policySummary)
		return fmt.Errorf("policy: want check, push or get")
	}
	fs := newFlagSet("policy "+args[0], policySummary)
	cf := addClientFlags(fs)
	if err := settings.Parse(fs, args[1:], "config"); err != nil {
		return err
	}
	switch args[0] {
	case "check", "push":
		if fs.NArg() != 1 {
			return fmt.Errorf("policy %s: want one FILE", args[0])
		}
		raw, err := os.ReadFile(fs.Arg(0))
		if err != nil {
			return fmt.Errorf("policy %s: %w", args[0], err)
		}
		p, err := policy.Parse(bytes.NewReader(raw))
		if err != nil {
			return fmt.Errorf("policy %s: %s: %w", args[0], fs.Arg(0), err)
		}
		if args[0] == "check" {
			fmt.Fprintf(Stdout, "%s: %d rules, namespaces %v\n", p.Version(), len(p.Rules()), p.Namespaces())
			return nil
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		v, err := c.PushPolicy(ctx, raw)
		if err != nil {
			return fmt.Errorf("policy push: %w", err)
		}
		fmt.Fprintf(Stdout, "pushed %s (%d rules)\n", v.Version, v.Rules)
		return nil
	case "get":
		c, err := cf.client()
		if err != nil {
			return err
		}
		raw, version, _, err := c.Policy(ctx, "")
		if err != nil {
			return fmt.Errorf("policy get: %w", err)
		}
		fmt.Fprintln(Stderr, version)
		_, err = Stdout.Write(raw)
		return err
	}
	fmt.Fprintln(Stderr, policySummary)
	return fmt.Errorf("policy: %q: want check, push or get", args[0])
}
