package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/promptrail/promptrail/agent/policy"
)

// policyTestPolicy blocks one model for host workloads run by root (the
// test's client), and lets the rest through masked.
const policyTestPolicy = `
rules:
  - name: no-gpt41-for-root
    when: request.model == "gpt-4.1" && workload.kind != "pod" && workload.uid == 0
    action: block
    message: gpt-4.1 is not for root on this host
default:
  action: mask
`

// policyPinDir is a pin directory of this issue's own (the last --pin-path
// of an agent's flags wins).
func policyPinDir(t *testing.T) string {
	t.Helper()
	return pinDirNamed(t, "promptrail-i12-policy-")
}

// pinDirNamed is a fresh pin directory in bpffs whose name starts with
// prefix, removed with its pins at the end of the test.
func pinDirNamed(t *testing.T, prefix string) string {
	t.Helper()
	pins, err := os.MkdirTemp("/sys/fs/bpf", prefix)
	if err != nil {
		t.Fatalf("creating pin directory in bpffs: %v", err)
	}
	t.Cleanup(func() {
		if err := removePins(pins); err != nil {
			t.Errorf("removing pins: %v", err)
		}
		os.RemoveAll(pins)
	})
	return pins
}

// TestPolicyBlocksAModelForAWorkload runs the official Go SDK from a child
// cgroup through the real agent with --policy: the blocked call gets a
// clear 403, the allowed one the fake's answer, both records name the rule
// and the policy version, and the upstream never sees the blocked request.
// Its addresses are 127.0.8.0/24 and ports 158xx.
func TestPolicyBlocksAModelForAWorkload(t *testing.T) {
	file := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(file, []byte(policyTestPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Parse(strings.NewReader(policyTestPolicy))
	if err != nil {
		t.Fatal(err)
	}
	n := newTLSNodeAt(t, tlsNodeAddrs{upstream: "127.0.8.5", proxy: "127.0.0.1:15850", explicit: "127.0.0.1:15851",
		agentArgs: []string{"--policy", file, "--pin-path", policyPinDir(t)}})
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, model, prompt string
		blocked             bool
		rule                string
	}{
		{"blocked model", "gpt-4.1", "policy-e2e-blocked", true, "no-gpt41-for-root"},
		{"other model", "gpt-4o-mini", "policy-e2e-allowed", false, "default"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, _ := n.run(t, []string{envGoClient + "=chat", envModel + "=" + c.model, envPrompt + "=" + c.prompt, "SSL_CERT_FILE=" + n.agentCA}, self)
			var res clientResult
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatalf("client: %s (%v)", out, err)
			}
			if c.blocked {
				e := res.APIError
				if e == nil || e.Status != 403 || e.Code != "promptrail_policy_blocked" || !strings.Contains(e.Message, "gpt-4.1 is not for root on this host") {
					t.Errorf("the SDK's error: %q %+v, want 403 promptrail_policy_blocked with the rule's message", res.Error, e)
				}
				for _, r := range n.fake.Server.Requests() {
					if strings.Contains(string(r.Body), c.prompt) {
						t.Fatalf("the upstream received the blocked request: %s", r.Body)
					}
				}
			} else if res.Error != "" || res.Text != reply {
				t.Fatalf("allowed call: text %q error %q, want the fake's answer", res.Text, res.Error)
			}
			r := n.record(t, c.name, byPID(res.PID, "/v1/chat/completions"))
			wantAction := "allow"
			if c.blocked {
				wantAction = "block"
			}
			if r.Decision.Action != wantAction || r.Decision.Rule != c.rule || r.Decision.PolicyVersion != pol.Version() {
				t.Errorf("record decision %+v, want %s by rule %s of policy %s", r.Decision, wantAction, c.rule, pol.Version())
			}
		})
	}

	t.Run("hot reload", func(t *testing.T) {
		// A broken edit is refused and logged; the policy in force stays.
		if err := os.WriteFile(file, []byte("rules:\n  - {name: typo, when: 'request.modle == \"x\"', action: block}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		n.agentP.waitLog(t, "policy refused; the last good policy stays in force", func(l map[string]any) bool { return l["version"] == pol.Version() })
		// A good edit is applied, logged with its version: now everything
		// is blocked for root.
		next := strings.Replace(policyTestPolicy, `request.model == "gpt-4.1" && `, "", 1)
		np, err := policy.Parse(strings.NewReader(next))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, []byte(next), 0o644); err != nil {
			t.Fatal(err)
		}
		n.agentP.waitLog(t, "policy reloaded", func(l map[string]any) bool { return l["version"] == np.Version() })
		out, _ := n.run(t, []string{envGoClient + "=chat", envPrompt + "=policy-e2e-after-reload", "SSL_CERT_FILE=" + n.agentCA}, self)
		var res clientResult
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("client: %s (%v)", out, err)
		}
		if e := res.APIError; e == nil || e.Code != "promptrail_policy_blocked" {
			t.Fatalf("after the reload: %q %+v, want blocked", res.Error, e)
		}
		r := n.record(t, "after the reload", byPID(res.PID, "/v1/chat/completions"))
		if r.Decision.PolicyVersion != np.Version() {
			t.Errorf("record version %s, want the reloaded %s", r.Decision.PolicyVersion, np.Version())
		}
	})
}

