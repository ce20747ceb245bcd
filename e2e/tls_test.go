package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/internal/fakeopenai"
	"github.com/promptrail/promptrail/internal/kerneltest"
)

const reply = "Hello through promptrail, streamed in pieces."

// tlsNode is a node whose agent decrypts api.openai.com, which resolves,
// for the agent and the clients alike, to a fake upstream on 127.0.1.5.
type tlsNode struct {
	*node
	fake      *fakeopenai.TLSServer
	agentP    *agentProc
	collector *collectorProc
	agentCA   string // the CA clients must trust
	fakeCA    string // the fake upstream's CA
	withHost  func(...string) []string
	addrs     tlsNodeAddrs
}

// tlsNodeAddrs are the addresses a tlsNode uses, so that tests of
// different areas can run side by side without colliding.
type tlsNodeAddrs struct {
	upstream          string // the fake API's IP (port 443)
	proxy, explicit   string // the agent's proxy listeners
	collector         string // the collector's ip:port; "": a free port
	dataDir           string // the agent's data directory; "": a temporary one
	collectorArgs     []string
	collectorDisabled bool     // no collector started
	agentArgs         []string // more flags of every agent start
}

func newTLSNode(t *testing.T) *tlsNode {
	return newTLSNodeAt(t, tlsNodeAddrs{upstream: "127.0.1.5", proxy: "127.0.0.1:15110", explicit: "127.0.0.1:15111"})
}

func newTLSNodeAt(t *testing.T, a tlsNodeAddrs) *tlsNode {
	t.Helper()
	n := &tlsNode{node: newNode(t), addrs: a}
	if a.dataDir != "" {
		n.dataDir = a.dataDir
	}
	n.fake = fakeopenai.NewTLSServer(t, fakeopenai.Config{Reply: reply}, a.upstream+":443")
	dir := t.TempDir()
	n.fakeCA = filepath.Join(dir, "upstream-ca.pem")
	os.WriteFile(n.fakeCA, n.fake.CAPEM, 0o644)
	hosts := filepath.Join(dir, "hosts")
	os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"+a.upstream+" api.openai.com\n"), 0o644)
	n.withHost = privateHosts(hosts)
	if a.collector == "" {
		a.collector = freeAddr(t)
	}
	n.collector = newCollector(t, n.node.agent, a.collector, a.collectorArgs...)
	if !a.collectorDisabled {
		n.collector.start()
	}
	n.agentP = n.startAgent(t)
	n.agentCA = filepath.Join(n.dataDir, "ca.crt")
	return n
}

// startAgent starts the node's agent (again, after a test killed it),
// with extra flags after the node's (the last of a repeated flag wins).
func (n *tlsNode) startAgent(t *testing.T, extra ...string) *agentProc {
	t.Helper()
	args := append(n.agentArgs("--fail-mode", "fail-open", "--capture-dns=false",
		"--target", "api.openai.com:443", "--target-cidr", n.addrs.upstream+"/32", "--upstream-ca", n.fakeCA,
		"--proxy-listen", n.addrs.proxy, "--explicit-proxy-listen", n.addrs.explicit), n.collector.agentArgs()...)
	args = append(args, n.addrs.agentArgs...)
	return startAgentWrapped(t, n.node.agent, n.withHost, append(args, extra...)...)
}

// privateHosts runs a command in its own mount namespace with hosts bind-
// mounted on /etc/hosts, as a pod has its own.
func privateHosts(hosts string) func(...string) []string {
	return func(argv ...string) []string {
		return append([]string{"unshare", "-m", "sh", "-c", `mount --bind "$0" /etc/hosts && exec "$@"`, hosts}, argv...)
	}
}

// run runs a client inside the client cgroup with the private hosts file
// and returns its stdout and pid.
func (n *tlsNode) run(t *testing.T, env []string, argv ...string) ([]byte, int) {
	t.Helper()
	argv = n.withHost(argv...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	kerneltest.CommandInCgroup(t, n.client, cmd)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s%s", strings.Join(argv, " "), err, out, stderr.String())
	}
	return out, cmd.Process.Pid
}

// record waits until the collector holds the record of the exchange that
// match selects: the agent spooled it and shipped it.
func (n *tlsNode) record(t *testing.T, what string, match func(*audit.Record) bool) *audit.Record {
	t.Helper()
	return n.collector.record(t, what, match)
}

