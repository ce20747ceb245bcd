package kubernetes

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/promptrail/promptrail/collector"
	"github.com/promptrail/promptrail/internal/fakeopenai"
	"github.com/promptrail/promptrail/internal/kubecluster"
)

// A rolling update of the agent DaemonSet (a changed pod template, as a
// new image tag would be) under continuous traffic of the Go SDK
// Deployment: the old agent stops, the new one starts on the same node.
// Every request the SDK saw answered has its record in the collector, the
// rest were refused (an error to the caller), and the fake upstream saw
// no request that has no record: nothing got past the agent unrecorded.
// Fail-closed, the window's requests are refused by the programs the old
// agent left pinned until the new one takes them over. Fail-open, they go
// straight to the upstream; the SDK here trusts only the node CA
// (SSL_CERT_FILE replaces Go's roots), so they fail its TLS check: a
// client that trusts public roots would reach the upstream unrecorded.
func TestAgentRollingUpdateUnderTrafficLeavesNoRequestUnrecorded(t *testing.T) {
	for _, failClosed := range []bool{true, false} {
		pins := pinDir(t, "/sys/fs/bpf/promptrail-e2e-kube-rollout-"+failMode(failClosed))
		onCluster(t, failMode(failClosed), func(t *testing.T, cfg kubecluster.Config, c *kubecluster.Cluster) {
			rollUnderTraffic(t, cfg, c, agentSetup{pins: pins, failClosed: failClosed})
		})
	}
}

