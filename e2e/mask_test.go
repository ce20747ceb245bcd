package e2e

import (
	"crypto/rand"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/collector/store"
)

// randomFrom returns n characters drawn from alphabet.
func randomFrom(alphabet string, n int) string {
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func TestSecretsAreMaskedEndToEnd(t *testing.T) {
	n := newTLSNode(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Fresh secrets per run, in the shapes of gitleaks' rules (AWS access
	// key id, GitHub personal access token).
	awsKey := "AKIA" + randomFrom("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)
	ghToken := "ghp_" + randomFrom("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", 36)

	t.Run("secret in a prompt never reaches the upstream", func(t *testing.T) {
		prompt := "Why does my deploy fail? aws_access_key_id = " + awsKey
		out, _ := n.run(t, []string{envGoClient + "=chat", envPrompt + "=" + prompt, "SSL_CERT_FILE=" + n.agentCA}, self)
		var res clientResult
		if err := json.Unmarshal(out, &res); err != nil || res.Error != "" {
			t.Fatalf("client: %s (%v)", out, err)
		}
		for _, r := range n.fake.Server.Requests() {
			if strings.Contains(string(r.Body), awsKey) {
				t.Fatalf("the upstream received the AWS key: %s", r.Body)
			}
		}
		r := n.record(t, "masked prompt", byPID(res.PID, "/v1/chat/completions"))
		if !strings.Contains(r.Request.Messages[0].Content, "[MASKED:aws-access-token:") || r.Decision.Action != "mask" {
			t.Errorf("record: prompt %q decision %q", r.Request.Messages[0].Content, r.Decision.Action)
		}
		checkFinding(t, r, "request", "aws-access-token")
	})

	t.Run("secret in a streamed reply reaches the client masked", func(t *testing.T) {
		reply := "Use the token " + ghToken + " to push, then open the pull request."
		out, _ := n.run(t, []string{envGoClient + "=chat-stream", envFakeReply + "=" + reply, "SSL_CERT_FILE=" + n.agentCA}, self)
		var res clientResult
		if err := json.Unmarshal(out, &res); err != nil || res.Error != "" {
			t.Fatalf("the Go SDK could not parse the masked stream: %s (%v)", out, err)
		}
		if strings.Contains(res.Text, ghToken) || strings.Contains(res.Text, ghToken[:12]) || !strings.Contains(res.Text, "[MASKED:github-pat:") {
			t.Fatalf("client got %q, want the token masked", res.Text)
		}
		if !strings.HasPrefix(res.Text, "Use the token ") || !strings.HasSuffix(res.Text, "then open the pull request.") {
			t.Errorf("the text around the secret changed: %q", res.Text)
		}
		r := n.record(t, "masked reply", byPID(res.PID, "/v1/chat/completions"))
		checkFinding(t, r, "response", "github-pat")
	})

	raw, err := json.Marshal(n.collector.all(t, store.Filter{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{awsKey, ghToken, awsKey[4:], ghToken[4:]} {
		if strings.Contains(string(raw), s) {
			t.Fatalf("the collector's records hold a secret or part of one: %q", s)
		}
	}
}

func checkFinding(t *testing.T, r *audit.Record, where, rule string) {
	t.Helper()
	for _, f := range r.Findings {
		if f.Where == where && f.Rule == rule && len(f.Fingerprint) == 8 && f.Count >= 1 {
			return
		}
	}
	t.Errorf("record has no %s finding of rule %s: %+v", where, rule, r.Findings)
}