// checkRecord asserts what every record of a successful exchange holds.
func checkRecord(t *testing.T, r *audit.Record, cgroup string, prompt, proto string, streamed bool) {
	t.Helper()
	if r.Request.Model != "gpt-4o-mini" || r.Request.Stream != streamed {
		t.Errorf("request model %q stream %v, want gpt-4o-mini stream %v", r.Request.Model, r.Request.Stream, streamed)
	}
	found := strings.Contains(r.Request.Prompt, prompt)
	for _, m := range r.Request.Messages {
		found = found || strings.Contains(m.Content, prompt)
	}
	if !found {
		t.Errorf("record does not hold the prompt %q: %+v", prompt, r.Request.Messages)
	}
	if r.Response == nil || r.Response.Status != 200 || len(r.Response.Choices) == 0 || r.Response.Choices[0].Content != reply {
		t.Fatalf("response in record: %+v, want status 200 and the text %q", r.Response, reply)
	}
	if r.Response.Usage == nil || r.Response.Usage.TotalTokens == 0 {
		t.Errorf("record has no usage (source %q)", r.Response.UsageSource)
	}
	if streamed && (r.Response.UsageSource != "stream" || r.Response.EventCount == 0) {
		t.Errorf("streamed record: usage source %q, %d events; want usage from the stream and its events", r.Response.UsageSource, r.Response.EventCount)
	}
	if r.TTFTMS <= 0 || r.TTFTMS > r.DurationMS || r.Incomplete {
		t.Errorf("ttft %v ms of %v ms (incomplete %v): want a time to first token within the exchange", r.TTFTMS, r.DurationMS, r.Incomplete)
	}
	if r.Workload.CgroupID != uint64(cgroupID(t, cgroup)) {
		t.Errorf("record cgroup id %d, want %v", r.Workload.CgroupID, cgroupID(t, cgroup))
	}
	if r.Connection.Proto != proto || r.Connection.SNI != "api.openai.com" {
		t.Errorf("connection %+v, want %s with SNI api.openai.com", r.Connection, proto)
	}
}

func byPID(pid int, path string) func(*audit.Record) bool {
	return func(r *audit.Record) bool {
		return int(r.Workload.PID) == pid && strings.HasPrefix(r.Request.Path, path)
	}
}