func rollUnderTraffic(t *testing.T, cfg kubecluster.Config, c *kubecluster.Cluster, a agentSetup) {
	tr := startTraffic(t, cfg, c, a, "rollout")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kubectl := kubectlIn(t, ctx, c, "promptrail-system")
	start := time.Now()
	kubectl("patch", "daemonset/promptrail-agent", "--type=merge", "-p",
		`{"spec":{"template":{"metadata":{"annotations":{"promptrail.e2e/rollout":"`+randomToken(t)+`"}}}}}`)
	if _, err := c.Kubectl(ctx, "-n", "promptrail-system", "rollout", "status", "daemonset/promptrail-agent", "--timeout=180s"); err != nil {
		out, _ := c.Kubectl(ctx, "-n", "promptrail-system", "describe", "pods", "-l", "app.kubernetes.io/name=promptrail-agent")
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("rolling update done %v after the patch", time.Since(start).Round(time.Millisecond))
	// Traffic through the new agent before the outcomes are read.
	time.Sleep(3 * time.Second)
	o := tr.outcomes(t, ctx)
	if len(o.refused) > 0 {
		t.Logf("refusal window: requests #%d to #%d, %d refused of %d; the first: %s", o.refused[0], o.refused[len(o.refused)-1], len(o.refused), o.last, o.firstRefusal)
	} else {
		t.Logf("no request refused of %d", o.last)
	}
	if !o.ok[o.last] {
		t.Errorf("the last request #%d was refused: traffic did not resume through the new agent", o.last)
	}
	tr.requireRecorded(t, o)
	if a.failClosed {
		// A fail-closed agent leaves its programs pinned when it stops;
		// stop it and unpin them before the cluster goes, as the
		// uninstall DaemonSet would.
		kubectl("delete", "daemonset/promptrail-agent", "--cascade=foreground", "--timeout=90s")
		if err := os.RemoveAll(a.pins); err != nil {
			t.Errorf("removing the fail-closed agent's pins: %v", err)
		}
	}
}

// traffic is the chat Deployment in its loop mode, through an agent
// applied for it, calling a fake upstream on the node.
type traffic struct {
	c      *kubecluster.Cluster
	fake   *fakeopenai.TLSServer
	d      deployment
	prefix string // of every prompt: "<prefix> #<n>"
	pod    string
}

func startTraffic(t *testing.T, cfg kubecluster.Config, c *kubecluster.Cluster, a agentSetup, name string) traffic {
	fake := fakeopenai.NewTLSServer(t, fakeopenai.Config{Reply: chatReply}, net.JoinHostPort(cfg.NodeIP, "443"))
	a.upstreamCA = fake.CAPEM
	d := applyAgent(t, cfg, c, a)
	checkCollector(t, c, d)
	prefix := name + " " + randomToken(t)
	return traffic{c: c, fake: fake, d: d, prefix: prefix, pod: runChat(t, cfg, c, d, prefix, true)}
}

// requireRecorded requires every answered request of o to have its
// record in the collector, and every request up to o.last that the fake
// upstream saw to have one too.
func (tr traffic) requireRecorded(t *testing.T, o outcome) {
	t.Helper()
	recorded := recordedCalls(t, tr.c, tr.d, tr.prefix, o.ok)
	for n := range o.ok {
		if !recorded[n] {
			t.Errorf("request #%d was answered but has no record", n)
		}
	}
	re := callNumber(tr.prefix)
	for _, r := range tr.fake.Requests() {
		m := re.FindSubmatch(r.Body)
		if m == nil {
			continue
		}
		if n, _ := strconv.Atoi(string(m[1])); n <= o.last && !recorded[n] {
			t.Errorf("the fake upstream saw request #%d, which has no record", n)
		}
	}
}

// callNumber matches "<prefix> #<n>" and captures n.
func callNumber(prefix string) *regexp.Regexp {
	return regexp.MustCompile(regexp.QuoteMeta(prefix) + ` #([0-9]+)`)
}

// outcome is what the chat loop printed so far: only requests up to
// the last printed one count (later ones may be in flight).
type outcome struct {
	ok           map[int]bool
	refused      []int // in order
	firstRefusal string
	last         int
}

func (tr traffic) outcomes(t *testing.T, ctx context.Context) outcome {
	t.Helper()
	logs, err := tr.c.Kubectl(ctx, "-n", "default", "logs", "pod/"+tr.pod)
	if err != nil {
		t.Fatal(err)
	}
	o := outcome{ok: map[int]bool{}}
	for _, line := range strings.Split(logs, "\n") {
		verb, rest, _ := strings.Cut(line, " ")
		num, _, _ := strings.Cut(rest, ":")
		n, err := strconv.Atoi(num)
		if err != nil || (verb != "ok" && verb != "refused") {
			continue
		}
		o.last = max(o.last, n)
		if verb == "ok" {
			o.ok[n] = true
			continue
		}
		o.refused = append(o.refused, n)
		if o.firstRefusal == "" {
			o.firstRefusal = line
		}
	}
	sort.Ints(o.refused)
	if len(o.ok) == 0 {
		t.Fatalf("no answered request in the chat log:\n%s", logs)
	}
	return o
}

// recordedCalls reads, through the collector's API, the numbers of the
// calls of prefix it holds, waiting (up to a minute) until it holds all
// of want.
func recordedCalls(t *testing.T, c *kubecluster.Cluster, d deployment, prefix string, want map[int]bool) map[int]bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ip, err := c.Kubectl(ctx, "-n", "promptrail-system", "get", "pod/promptrail-collector-0", "-o", "jsonpath={.status.podIP}")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + net.JoinHostPort(strings.TrimSpace(ip), "7070") + "/v1/records?"
	re := callNumber(prefix)
	for {
		got := map[int]bool{}
		cursor := ""
		for {
			v := url.Values{collector.ParamQ: {prefix}, collector.ParamLimit: {"500"}}
			if cursor != "" {
				v.Set(collector.ParamCursor, cursor)
			}
			status, body := readerGet(t, ctx, base+v.Encode(), d.readerToken)
			var page collector.RecordsPage
			if status != http.StatusOK || json.Unmarshal(body, &page) != nil {
				break
			}
			for _, r := range page.Records {
				b, err := json.Marshal(r.Request)
				if err != nil {
					t.Fatal(err)
				}
				if m := re.FindSubmatch(b); m != nil {
					n, _ := strconv.Atoi(string(m[1]))
					if got[n] {
						t.Errorf("request #%d recorded twice", n)
					}
					got[n] = true
				}
			}
			if cursor = page.NextCursor; cursor == "" {
				break
			}
		}
		missing := 0
		for n := range want {
			if !got[n] {
				missing++
			}
		}
		if missing == 0 || ctx.Err() != nil {
			return got
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// The collector's pod deleted under traffic: the StatefulSet brings it
// back on the same claim. Records it held before are still there, and
// the records of the calls made while it was away arrive after it is
// back, shipped from the agent's spool; the callers notice nothing.
func TestCollectorRestartUnderTrafficKeepsAndCatchesUpRecords(t *testing.T) {
	pins := pinDir(t, "/sys/fs/bpf/promptrail-e2e-kube-collector-restart")
	onCluster(t, "collector restart", func(t *testing.T, cfg kubecluster.Config, c *kubecluster.Cluster) {
		tr := startTraffic(t, cfg, c, agentSetup{pins: pins}, "collector restart")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		kubectl := kubectlIn(t, ctx, c, "promptrail-system")
		time.Sleep(2 * time.Second)
		before := tr.outcomes(t, ctx)
		tr.requireRecorded(t, before)
		uid := kubectl("get", "pod/promptrail-collector-0", "-o", "jsonpath={.metadata.uid}")
		kubectl("delete", "pod/promptrail-collector-0", "--wait=true", "--timeout=90s")
		gone := tr.outcomes(t, ctx)
		start := time.Now()
		for {
			out, _ := c.Kubectl(ctx, "-n", "promptrail-system", "get", "pod/promptrail-collector-0", "-o",
				`jsonpath={.metadata.uid} {.status.conditions[?(@.type=="Ready")].status}`)
			if f := strings.Fields(out); len(f) == 2 && f[0] != uid && f[1] == "True" {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("the collector's pod did not come back Ready: %q", out)
			}
			time.Sleep(200 * time.Millisecond)
		}
		back := tr.outcomes(t, ctx)
		t.Logf("collector back %v after its pod was gone; requests #%d to #%d were sent while it was away", time.Since(start).Round(time.Millisecond), gone.last+1, back.last)
		if back.last <= gone.last {
			t.Fatalf("no request sent while the collector was away (#%d when gone, #%d when back): the test shows nothing", gone.last, back.last)
		}
		if got := kubectl("get", "pvc/data-promptrail-collector-0", "-o", "jsonpath={.status.phase} {.spec.volumeName}"); got != "Bound promptrail-e2e-collector" {
			t.Fatalf("collector claim %q after the restart, want Bound to promptrail-e2e-collector", got)
		}
		time.Sleep(time.Second)
		after := tr.outcomes(t, ctx)
		for n := range before.ok {
			if !after.ok[n] {
				t.Fatalf("request #%d answered before, not in the later log", n)
			}
		}
		if len(after.refused) > 0 {
			t.Errorf("%d requests refused while the collector restarted, the first: %s", len(after.refused), after.firstRefusal)
		}
		tr.requireRecorded(t, after)
		queryAndVerify(t, cfg, c, tr, after)
	})
}

// forwardPort is the host port of the kubectl port-forward to the
// collector Service (15870-15899 are this test file's).
const forwardPort = "15870"

// queryAndVerify runs promptrail query and verify, built from this
// module, against the collector Service through kubectl port-forward, as
// deploy/README.md tells a platform team to: query lists the records of
// every answered request of o, and verify reports the store OK.
func queryAndVerify(t *testing.T, cfg kubecluster.Config, c *kubecluster.Cluster, tr traffic, o outcome) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "promptrail")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/promptrail/promptrail/cmd/promptrail").CombinedOutput(); err != nil {
		t.Fatalf("go build promptrail: %v: %s", err, out)
	}
	tokenFile := filepath.Join(dir, "reader.token")
	if err := os.WriteFile(tokenFile, []byte(tr.d.readerToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pf := exec.CommandContext(ctx, filepath.Join(cfg.Bin, "kubectl"), "--kubeconfig", c.Kubeconfig,
		"-n", "promptrail-system", "port-forward", "--address", "127.0.0.1", "svc/promptrail-collector", forwardPort+":7070")
	stdout, err := pf.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	pf.Stderr = &stderr
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = pf.Process.Kill()
		_ = pf.Wait()
	})
	// kubectl prints "Forwarding from 127.0.0.1:15870 -> 7070" once it
	// listens.
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.Contains(line, "Forwarding from") {
		t.Fatalf("kubectl port-forward: %q, %v: %s", line, err, stderr.String())
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	promptrail := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, bin, append(args, "--collector", "http://127.0.0.1:"+forwardPort, "--token-file", tokenFile)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := promptrail("query", "--q", tr.prefix, "--all", "--limit", "1000", "--jsonl")
	if err != nil {
		t.Fatalf("promptrail query: %v: %s", err, out)
	}
	re := callNumber(tr.prefix)
	listed := map[int]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[1])
			listed[n] = true
		}
	}
	for n := range o.ok {
		if !listed[n] {
			t.Errorf("promptrail query through the port-forward does not list request #%d", n)
		}
	}
	out, err = promptrail("verify")
	if err != nil || !strings.Contains(out, "OK: every record matches") {
		t.Errorf("promptrail verify through the port-forward: %v:\n%s", err, out)
	}
	t.Logf("promptrail query listed %d records, verify: %s", len(listed), strings.TrimSpace(out))
}
