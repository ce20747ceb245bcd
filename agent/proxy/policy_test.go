package proxy

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/promptrail/promptrail/agent/policy"
	"github.com/promptrail/promptrail/audit"
)

const testPolicy = `
rules:
  - name: no-gpt41
    when: request.model == "gpt-4.1" && connection.sni == "api.openai.com"
    action: block
    message: gpt-4.1 is not for this host
  - name: secrets-pass-masked
    when: '"github-pat" in findings'
    action: allow
default:
  action: mask
`

func policyFixture(t *testing.T, src string, opts ...func(*DecryptConfig)) (*decryptFixture, *policy.Policy) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cur, err := policy.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return maskFixture(t, func(dc *DecryptConfig) {
		dc.Policy = cur
		for _, o := range opts {
			o(dc)
		}
	}), cur.Policy()
}

func TestPolicyDecidesEachRequest(t *testing.T) {
	f, pol := policyFixture(t, testPolicy)
	cases := []struct {
		name, model, content string
		status               int
		action, rule         string
	}{
		{"blocked model", "gpt-4.1", "tag-blocked", http.StatusForbidden, "block", "no-gpt41"},
		// allow never unmasks: the upstream gets the secret masked.
		{"allowed with a secret", "gpt-4o-mini", "tag-secret " + testToken, http.StatusOK, "mask", "secrets-pass-masked"},
		{"catch-all", "gpt-4o-mini", "tag-plain", http.StatusOK, "allow", "default"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body, _ := json.Marshal(map[string]any{"model": c.model, "messages": []map[string]string{{"role": "user", "content": c.content}}})
			req, _ := http.NewRequest("POST", "https://api.openai.com/v1/chat/completions", strings.NewReader(string(body)))
			req.Header.Set("Content-Type", "application/json")
			status, h, b := f.send(t, req)
			if status != c.status {
				t.Fatalf("status %d (%s), want %d", status, b, c.status)
			}
			tag := strings.Fields(c.content)[0]
			r := f.sink.wait(t, c.name, func(r *audit.Record) bool {
				return r.Response != nil && len(r.Request.Messages) > 0 && strings.HasPrefix(r.Request.Messages[0].Content, tag)
			})
			if r.Decision.Action != c.action || r.Decision.Rule != c.rule || r.Decision.PolicyVersion != pol.Version() {
				t.Errorf("record decision %+v, want %s by %s of %s", r.Decision, c.action, c.rule, pol.Version())
			}
			if c.status == http.StatusForbidden {
				var e struct {
					Error struct{ Message, Type, Code string }
				}
				if err := json.Unmarshal(b, &e); err != nil || e.Error.Code != "promptrail_policy_blocked" ||
					!strings.Contains(e.Error.Message, "gpt-4.1 is not for this host") || h.Get("X-Should-Retry") != "false" {
					t.Errorf("answer %s %v, want the OpenAI error shape, code promptrail_policy_blocked, the rule's message", b, h)
				}
				if r.Decision.Message != "gpt-4.1 is not for this host" {
					t.Errorf("record message %q", r.Decision.Message)
				}
				for _, up := range f.fake.Server.Requests() {
					if strings.Contains(string(up.Body), tag) {
						t.Fatal("the upstream saw a blocked request")
					}
				}
				return
			}
			up := f.upstreamRequest(t, tag)
			if strings.Contains(string(up.Body), testToken) {
				t.Errorf("the upstream got the secret: %s", up.Body)
			}
		})
	}
}

// Before a collector's policy is known, requests pass masked, and their
// records name no policy.
func TestNoPolicyYetPassesMasked(t *testing.T) {
	f := maskFixture(t, func(dc *DecryptConfig) { dc.Policy = policy.Empty() })
	if status, _, b := f.send(t, chatRequest(t, false, nil)); status != http.StatusOK {
		t.Fatalf("status %d %s", status, b)
	}
	r := f.sink.wait(t, "the exchange", func(r *audit.Record) bool { return r.Response != nil })
	if r.Decision.PolicyVersion != "" || r.Decision.Rule != "" {
		t.Errorf("decision %+v, want no policy named", r.Decision)
	}
}
