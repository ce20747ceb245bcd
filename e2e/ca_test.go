package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/promptrail/promptrail/internal/fakeopenai"
	"github.com/promptrail/promptrail/internal/kerneltest"
)

// TestCARotationAddsATargetWithoutBreakingClients walks the README's CA
// rotation with curl (OpenSSL) as the client: a target outside the node
// CA's name constraints stops the agent with a message, and a rotation
// whose overlap bundle clients hold adds it without a failed request.
func TestCARotationAddsATargetWithoutBreakingClients(t *testing.T) {
	n := newNode(t)
	const fakeAddr = "127.0.7.5"
	fake := fakeopenai.NewTLSServer(t, fakeopenai.Config{Reply: reply, CertHosts: []string{"api.mistral.ai"}}, fakeAddr+":443")
	dir := t.TempDir()
	upCA, hosts := filepath.Join(dir, "upstream-ca.pem"), filepath.Join(dir, "hosts")
	os.WriteFile(upCA, fake.CAPEM, 0o644)
	os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"+fakeAddr+" api.openai.com api.mistral.ai\n"), 0o644)
	withHosts := privateHosts(hosts)
	agentArgs := func(targets ...string) []string {
		args := n.agentArgs("--fail-mode", "fail-open", "--capture-dns=false", "--target-cidr", fakeAddr+"/32",
			"--upstream-ca", upCA, "--proxy-listen", "127.0.0.1:15700", "--metrics-listen", "")
		for _, tg := range targets {
			args = append(args, "--target", tg)
		}
		return args
	}
	// curl asks host through the agent, trusting bundle, and reports
	// whether it got the fake's answer.
	curl := func(host, bundle string) (bool, string) {
		argv := withHosts("curl", "-sS", "--fail-with-body", "--max-time", "20", "--cacert", bundle,
			"-H", "Content-Type: application/json", "-d", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`,
			"https://"+host+"/v1/chat/completions")
		c := exec.Command(argv[0], argv[1:]...)
		kerneltest.CommandInCgroup(t, n.client, c)
		out, err := c.CombinedOutput()
		return err == nil && strings.Contains(string(out), reply), string(out)
	}
	ca := func(args ...string) string {
		out, err := exec.Command(promptrail(t), append([]string{"ca", "--data-dir", n.dataDir, "--quiet"}, args...)...).Output()
		if err != nil {
			t.Fatalf("promptrail ca %s: %v", strings.Join(args, " "), err)
		}
		return string(out)
	}
	save := func(name, pem string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(pem), 0o644)
		return p
	}

	a := startAgentWrapped(t, n.agent, withHosts, agentArgs("api.openai.com")...)
	first := save("first.crt", ca())
	if ok, out := curl("api.openai.com", first); !ok {
		t.Fatalf("curl with the first CA: %s", out)
	}
	a.stop(syscall.SIGTERM)

	// A target the CA may not sign: the agent says so and does not start.
	argv := withHosts(append([]string{promptrail(t), "agent"}, agentArgs("api.openai.com", "api.mistral.ai")...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	refused := exec.CommandContext(ctx, argv[0], argv[1:]...)
	kerneltest.CommandInCgroup(t, n.agent, refused)
	if out, err := refused.CombinedOutput(); err == nil || !strings.Contains(string(out), "may not sign the target api.mistral.ai") ||
		!strings.Contains(string(out), "--rotate prepare") {
		t.Fatalf("agent with a target outside its CA: %v\n%s", err, out)
	}

	// prepare: the old CA still signs; clients get the bundle of both.
	bundle := save("bundle.crt", ca("--rotate", "prepare", "--target", "api.openai.com", "--target", "api.mistral.ai"))
	a = startAgentWrapped(t, n.agent, withHosts, agentArgs("api.openai.com")...)
	if ok, out := curl("api.openai.com", bundle); !ok {
		t.Fatalf("curl with the overlap bundle before activate: %s", out)
	}
	a.stop(syscall.SIGTERM)

	// activate and restart with the new target: clients holding the
	// bundle reach both names; the first CA alone is no longer enough.
	ca("--rotate", "activate")
	a = startAgentWrapped(t, n.agent, withHosts, agentArgs("api.openai.com", "api.mistral.ai")...)
	for _, host := range []string{"api.openai.com", "api.mistral.ai"} {
		if ok, out := curl(host, bundle); !ok {
			t.Fatalf("curl %s with the overlap bundle after activate: %s", host, out)
		}
	}
	if ok, _ := curl("api.openai.com", first); ok {
		t.Fatal("after activate the agent still signs with the first CA")
	}

	// retire: the new CA alone.
	pem := ca("--rotate", "retire")
	if strings.Count(pem, "BEGIN CERTIFICATE") != 1 {
		t.Fatalf("after retire the bundle holds:\n%s", pem)
	}
	final := save("final.crt", pem)
	if ok, out := curl("api.mistral.ai", final); !ok {
		t.Fatalf("curl with the new CA alone: %s", out)
	}
}