func TestTLSInterceptionWithRealClients(t *testing.T) {
	n := newTLSNode(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}

	t.Run("go-sdk", func(t *testing.T) {
		for _, tt := range []struct {
			mode, path, prompt string
			stream             bool
		}{
			{"chat", "/v1/chat/completions", "Say hello from go", false},
			{"chat-stream", "/v1/chat/completions", "Say hello from go", true},
			{"responses", "/v1/responses", "Respond hello from go", false},
			{"responses-stream", "/v1/responses", "Stream a response from go", true},
		} {
			t.Run(tt.mode, func(t *testing.T) {
				out, _ := n.run(t, []string{envGoClient + "=" + tt.mode, "SSL_CERT_FILE=" + n.agentCA}, self)
				res := decodeClient(t, out)
				r := n.record(t, tt.mode, byPID(res.PID, tt.path))
				checkRecord(t, r, n.client, tt.prompt, "HTTP/2.0", tt.stream)
			})
		}
	})

	t.Run("curl", func(t *testing.T) {
		body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello from curl"}]}`
		stream := `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hello from curl"}]}`
		for _, tt := range []struct {
			name, body, proto string
			stream            bool
		}{
			{"http1.1", body, "HTTP/1.1", false},
			{"http2-stream", stream, "HTTP/2.0", true},
			{"http1.1-stream", stream, "HTTP/1.1", true},
		} {
			t.Run(tt.name, func(t *testing.T) {
				ver := "--http1.1"
				if tt.proto == "HTTP/2.0" {
					ver = "--http2"
				}
				out, pid := n.run(t, nil, "curl", "-sS", "-N", "--fail-with-body", ver, "--cacert", n.agentCA,
					"-H", "Authorization: Bearer sk-test-not-a-real-key", "-H", "Content-Type: application/json",
					"-d", tt.body, "https://api.openai.com/v1/chat/completions")
				if !strings.Contains(string(out), `"object":"chat.completion`) {
					t.Fatalf("curl got %s", out)
				}
				r := n.record(t, "curl "+tt.name, byPID(pid, "/v1/chat/completions"))
				checkRecord(t, r, n.client, "Say hello from curl", tt.proto, tt.stream)
			})
		}
	})

	t.Run("node-sdk", func(t *testing.T) {
		node := nodeClient(t)
		for _, tt := range []struct {
			mode, path, prompt string
			stream             bool
		}{
			{"chat", "/v1/chat/completions", "Say hello from node", false},
			{"chat-stream", "/v1/chat/completions", "Stream hello from node", true},
			{"responses", "/v1/responses", "Respond hello from node", false},
		} {
			t.Run(tt.mode, func(t *testing.T) {
				out, _ := n.run(t, []string{"SSL_CERT_FILE=" + n.agentCA}, append(node, tt.mode)...)
				res := decodeClient(t, out)
				r := n.record(t, "node "+tt.mode, byPID(res.PID, tt.path))
				checkRecord(t, r, n.client, tt.prompt, "HTTP/1.1", tt.stream)
			})
		}
	})

	t.Run("explicit-proxy", func(t *testing.T) {
		out, _ := n.run(t, []string{envGoClient + "=chat-stream", "SSL_CERT_FILE=" + n.agentCA,
			"HTTPS_PROXY=http://127.0.0.1:15111"}, self)
		res := decodeClient(t, out)
		r := n.record(t, "explicit proxy", func(r *audit.Record) bool { return r.Connection.Mode == "explicit" })
		if r.Response == nil || len(r.Response.Choices) == 0 || r.Response.Choices[0].Content != reply || r.Connection.SNI != "api.openai.com" {
			t.Fatalf("explicit-proxy record: %+v", r)
		}
		// No kernel origin here: the agent found the client's process
		// behind its loopback socket.
		if r.Workload.PID != uint32(res.PID) || float64(r.Workload.CgroupID) != cgroupID(t, n.client) || r.Workload.Kind == "unknown" {
			t.Errorf("explicit-proxy workload %+v, want the client (pid %d, cgroup %s)", r.Workload, res.PID, n.client)
		}
	})

	t.Run("other-sni-is-spliced", func(t *testing.T) {
		// Same address, another name: the client must see the upstream's own
		// certificate, which only the upstream's CA verifies.
		out, _ := n.run(t, nil, "curl", "-sS", "--fail-with-body", "--cacert", n.fakeCA, "--resolve", "localhost:443:127.0.1.5",
			"https://localhost/v1/models")
		if !strings.Contains(string(out), "gpt-4o-mini") {
			t.Fatalf("spliced request got %s", out)
		}
		n.agentP.waitLog(t, "connection", func(l map[string]any) bool {
			return l["sni"] == "localhost" && l["rule"] == "other-sni" && l["action"] == "splice"
		})
	})

	if got := len(n.fake.Server.Requests()); got < 10 {
		t.Errorf("the fake upstream saw %d requests, want every client's", got)
	}
}

func decodeClient(t *testing.T, out []byte) clientResult {
	t.Helper()
	var res clientResult
	if err := json.Unmarshal(bytes.TrimSpace(out), &res); err != nil {
		t.Fatalf("client printed %q: %v", out, err)
	}
	if res.Error != "" || res.Text != reply {
		t.Fatalf("client got text %q, error %q; want %q", res.Text, res.Error, reply)
	}
	return res
}

// nodeClient returns the command that runs the Node SDK client; Node and
// the npm package are test dependencies (.ci/run installs them).
func nodeClient(t *testing.T) []string {
	t.Helper()
	node, err := exec.LookPath("node")
	script, _ := filepath.Abs("node/client.mjs")
	_, modErr := os.Stat("node/node_modules/openai/package.json")
	if err != nil || modErr != nil {
		if os.Getenv(kerneltest.EnvE2E) == "1" {
			t.Fatalf("the Node SDK client needs node and `npm ci --prefix e2e/node` (node: %v, module: %v)", err, modErr)
		}
		t.Skip("node or the openai npm package is missing; run npm ci --prefix e2e/node")
	}
	// --use-openssl-ca makes Node trust SSL_CERT_FILE (the agent's CA) only.
	return []string{node, "--use-openssl-ca", script}
}