// TestPolicyFromTheCollector pushes a policy to the real collector with
// the CLI, has an agent with --policy-from-collector apply it, and starts
// the agent again with the collector gone: the cached copy still blocks.
func TestPolicyFromTheCollector(t *testing.T) {
	n := newTLSNodeAt(t, tlsNodeAddrs{upstream: "127.0.8.6", proxy: "127.0.0.1:15852", explicit: "127.0.0.1:15853",
		collectorDisabled: true, agentArgs: []string{"--policy-from-collector", "--pin-path", policyPinDir(t)}})
	dir := t.TempDir()
	adminTok := "admin-token-" + randomFrom("abcdefghij", 20)
	adminFile, good, broken := filepath.Join(dir, "admin.token"), filepath.Join(dir, "good.yaml"), filepath.Join(dir, "broken.yaml")
	tokens, err := os.ReadFile(n.collector.tokensFile)
	if err != nil {
		t.Fatal(err)
	}
	for path, content := range map[string]string{
		n.collector.tokensFile: string(tokens) + "admin ops " + adminTok + "\n",
		adminFile:              adminTok + "\n",
		good:                   policyTestPolicy,
		broken:                 "rules:\n  - {name: typo, when: 'request.modle == \"x\"', action: block}\n",
	} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	n.collector.start()
	cli := func(args ...string) (string, error) {
		out, err := exec.Command(promptrail(t), append([]string{"policy", args[0], "--collector", n.collector.url(), "--token-file", adminFile}, args[1:]...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := cli("push", good); err != nil || !strings.Contains(out, "pushed sha256:") {
		t.Fatalf("policy push: %v %s", err, out)
	}
	// The CLI checks before it sends; the collector refuses too (see
	// TestPolicyPushAndFetch): either way the policy in force stays.
	if out, err := cli("push", broken); err == nil || !strings.Contains(out, `rule "typo"`) {
		t.Fatalf("broken push: %v %s, want a refusal naming the rule", err, out)
	}
	pol, err := policy.Parse(strings.NewReader(policyTestPolicy))
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	blocked := func(t *testing.T) clientResult {
		t.Helper()
		out, _ := n.run(t, []string{envGoClient + "=chat", envModel + "=gpt-4.1", "SSL_CERT_FILE=" + n.agentCA}, self)
		var res clientResult
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("client: %s (%v)", out, err)
		}
		if e := res.APIError; e == nil || e.Status != 403 || e.Code != "promptrail_policy_blocked" {
			t.Fatalf("the SDK's error: %q %+v, want 403 promptrail_policy_blocked", res.Error, e)
		}
		return res
	}
	restart := func(logMsg string) {
		t.Helper()
		n.agentP.stop(syscall.SIGTERM)
		n.agentP = n.startAgent(t)
		n.agentP.waitLog(t, logMsg, func(l map[string]any) bool { return l["version"] == pol.Version() })
	}

	restart("policy loaded from the collector")
	res := blocked(t)
	r := n.record(t, "blocked by the pushed policy", byPID(res.PID, "/v1/chat/completions"))
	if r.Decision.Action != "block" || r.Decision.Rule != "no-gpt41-for-root" || r.Decision.PolicyVersion != pol.Version() {
		t.Errorf("record decision %+v", r.Decision)
	}

	n.collector.kill()
	restart("policy loaded from the cached copy")
	blocked(t)
}
