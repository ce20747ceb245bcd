package collector

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"sync"
	"sync/atomic"

	"github.com/promptrail/promptrail/agent/policy"
	"github.com/promptrail/promptrail/collector/auth"
)

// PolicyVersion is the answer of PUT /v1/policy.
type PolicyVersion struct {
	Version string `json:"version"`
	Rules   int    `json:"rules"`
}

// policyStore keeps the policy agents fetch, as pushed (its bytes), in one
// file of the data directory. Only a policy that compiles is kept.
type policyStore struct {
	path string
	mu   sync.Mutex // serializes pushes
	cur  atomic.Pointer[storedPolicy]
}

type storedPolicy struct {
	raw     []byte
	version string
	rules   int
}

// openPolicyStore loads the policy pushed last, if any.
func openPolicyStore(path string) (*policyStore, error) {
	s := &policyStore{path: path}
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("collector: policy: %w", err)
	}
	p, err := policy.Parse(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("collector: stored policy %s: %w", path, err)
	}
	s.cur.Store(&storedPolicy{raw: raw, version: p.Version(), rules: len(p.Rules())})
	return s, nil
}

// push replaces the policy with raw if it compiles; the file is replaced
// whole (written aside, synced, renamed), never left half-written.
func (s *policyStore) push(raw []byte) (*storedPolicy, error) {
	p, err := policy.Parse(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	sp := &storedPolicy{raw: raw, version: p.Version(), rules: len(p.Rules())}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := policy.SaveFile(s.path, raw); err != nil {
		return nil, err
	}
	s.cur.Store(sp)
	return sp, nil
}

// getPolicy answers GET /v1/policy: the policy as pushed, its version as
// the ETag; 304 to a conditional GET of the version in force.
func (a *api) getPolicy(w http.ResponseWriter, r *http.Request, _ auth.Principal) {
	sp := a.policy.cur.Load()
	if sp == nil {
		writeError(w, http.StatusNotFound, "no_policy", "no policy has been pushed to this collector (promptrail policy push FILE)")
		return
	}
	etag := `"` + sp.version + `"`
	w.Header().Set("ETag", etag)
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/yaml")
	w.WriteHeader(http.StatusOK)
	w.Write(sp.raw)
}

// putPolicy answers PUT /v1/policy (admin): a policy that does not compile
// is refused with the error naming the rule, and the one in force stays.
func (a *api) putPolicy(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, policyMaxBytes+1))
	if err != nil || len(raw) > policyMaxBytes {
		writeError(w, http.StatusRequestEntityTooLarge, "policy_too_large", fmt.Sprintf("a policy file is at most %d bytes", policyMaxBytes))
		return
	}
	sp, err := a.policy.push(raw)
	if err != nil {
		a.log.Warn("policy push refused", "by", p.Name, "err", err)
		writeError(w, http.StatusBadRequest, "policy_invalid", err.Error())
		return
	}
	a.log.Info("policy pushed", "by", p.Name, "version", sp.version, "rules", sp.rules)
	writeJSON(w, http.StatusOK, PolicyVersion{Version: sp.version, Rules: sp.rules})
}

// policyMaxBytes bounds a pushed policy (the agent's limit too).
const policyMaxBytes = 1 << 20
