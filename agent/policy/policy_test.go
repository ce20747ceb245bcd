package policy

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/promptrail/promptrail/internal/testlog"
)

func mustParse(t testing.TB, src string) *Policy {
	t.Helper()
	p, err := Parse(strings.NewReader(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

func exampleInput() Input {
	return Input{
		Workload: Workload{Kind: "pod", Namespace: "web", Labels: map[string]string{"tier": "front"}, UID: 1000, Comm: "python3"},
		Request:  Request{Endpoint: "chat", Method: "POST", Path: "/v1/chat/completions", Model: "o4-mini", Text: "hello", Tokens: 2},
		Findings: map[string]int64{},
		Now:      time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC),
	}
}

func TestDecide(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p := mustParse(t, string(raw))
	cases := []struct {
		name   string
		edit   func(*Input)
		action string
		rule   string
		inMsg  string
	}{
		{"nothing matches: catch-all", func(*Input) {}, Mask, "default", ""},
		{"model blocked in ci", func(in *Input) { in.Workload.Namespace = "ci"; in.Request.Model = "gpt-4.1" }, Block, "no-gpt4-in-ci", "not for CI"},
		{"other model allowed in ci", func(in *Input) { in.Workload.Namespace = "ci" }, Mask, "default", ""},
		{"finding and label", func(in *Input) {
			in.Findings["aws-access-token"] = 2
			in.Workload.Labels["tier"] = "batch"
		}, Block, "no-secrets-to-batch", "AWS"},
		{"finding without label", func(in *Input) { in.Findings["aws-access-token"] = 1 }, Mask, "default", ""},
		{"token estimate", func(in *Input) { in.Request.Tokens = 200000 }, Block, "big-prompts", "100k"},
		{"tool by name", func(in *Input) { in.Request.Tools = []string{"get_weather", "code_interpreter"} }, Block, "code-tools", "interpreter"},
		{"by uid and comm", func(in *Input) { in.Workload.UID = 0; in.Workload.Comm = "curl" }, Allow, "root-curl", ""},
		{"namespace default", func(in *Input) { in.Workload.Namespace = "sandbox" }, Block, "namespace:sandbox", "no LLM access"},
		{"first rule wins over namespace default", func(in *Input) {
			in.Workload.Namespace = "sandbox"
			in.Workload.UID = 0
			in.Workload.Comm = "curl"
		}, Allow, "root-curl", ""},
		// The rule reads labels["tier"]; a workload without the label makes
		// it fail, and a failing rule blocks rather than passes.
		{"evaluation error blocks", func(in *Input) {
			in.Workload.Labels = nil
			in.Findings["aws-access-token"] = 1
		}, Block, "no-secrets-to-batch", "could not be evaluated"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := exampleInput()
			c.edit(&in)
			d := p.Decide(&in)
			if d.Action != c.action || d.Rule != c.rule || !strings.Contains(d.Message, c.inMsg) {
				t.Errorf("Decide = %+v, want action %s rule %s message containing %q", d, c.action, c.rule, c.inMsg)
			}
			if d.Version != p.Version() || !strings.HasPrefix(d.Version, "sha256:") {
				t.Errorf("version %q, want the policy's %q", d.Version, p.Version())
			}
		})
	}
}

func TestDecideNow(t *testing.T) {
	p := mustParse(t, `
rules:
  - name: office-hours
    when: now.getHours("Europe/Paris") < 8
    action: block
    message: outside office hours
default: {action: allow}
`)
	in := exampleInput()
	in.Now = time.Date(2026, 12, 4, 5, 0, 0, 0, time.UTC)
	if d := p.Decide(&in); d.Action != Block || d.Rule != "office-hours" {
		t.Errorf("at 06:00 Paris: %+v, want block", d)
	}
	in.Now = time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	if d := p.Decide(&in); d.Action != Allow || d.Rule != "default" {
		t.Errorf("at 11:00 Paris: %+v, want the default allow", d)
	}
}

func TestParseRefuses(t *testing.T) {
	cases := []struct {
		name, src string
		want      []string // all in the error
	}{
		{"empty", "", []string{"empty"}},
		{"unknown key", "rules:\n  - name: a\n    wen: 'true'\n    action: allow\n", []string{"wen"}},
		{"CEL syntax", "rules:\n  - name: broken\n    when: request.model ==\n    action: block\n", []string{`rule "broken"`, "when:", "Syntax error"}},
		{"unknown field", "rules:\n  - name: typo\n    when: request.modle == 'x'\n    action: block\n", []string{`rule "typo"`, "modle"}},
		{"not a bool", "rules:\n  - name: str\n    when: request.model\n    action: block\n", []string{`rule "str"`, "not a bool"}},
		{"no name", "rules:\n  - when: 'true'\n    action: block\n", []string{"rule 1", "no name"}},
		{"twice", "rules:\n  - {name: a, when: 'true', action: block}\n  - {name: a, when: 'false', action: allow}\n", []string{`rule "a"`, "second rule"}},
		{"no when", "rules:\n  - {name: a, action: block}\n", []string{`rule "a"`, "no when"}},
		{"bad action", "rules:\n  - {name: a, when: 'true', action: deny}\n", []string{`rule "a"`, `"deny"`}},
		{"approver group", "rules:\n  - {name: hold, when: 'true', action: require_approval, approvers: [sec]}\n", []string{`rule "hold"`, `"sec"`, "approver or admin"}},
		{"grant kind", "rules:\n  - {name: hold, when: 'true', action: require_approval, grant: {kind: forever}}\n", []string{`rule "hold"`, `"forever"`, "once or window"}},
		{"approvals", "rules:\n  - {name: hold, when: 'true', action: require_approval, approvals: 9}\n", []string{`rule "hold"`, "1 to 5"}},
		{"approvals on allow", "rules:\n  - {name: a, when: 'true', action: allow, approvals: 2}\n", []string{`rule "a"`, "approvals"}},
		{"grant minutes", "rules:\n  - {name: hold, when: 'true', action: require_approval, grant: {minutes: 5000}}\n", []string{`rule "hold"`, "1 to 1440"}},
		{"approvers on block", "rules:\n  - {name: a, when: 'true', action: block, approvers: [sec]}\n", []string{`rule "a"`, "approvers"}},
		{"namespace action", "rules: []\nnamespaces:\n  ci: {action: nope}\n", []string{`"ci"`, `"nope"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(c.src))
			if err == nil {
				t.Fatal("Parse accepted it")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestRequireApprovalCarriesItsApproversAndGrant(t *testing.T) {
	cases := []struct {
		name, grant string
		minutes     int
		kind        string
		approvals   int
	}{
		{"once", "grant: {kind: once, minutes: 5}", 5, GrantOnce, 1},
		{"kind omitted", "grant: {minutes: 7}", 7, GrantOnce, 1},
		{"no grant", "message: m", DefaultGrantMinutes, GrantOnce, 1},
		{"two approvers", "approvals: 2", DefaultGrantMinutes, GrantOnce, 2},
		{"window", "grant: {kind: window, minutes: 30}", 30, GrantWindow, 1},
		{"window, default minutes", "grant: {kind: window}", DefaultGrantMinutes, GrantWindow, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := mustParse(t, "rules:\n  - {name: hold, when: 'true', action: require_approval, approvers: [admin], "+c.grant+"}\n"+
				"  - {name: never, when: 'false', action: require_approval}\n")
			var in Input
			d := p.Decide(&in)
			if d.Action != RequireApproval || d.Rule != "hold" || d.GrantMinutes != c.minutes || d.GrantKind != c.kind || d.Approvals != c.approvals ||
				len(d.Approvers) != 1 || d.Approvers[0] != "admin" {
				t.Fatalf("decision %+v, want require_approval by hold, admin, %d minutes, %s", d, c.minutes, c.kind)
			}
		})
	}
}

// The version is the content's: comments, layout and key order do not
// change it, a changed rule does.
func TestVersion(t *testing.T) {
	a := mustParse(t, "rules:\n  - {name: a, when: 'true', action: block, message: m}\n")
	b := mustParse(t, "# a comment\nrules:\n  - action: block\n    message: m\n    when: 'true'\n    name: a\n")
	c := mustParse(t, "rules:\n  - {name: a, when: 'true', action: block, message: other}\n")
	if a.Version() != b.Version() {
		t.Errorf("same policy, versions %s and %s", a.Version(), b.Version())
	}
	if a.Version() == c.Version() {
		t.Errorf("changed message, same version %s", a.Version())
	}
}

func TestReloadKeepsLastGood(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("rules:\n  - {name: a, when: 'true', action: block}\n")
	c, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	v1 := c.Policy().Version()
	if changed, err := c.Reload(); changed || err != nil {
		t.Errorf("unchanged file: Reload = %v, %v", changed, err)
	}
	write("rules:\n  - {name: b, when: 'request.nope', action: block}\n")
	if _, err := c.Reload(); err == nil || !strings.Contains(err.Error(), `rule "b"`) {
		t.Errorf("broken file: Reload error %v, want one naming rule b", err)
	}
	in := exampleInput()
	if d := c.Decide(&in); d.Rule != "a" || d.Version != v1 {
		t.Errorf("after a broken reload: %+v, want rule a of %s", d, v1)
	}
	write("rules:\n  - {name: c, when: 'true', action: allow}\n")
	if changed, err := c.Reload(); !changed || err != nil {
		t.Fatalf("fixed file: Reload = %v, %v", changed, err)
	}
	if d := c.Decide(&in); d.Rule != "c" || d.Version == v1 {
		t.Errorf("after a good reload: %+v", d)
	}
}

func TestOpenRefusesBrokenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte("rules:\n  - {name: x, when: '1 +', action: block}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, nil); err == nil {
		t.Fatal("Open accepted a broken policy")
	}
}

// The README's example policy loads.
func TestREADMEExampleLoads(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(raw), "\n## Policy\n")
	if !ok {
		t.Fatal("README has no Policy section")
	}
	_, block, ok := strings.Cut(sec, "```yaml\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("README's Policy section has no yaml block")
	}
	p := mustParse(t, block)
	in := exampleInput()
	in.Workload.Namespace, in.Request.Model = "ci", "gpt-4.1-mini"
	if d := p.Decide(&in); d.Rule != "no-gpt41-in-ci" || d.Action != Block {
		t.Errorf("README policy: %+v", d)
	}
	in = exampleInput()
	in.Request.Model = "gpt-3.5-turbo"
	if d := p.Decide(&in); d.Rule != "only-known-models" {
		t.Errorf("README policy, unknown model: %+v", d)
	}
}

// Watch picks up a changed file and logs its version; a broken one is
// logged and changes nothing.
func TestWatchReloadsAndLogs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte("rules:\n  - {name: a, when: 'true', action: block}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs testlog.Buffer
	c, err := Open(path, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Watch(ctx, 5*time.Millisecond); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	in := exampleInput()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; logs:\n%s", what, logs.String())
			}
		}
	}
	if err := os.WriteFile(path, []byte("rules:\n  - {name: b, when: 'nope', action: block}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor("the refusal", func() bool { return strings.Contains(logs.String(), "policy refused") })
	if d := c.Decide(&in); d.Rule != "a" {
		t.Errorf("after a broken file: rule %s, want a", d.Rule)
	}
	if err := os.WriteFile(path, []byte("rules:\n  - {name: c, when: 'true', action: allow}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor("the new rule", func() bool { return c.Decide(&in).Rule == "c" })
	waitFor("the log line", func() bool {
		return strings.Contains(logs.String(), "policy reloaded") && strings.Contains(logs.String(), c.Policy().Version())
	})
}
