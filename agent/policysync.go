package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/promptrail/promptrail/agent/policy"
	"github.com/promptrail/promptrail/collector/auth"
	"github.com/promptrail/promptrail/collector/client"
	"github.com/promptrail/promptrail/internal/every"
)

// policyFetchEvery is how often the agent asks the collector whether its
// policy changed: a conditional GET, answered 304 while it has not.
const policyFetchEvery = 10 * time.Second

// policySync keeps the policy in force in step with the collector's, and
// a copy of the last one verified in the data directory for a start while
// the collector is away.
type policySync struct {
	collector, tokenFile string
	cache                string
	cur                  *policy.Current
	log                  *slog.Logger
	hc                   *http.Client
}

func newPolicySync(collector, tokenFile, dataDir string, log *slog.Logger) *policySync {
	return &policySync{collector: collector, tokenFile: tokenFile, cache: filepath.Join(dataDir, "policy.yaml"),
		cur: policy.Empty(), log: log, hc: &http.Client{Timeout: 10 * time.Second}}
}

// start puts the cached copy in force, if there is one, then asks the
// collector once; the collector being away is no error: the agent runs on
// the copy, or without a policy until the collector answers.
func (s *policySync) start(ctx context.Context) error {
	raw, err := os.ReadFile(s.cache)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("agent: cached policy: %w", err)
	default:
		p, err := policy.Parse(bytes.NewReader(raw))
		if err != nil {
			// Written only after it compiled: a copy that does not compile
			// now was damaged; the collector's comes next.
			s.log.Error("cached policy does not compile; ignored", "path", s.cache, "err", err)
		} else {
			s.cur.Set(p)
			s.log.Info("policy loaded from the cached copy", "path", s.cache, "version", p.Version(), "rules", len(p.Rules()))
		}
	}
	if err := s.fetch(ctx); err != nil {
		if s.cur.Policy() == nil {
			s.log.Error("no policy yet: the collector's could not be fetched and there is no cached copy; requests are masked, none blocked by policy, until it is", "err", err)
		} else {
			s.log.Warn("collector's policy not fetched; running on the cached copy", "err", err)
		}
	}
	return nil
}

// run fetches every policyFetchEvery until ctx ends.
func (s *policySync) run(ctx context.Context) {
	every.Run(ctx, policyFetchEvery, func(ctx context.Context) {
		if err := s.fetch(ctx); err != nil {
			s.log.Warn("collector's policy not fetched; the policy in force stays", "err", err)
		}
	})
}

// fetch asks the collector for a policy other than the one in force. A
// policy is put in force only if it compiles here and its content hash is
// the version the collector names (the copy is verified), and only then
// cached.
func (s *policySync) fetch(ctx context.Context) error {
	token := ""
	if s.tokenFile != "" {
		t, err := auth.ReadTokenFile(s.tokenFile)
		if err != nil {
			return err
		}
		token = t
	}
	c, err := client.New(s.collector, token, s.hc)
	if err != nil {
		return err
	}
	have := ""
	if p := s.cur.Policy(); p != nil {
		have = p.Version()
	}
	raw, version, changed, err := c.Policy(ctx, have)
	if client.IsStatus(err, http.StatusNotFound) {
		return nil // no policy pushed: nothing to apply yet
	}
	if err != nil || !changed {
		return err
	}
	p, err := policy.Parse(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("the collector's policy %s does not compile on this agent: %w", version, err)
	}
	if p.Version() != version {
		return fmt.Errorf("the collector's policy is version %s by its content, not %s as announced; not applied", p.Version(), version)
	}
	if err := policy.SaveFile(s.cache, raw); err != nil {
		s.log.Warn("policy not cached; a start without the collector will not have it", "err", err)
	}
	if s.cur.Set(p) {
		s.log.Info("policy loaded from the collector", "version", p.Version(), "rules", len(p.Rules()))
	}
	return nil
}
