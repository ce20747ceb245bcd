package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/internal/fakeopenai"
	"github.com/promptrail/promptrail/internal/kerneltest"
)

// TestRunIsTheWholeProductOnOneHost runs the README's main job, `promptrail
// run`, and then its query command as a user would: the embedded
// collector gets the record and `promptrail query` finds it with the
// reader token that run wrote.
func TestRunIsTheWholeProductOnOneHost(t *testing.T) {
	n := newNode(t)
	const fakeAddr = "127.0.1.9"
	fake := fakeopenai.NewTLSServer(t, fakeopenai.Config{Reply: reply}, fakeAddr+":443")
	dir := t.TempDir()
	upCA := filepath.Join(dir, "upstream-ca.pem")
	hosts := filepath.Join(dir, "hosts")
	os.WriteFile(upCA, fake.CAPEM, 0o644)
	os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"+fakeAddr+" api.openai.com\n"), 0o644)
	withHosts := privateHosts(hosts)
	collectorAddr := freeAddr(t)

	argv := withHosts(promptrail(t), "run", "--log-format", "json", "--capture-dns=false", "--metrics-listen", "",
		"--cgroup-root", n.root, "--pin-path", n.pinPath, "--data-dir", n.dataDir, "--resolv-conf", n.resolvConf,
		"--target-cidr", fakeAddr+"/32", "--upstream-ca", upCA, "--proxy-listen", "127.0.0.1:15130",
		"--collector-listen", collectorAddr, "--ship-interval", "100ms")
	run := exec.Command(argv[0], argv[1:]...)
	a := startProc(t, n.agent, run)
	a.waitLog(t, "agent running", func(map[string]any) bool { return true })

	prompt := "from the main job " + randomFrom("abcdefghij", 8)
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + prompt + `"}]}`
	curl := withHosts("curl", "-sS", "--fail-with-body", "--cacert", filepath.Join(n.dataDir, "ca.crt"),
		"-H", "Content-Type: application/json", "-d", body, "https://api.openai.com/v1/chat/completions")
	c := exec.Command(curl[0], curl[1:]...)
	kerneltest.CommandInCgroup(t, n.client, c)
	if out, err := c.CombinedOutput(); err != nil || !strings.Contains(string(out), reply) {
		t.Fatalf("curl through promptrail run: %v: %s", err, out)
	}

	tokenFile := filepath.Join(n.dataDir, "reader.token")
	var found bool
	waitFor(t, "promptrail query to list the record", func() bool {
		out, err := exec.Command(promptrail(t), "query", "--collector", "http://"+collectorAddr, "--token-file", tokenFile,
			"--jsonl", "--q", prompt).CombinedOutput()
		if err != nil {
			t.Fatalf("promptrail query: %v: %s", err, out)
		}
		var r audit.Record
		if len(out) > 0 && json.Unmarshal(out, &r) == nil && r.Request.Messages[0].Content == prompt {
			found = r.Seq > 0 && r.Hash != "" && r.Workload.Kind != ""
		}
		return found
	})
	out, err := exec.Command(promptrail(t), "verify", "--collector", "http://"+collectorAddr, "--token-file", tokenFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OK:") {
		t.Fatalf("promptrail verify: %v: %s", err, out)
	}
}
