package kubernetes

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"os"
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
	fake := fakeopenai.NewTLSServer(t, fakeopenai.Config{Reply: chatReply}, net.JoinHostPort(cfg.NodeIP, "443"))
	a.upstreamCA = fake.CAPEM
	d := applyAgent(t, cfg, c, a)
	checkCollector(t, c, d)
	prefix := "rollout " + randomToken(t)
	pod := runChat(t, cfg, c, d, prefix, true)

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
	// Traffic through the new agent, then the outcomes so far; only
	// requests up to the last printed one count (later ones may be
	// in flight).
	time.Sleep(3 * time.Second)
	logs, err := c.Kubectl(ctx, "-n", "default", "logs", "pod/"+pod)
	if err != nil {
		t.Fatal(err)
	}
	ok, refused, firstRefusal := outcomes(t, logs)
	last := 0
	for n := range ok {
		last = max(last, n)
	}
	for _, n := range refused {
		last = max(last, n)
	}
	if len(refused) > 0 {
		t.Logf("refusal window: requests #%d to #%d, %d refused of %d; the first: %s", refused[0], refused[len(refused)-1], len(refused), last, firstRefusal)
	} else {
		t.Logf("no request refused of %d", last)
	}
	if !ok[last] {
		t.Errorf("the last request #%d was refused: traffic did not resume through the new agent", last)
	}

	recorded := recordedCalls(t, c, d, prefix, ok)
	for n := range ok {
		if !recorded[n] {
			t.Errorf("request #%d was answered but has no record", n)
		}
	}
	re := callNumber(prefix)
	for _, r := range fake.Requests() {
		m := re.FindSubmatch(r.Body)
		if m == nil {
			continue
		}
		if n, _ := strconv.Atoi(string(m[1])); n <= last && !recorded[n] {
			t.Errorf("the fake upstream saw request #%d, which has no record", n)
		}
	}
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

// callNumber matches "<prefix> #<n>" and captures n.
func callNumber(prefix string) *regexp.Regexp {
	return regexp.MustCompile(regexp.QuoteMeta(prefix) + ` #([0-9]+)`)
}

// outcomes parses the chat loop's log: the answered requests, and the
// refused ones in order, and the first refusal's line.
func outcomes(t *testing.T, logs string) (map[int]bool, []int, string) {
	t.Helper()
	ok := map[int]bool{}
	var refused []int
	first := ""
	for _, line := range strings.Split(logs, "\n") {
		verb, rest, _ := strings.Cut(line, " ")
		num, _, _ := strings.Cut(rest, ":")
		n, err := strconv.Atoi(num)
		if err != nil || (verb != "ok" && verb != "refused") {
			continue
		}
		if verb == "ok" {
			ok[n] = true
		} else {
			refused = append(refused, n)
			if first == "" {
				first = line
			}
		}
	}
	sort.Ints(refused)
	if len(ok) == 0 {
		t.Fatalf("no answered request in the chat log:\n%s", logs)
	}
	return ok, refused, first
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
