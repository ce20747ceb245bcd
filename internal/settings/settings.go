// Package settings fills a command's flag.FlagSet from three places, in
// this order of precedence: the command line, PROMPTRAIL_<FLAG> environment
// variables (what Kubernetes manifests set), and a YAML config file whose
// keys are the flag names. A flag that none of them sets keeps its default.
package settings

import (
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// EnvName returns the environment variable for a flag: PROMPTRAIL_ and the
// name upper-cased with dashes as underscores (proxy-listen becomes
// PROMPTRAIL_PROXY_LISTEN).
func EnvName(flagName string) string {
	return "PROMPTRAIL_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Parse parses args into fs, then fills the flags that the command line
// left unset from the environment and then from the config file named by
// the flag configFlag (if fs has it and it is set). Unknown keys in the
// file are errors, so that a typo does not silently leave a default.
func Parse(fs *flag.FlagSet, args []string, configFlag string) error {
	return parse(fs, args, configFlag, true)
}

// ParseShared is Parse for a command that reads the config file of
// another (`promptrail ca` reads the agent's, for its targets and data
// directory): keys of the file that fs lacks are skipped.
func ParseShared(fs *flag.FlagSet, args []string, configFlag string) error {
	return parse(fs, args, configFlag, false)
}

func parse(fs *flag.FlagSet, args []string, configFlag string, strict bool) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []string
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Sprintf("%s=%q: %v", EnvName(f.Name), v, err))
			}
			set[f.Name] = true
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("environment: %s", strings.Join(errs, "; "))
	}
	cf := fs.Lookup(configFlag)
	if cf == nil || cf.Value.String() == "" {
		return nil
	}
	return applyFile(fs, cf.Value.String(), set, strict)
}

func applyFile(fs *flag.FlagSet, path string, set map[string]bool, strict bool) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading config file: %w", err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if fs.Lookup(k) == nil && !strict {
			continue
		}
		if fs.Lookup(k) == nil {
			return fmt.Errorf("config file %s: unknown setting %q (settings are the flag names of `%s --help`)", path, k, fs.Name())
		}
		if set[k] {
			continue
		}
		values := []any{doc[k]}
		if list, ok := doc[k].([]any); ok {
			values = list
		}
		for _, v := range values {
			if err := fs.Set(k, fmt.Sprint(v)); err != nil {
				return fmt.Errorf("config file %s: %s: %w", path, k, err)
			}
		}
	}
	return nil
}

// List is a repeatable flag. Each use appends; a comma-separated value
// appends each part (so one environment variable can carry several). The
// first use replaces the default.
type List struct {
	values   []string
	replaced bool
}

// NewList returns a List with default values.
func NewList(defaults ...string) *List { return &List{values: defaults} }

func (l *List) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(l.values, ",")
}

// Set implements flag.Value.
func (l *List) Set(v string) error {
	if !l.replaced {
		l.values, l.replaced = nil, true
	}
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			l.values = append(l.values, part)
		}
	}
	return nil
}

// Values returns the list.
func (l *List) Values() []string { return append([]string(nil), l.values...) }

// Usage returns a flag.FlagSet Usage function that prints summary, then
// every flag with its default and its environment variable.
func Usage(fs *flag.FlagSet, w io.Writer, summary string) func() {
	return func() {
		fmt.Fprintf(w, "%s\n\nFlags (each also from its environment variable, or from --config):\n", strings.TrimSpace(summary))
		fs.VisitAll(func(f *flag.Flag) {
			name, usage := flag.UnquoteUsage(f)
			if name != "" {
				name = " " + name
			}
			fmt.Fprintf(w, "  --%s%s\n    \t%s", f.Name, name, strings.ReplaceAll(usage, "\n", "\n    \t"))
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
				fmt.Fprintf(w, " (default %s)", f.DefValue)
			}
			fmt.Fprintf(w, "\n    \t[%s]\n", EnvName(f.Name))
		})
	}
}
