package policy

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/promptrail/promptrail/internal/every"
)

// Current is the policy in force, replaced whole on reload. A policy that
// fails to load never replaces a good one. Policy is nil until one is set
// on a Current made by Empty.
type Current struct {
	path   string
	logger *slog.Logger
	p      atomic.Pointer[Policy]
	raw    []byte // the file as last read (Watch's goroutine only)
}

// Open loads the policy file at path; it fails when the file does not
// load: an agent told to apply a policy does not start without one.
func Open(path string, logger *slog.Logger) (*Current, error) {
	c := &Current{path: path, logger: logger}
	if _, err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Empty returns a Current without a policy, for one that Set provides
// (fetched from the collector).
func Empty() *Current { return &Current{} }

// Set puts p in force; it reports whether that changed the version.
func (c *Current) Set(p *Policy) bool {
	old := c.p.Swap(p)
	return old == nil || old.Version() != p.Version()
}

// Policy is the policy in force, nil if none.
func (c *Current) Policy() *Policy { return c.p.Load() }

// Decide decides by the policy in force.
func (c *Current) Decide(in *Input) Decision { return c.p.Load().Decide(in) }

// Reload reads the file again; it reports whether the policy changed. On
// an error the policy in force stays.
func (c *Current) Reload() (bool, error) {
	raw, err := os.ReadFile(c.path)
	if err != nil {
		return false, fmt.Errorf("policy %s: %w", c.path, err)
	}
	if c.p.Load() != nil && bytes.Equal(raw, c.raw) {
		return false, nil
	}
	c.raw = raw
	p, err := Parse(bytes.NewReader(raw))
	if err != nil {
		return false, fmt.Errorf("policy %s: %w", c.path, err)
	}
	return c.Set(p), nil
}

// Watch reloads the file every period until ctx ends, logging each new
// version and each refused one (the last good policy staying in force).
// Polling, not inotify: a ConfigMap's file is replaced through a symlink
// swap that inotify on the file does not see.
func (c *Current) Watch(ctx context.Context, period time.Duration) {
	every.Run(ctx, period, func(context.Context) {
		changed, err := c.Reload()
		switch {
		case err != nil:
			c.logger.Error("policy refused; the last good policy stays in force", "err", err, "version", c.Policy().Version())
		case changed:
			p := c.Policy()
			c.logger.Info("policy reloaded", "path", c.path, "version", p.Version(), "rules", len(p.rules))
		}
	})
}
