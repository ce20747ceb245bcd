package agent

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/promptrail/promptrail/agent/policy"
	"github.com/promptrail/promptrail/collector"
	"github.com/promptrail/promptrail/collector/auth"
	"github.com/promptrail/promptrail/collector/client"
	"github.com/promptrail/promptrail/collector/store"
)

const (
	syncAgentToken = "agent-token-for-policy-sync"
	syncAdminToken = "admin-token-for-policy-sync"
)

func policyCollector(t *testing.T) *httptest.Server {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tok, err := auth.ParseTokens([]byte("agent node-a " + syncAgentToken + "\nadmin ops " + syncAdminToken + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := collector.NewHandler(collector.HandlerConfig{Store: st, Auth: tok, PolicyFile: filepath.Join(t.TempDir(), "policy.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func push(t *testing.T, url, src string) string {
	t.Helper()
	c, err := client.New(url, syncAdminToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.PushPolicy(context.Background(), []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return v.Version
}

func newTestSync(t *testing.T, url, dataDir string) *policySync {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(syncAgentToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return newPolicySync(url, tokenFile, dataDir, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func version(c *policy.Current) string {
	if p := c.Policy(); p != nil {
		return p.Version()
	}
	return ""
}

func TestPolicyFromCollector(t *testing.T) {
	ctx := context.Background()
	srv := policyCollector(t)
	dataDir := t.TempDir()
	s := newTestSync(t, srv.URL, dataDir)
	if err := s.start(ctx); err != nil || s.cur.Policy() != nil {
		t.Fatalf("nothing pushed: %v, policy %q", err, version(s.cur))
	}
	v1 := push(t, srv.URL, "rules:\n  - {name: a, when: 'true', action: block}\n")
	if err := s.fetch(ctx); err != nil || version(s.cur) != v1 {
		t.Fatalf("after a push: %v, version %q, want %s", err, version(s.cur), v1)
	}
	if err := s.fetch(ctx); err != nil || version(s.cur) != v1 {
		t.Fatalf("unchanged (304): %v, version %q", err, version(s.cur))
	}
	v2 := push(t, srv.URL, "rules:\n  - {name: b, when: 'true', action: allow}\n")
	if err := s.fetch(ctx); err != nil || version(s.cur) != v2 {
		t.Fatalf("after a second push: %v, version %q, want %s", err, version(s.cur), v2)
	}
	// The collector away: a new agent starts on the cached copy.
	srv.Close()
	again := newTestSync(t, srv.URL, dataDir)
	if err := again.start(ctx); err != nil || version(again.cur) != v2 {
		t.Fatalf("start with the collector away: %v, version %q, want the cached %s", err, version(again.cur), v2)
	}
}

// A policy whose content is not the version the collector names is not
// applied, nor cached.
func TestPolicyFromCollectorVerifiesTheVersion(t *testing.T) {
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"sha256:0000"`)
		io.WriteString(w, "rules:\n  - {name: a, when: 'true', action: allow}\n")
	}))
	t.Cleanup(fake.Close)
	dataDir := t.TempDir()
	s := newTestSync(t, fake.URL, dataDir)
	if err := s.fetch(context.Background()); err == nil || !strings.Contains(err.Error(), "not sha256:0000") {
		t.Fatalf("fetch: %v, want a version mismatch", err)
	}
	if s.cur.Policy() != nil {
		t.Error("a mismatched policy was put in force")
	}
	if _, err := os.Stat(filepath.Join(dataDir, "policy.yaml")); err == nil {
		t.Error("a mismatched policy was cached")
	}
}
