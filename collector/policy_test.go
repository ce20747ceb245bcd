package collector_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/promptrail/promptrail/agent/policy"
	"github.com/promptrail/promptrail/collector"
	"github.com/promptrail/promptrail/collector/auth"
	"github.com/promptrail/promptrail/collector/client"
	"github.com/promptrail/promptrail/collector/store"
)

const admin = "admin-token-0123456789"

// policyServer is a collector whose policy lives in file.
func policyServer(t *testing.T, file string) *httptest.Server {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tok, err := auth.ParseTokens([]byte("agent node-a " + agentA + "\nreader ops " + reader + "\nadmin root " + admin + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := collector.NewHandler(collector.HandlerConfig{Store: st, Auth: tok, PolicyFile: file})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func policyClient(t *testing.T, srv *httptest.Server, token string) *client.Client {
	t.Helper()
	c, err := client.New(srv.URL, token, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPolicyPushAndFetch(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "policy.yaml")
	srv := policyServer(t, file)
	agent := policyClient(t, srv, agentA)
	if _, _, _, err := agent.Policy(ctx, ""); !client.IsStatus(err, http.StatusNotFound) {
		t.Fatalf("no policy yet: %v, want 404", err)
	}
	good := "rules:\n  - {name: a, when: 'request.model == \"x\"', action: block}\n"
	want, err := policy.Parse(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	pushes := []struct {
		name, token, src string
		status           int    // 0: accepted
		inErr            string // in the refusal
	}{
		{"by an agent", agentA, good, http.StatusForbidden, "admin"},
		{"by a reader", reader, good, http.StatusForbidden, "admin"},
		{"by an admin", admin, good, 0, ""},
		{"broken rule", admin, "rules:\n  - {name: broken, when: 'request.nope', action: block}\n", http.StatusBadRequest, `rule "broken"`},
		{"grant kind", admin, "rules:\n  - {name: hold, when: 'true', action: require_approval, grant: {kind: forever}}\n", http.StatusBadRequest, `"forever"`},
	}
	for _, p := range pushes {
		t.Run(p.name, func(t *testing.T) {
			v, err := policyClient(t, srv, p.token).PushPolicy(ctx, []byte(p.src))
			if p.status == 0 {
				if err != nil || v.Version != want.Version() || v.Rules != 1 {
					t.Fatalf("push: %+v, %v; want version %s", v, err, want.Version())
				}
				return
			}
			if !client.IsStatus(err, p.status) || !strings.Contains(err.Error(), p.inErr) {
				t.Fatalf("push: %v, want HTTP %d saying %q", err, p.status, p.inErr)
			}
		})
	}
	// The refused pushes left the good policy in force.
	raw, version, changed, err := agent.Policy(ctx, "")
	if err != nil || !changed || string(raw) != good || version != want.Version() {
		t.Fatalf("fetch: %q %s %v %v", raw, version, changed, err)
	}
	if raw, v, changed, err := agent.Policy(ctx, version); err != nil || changed || raw != nil || v != version {
		t.Errorf("conditional fetch of the version in force: %q %s %v %v, want not modified", raw, v, changed, err)
	}
	// A restarted collector serves the policy pushed last.
	again := policyClient(t, policyServer(t, file), reader)
	if _, v, _, err := again.Policy(ctx, ""); err != nil || v != version {
		t.Errorf("after a restart: version %s, %v; want %s", v, err, version)
	}
}
