package e2e

import (
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/collector/store"
	"github.com/promptrail/promptrail/internal/fakeopenai"
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

// maskNodeAddrs are this file's own addresses (127.0.3.0/24, ports
// 153xx), so that it can run while other e2e tests do.
var maskNodeAddrs = tlsNodeAddrs{upstream: "127.0.3.5", proxy: "127.0.0.1:15300", explicit: "127.0.0.1:15301"}

// TestSecretsAreMaskedWhereverTheyTravel sends secrets with curl, through
// the real agent, in every place of a request the proxy masks, and in
// encoded responses, and checks what reached the upstream, what curl got
// and what the collector stores.
func TestSecretsAreMaskedWhereverTheyTravel(t *testing.T) {
	n := newTLSNodeAt(t, maskNodeAddrs)
	awsKey := "AKIA" + randomFrom("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)
	ghToken := "ghp_" + randomFrom("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", 36)
	password := "Pw9!" + randomFrom("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", 14) + "#4"
	apiKey := "sk-e2e-" + randomFrom("abcdefghijklmnopqrstuvwxyz0123456789", 32)
	b64 := "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	azureKey := randomFrom(b64, 86) + "=="
	awsSecret := randomFrom(b64, 40)
	secretsSent := []string{awsKey, ghToken, password, azureKey, awsSecret}
	dir := t.TempDir()
	curl := func(args ...string) []string {
		return append([]string{"curl", "-sS", "--cacert", n.agentCA, "-H", "Authorization: Bearer " + apiKey}, args...)
	}
	chat := func(content string) string {
		b, _ := json.Marshal(map[string]any{"model": "gpt-4o-mini", "messages": []map[string]string{{"role": "user", "content": content}}})
		return string(b)
	}

	t.Run("platform credentials pasted as .env", func(t *testing.T) {
		env := "AZURE_STORAGE=DefaultEndpointsProtocol=https;AccountName=orders;AccountKey=" + azureKey +
			";EndpointSuffix=core.windows.net\nAWS_SECRET_ACCESS_KEY=" + awsSecret + "\nDB_PASSWORD=" + password + "\n"
		_, pid := n.run(t, nil, curl("--fail-with-body", "-H", "Content-Type: application/json",
			"-d", chat("e2e-env why does this fail?\n"+env), "https://api.openai.com/v1/chat/completions")...)
		r := n.record(t, ".env", byPID(pid, "/v1/chat/completions"))
		for _, rule := range []string{"azure-storage-account-key", "aws-secret-access-key", "generic-secret-assignment"} {
			checkFinding(t, r, "request", rule)
		}
	})
	t.Run("query string", func(t *testing.T) {
		_, pid := n.run(t, nil, curl("https://api.openai.com/v1/models?tag=e2e-q&api_key="+awsKey)...)
		r := n.record(t, "query", byPID(pid, "/v1/models"))
		if !strings.Contains(r.Request.Path, "api_key=%5BMASKED%3Aaws-access-token%3A") {
			t.Errorf("record path %q", r.Request.Path)
		}
		checkFinding(t, r, "request", "aws-access-token")
	})
	t.Run("JSON object key", func(t *testing.T) {
		body := `{"model":"gpt-4o-mini","metadata":{"` + ghToken + `":"e2e-key"},"messages":[{"role":"user","content":"hi"}]}`
		_, pid := n.run(t, nil, curl("-H", "Content-Type: application/json", "-d", body, "https://api.openai.com/v1/chat/completions")...)
		checkFinding(t, n.record(t, "JSON key", byPID(pid, "/v1/chat/completions")), "request", "github-pat")
	})
	t.Run("multipart field and text file", func(t *testing.T) {
		file := filepath.Join(dir, "notes.env")
		os.WriteFile(file, []byte("DB_PASSWORD="+password+"\n"), 0o644)
		_, pid := n.run(t, nil, curl("-F", "purpose=e2e-mp "+awsKey, "-F", "file=@"+file+";type=text/plain", "https://api.openai.com/v1/files")...)
		r := n.record(t, "multipart", byPID(pid, "/v1/files"))
		checkFinding(t, r, "request", "aws-access-token")
		checkFinding(t, r, "request", "generic-secret-assignment")
	})
	for _, coding := range []string{"gzip", "deflate", "br", "zstd"} {
		t.Run("request body in "+coding, func(t *testing.T) {
			file := filepath.Join(dir, "body."+coding)
			os.WriteFile(file, encodeBody(t, coding, []byte(chat("e2e-"+coding+" push with "+ghToken))), 0o644)
			out, pid := n.run(t, nil, curl("--fail-with-body", "-H", "Content-Type: application/json", "-H", "Content-Encoding: "+coding,
				"--data-binary", "@"+file, "https://api.openai.com/v1/chat/completions")...)
			if !strings.Contains(string(out), `"chat.completion"`) {
				t.Fatalf("curl got %s", out)
			}
			r := n.record(t, coding+" body", byPID(pid, "/v1/chat/completions"))
			if c := r.Request.Messages[0].Content; !strings.HasPrefix(c, "e2e-"+coding+" push with [MASKED:github-pat:") {
				t.Errorf("record prompt %q", c)
			}
		})
	}
	t.Run("compressed bomb", func(t *testing.T) {
		// 40 MiB of prompt in about 40 KB of gzip: over the default
		// --max-request-body of 32 MiB once decoded.
		file := filepath.Join(dir, "bomb.gz")
		os.WriteFile(file, encodeBody(t, "gzip", []byte(chat(strings.Repeat("0", 40<<20)))), 0o644)
		out, pid := n.run(t, nil, curl("-w", "\n%{http_code}", "-H", "Content-Type: application/json", "-H", "Content-Encoding: gzip",
			"--data-binary", "@"+file, "https://api.openai.com/v1/chat/completions")...)
		if !strings.HasSuffix(string(out), "\n413") || !strings.Contains(string(out), "promptrail_request_too_large") {
			t.Fatalf("curl got %s", out)
		}
		r := n.record(t, "bomb", byPID(pid, "/v1/chat/completions"))
		if r.Response == nil || r.Response.Status != 413 || r.Decision.Action != "reject" {
			t.Errorf("record of the bomb: response %+v decision %+v", r.Response, r.Decision)
		}
	})
	for _, coding := range []string{"gzip", "deflate", "br", "zstd"} {
		for _, stream := range []bool{false, true} {
			name := "response in " + coding
			body := chat("e2e response")
			if stream {
				name += ", streamed"
				body = strings.Replace(body, `"model"`, `"stream":true,"model"`, 1)
			}
			t.Run(name, func(t *testing.T) {
				out, pid := n.run(t, nil, curl("--fail-with-body", "-N", "--compressed", "-H", "Content-Type: application/json",
					"-H", "X-Fake-Content-Encoding: "+coding, "-H", "X-Fake-Reply: the key is "+awsKey+" ok", "-d", body,
					"https://api.openai.com/v1/chat/completions")...)
				if strings.Contains(string(out), awsKey) || !strings.Contains(string(out), "[MASKED:aws-access-token:") {
					t.Fatalf("curl got %s", out)
				}
				r := n.record(t, name, byPID(pid, "/v1/chat/completions"))
				checkFinding(t, r, "response", "aws-access-token")
			})
		}
	}
	t.Run("command line", func(t *testing.T) {
		// curl's own -H "Authorization: Bearer ..." is the API key the
		// upstream must get; in the record's command line it is masked.
		_, pid := n.run(t, nil, curl("https://api.openai.com/v1/models")...)
		r := n.record(t, "command line", byPID(pid, "/v1/models"))
		if strings.Contains(r.Workload.Cmdline, apiKey) || !strings.Contains(r.Workload.Cmdline, "[MASKED:authorization-header:") {
			t.Errorf("record cmdline %q", r.Workload.Cmdline)
		}
		checkFinding(t, r, "workload", "authorization-header")
	})

	for _, r := range n.fake.Server.Requests() {
		seen := string(r.Body) + r.RawQuery + r.Header.Get("Content-Encoding")
		for _, s := range secretsSent {
			if strings.Contains(seen, s) {
				t.Errorf("the upstream received a secret in %s %s: %q", r.Method, r.Path, seen)
			}
		}
		if r.Header.Get("Content-Encoding") != "" || r.Header.Get("Authorization") != "Bearer "+apiKey {
			t.Errorf("upstream headers: Content-Encoding %q, Authorization %q", r.Header.Get("Content-Encoding"), r.Header.Get("Authorization"))
		}
	}
	raw, err := json.Marshal(n.collector.all(t, store.Filter{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range append(secretsSent, apiKey) {
		if strings.Contains(string(raw), s) {
			t.Errorf("the collector's records hold a secret: %q", s)
		}
	}
}

// encodeBody encodes b with a content coding, as a client that compresses
// its requests does.
func encodeBody(t *testing.T, coding string, b []byte) []byte {
	t.Helper()
	out, err := fakeopenai.Encode(coding, b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
