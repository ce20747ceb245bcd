package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/internal/kerneltest"
)

// budgetAddrs are this file's addresses (127.0.5.0/24, ports 15500-15549).
var budgetAddrs = tlsNodeAddrs{upstream: "127.0.5.5", proxy: "127.0.5.1:15500", explicit: "127.0.5.1:15501"}

// inflightCap is the agent's --max-inflight-bytes in these tests.
const inflightCap = 128 << 20

// connCap is the agent's --max-conns-per-workload in these tests.
const connCap = 64

// rssOverhead is what the agent's resident memory may grow beyond
// inflightCap while bodies are in flight: Go's collector lets the heap
// grow to twice what is live (GOGC=100) before it collects, so garbage of
// bodies already answered may sit next to the live ones (another
// inflightCap), plus 64 MiB for TLS, HTTP/2, record and spool buffers.
const rssOverhead = inflightCap + 64<<20

// curlResult is what a curl run reports: the status and body of its
// response, how long it took, or why it failed.
type curlResult struct {
	status int
	body   string
	took   time.Duration
	err    error
}

// curlPost prepares curl, in cgroup, to post the file body to the chat
// completions endpoint, with extra curl flags; run runs it.
func (n *tlsNode) curlPost(t *testing.T, cgroup, body string, extra ...string) (run func() curlResult) {
	t.Helper()
	argv := append([]string{"curl", "-sS", "--max-time", "60", "--cacert", n.agentCA, "-H", "Content-Type: application/json",
		"-H", "Authorization: Bearer sk-test-not-a-real-key", "-H", "Expect:", "--data-binary", "@" + body,
		"-w", "\n%{http_code}"}, extra...)
	argv = n.withHost(append(argv, "https://api.openai.com/v1/chat/completions")...)
	cmd := kerneltest.CommandInCgroup(t, cgroup, exec.Command(argv[0], argv[1:]...))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	return func() curlResult {
		start := time.Now()
		err := cmd.Run()
		res := curlResult{took: time.Since(start)}
		out := strings.TrimSpace(stdout.String())
		i := strings.LastIndexByte(out, '\n')
		if err != nil || i < 0 {
			res.err = fmt.Errorf("curl: %v: %s %s", err, out, stderr.String())
			return res
		}
		res.body = out[:i]
		res.status, res.err = strconv.Atoi(out[i+1:])
		return res
	}
}

// apiCode is the code of an OpenAI-shaped error body, "" if it is none.
func apiCode(body string) string {
	var e struct {
		Error struct{ Message, Code string }
	}
	if json.Unmarshal([]byte(body), &e) != nil || e.Error.Message == "" {
		return ""
	}
	return e.Error.Code
}

// writeChatBody writes a chat request of about size bytes whose prompt
// repeats unit.
func writeChatBody(t *testing.T, name string, size int, unit string) string {
	t.Helper()
	head, tail := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"`, `"}]}`
	p := filepath.Join(t.TempDir(), name)
	body := head + strings.Repeat(unit, (size-len(head)-len(tail))/len(unit)) + tail
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// procStatus reads a field in kB of /proc/pid/status, in bytes.
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// TestBudgetsKeepOneWorkloadFromStarvingOthers: a hostile workload opens
// more connections than its cap, sends six 30 MB bodies at once, slow
// bodies and 9 MB of keyword bait, while a well-behaved workload in another cgroup keeps
// calling the API with the Go SDK. The agent's memory stays under the
// in-flight cap plus a documented overhead, the slow bodies time out, the
// bait is refused within the mask timeout, each refusal is in the API's
// error shape and on record, and the well-behaved client is served
// throughout (its latency is printed, not asserted).
func TestBudgetsKeepOneWorkloadFromStarvingOthers(t *testing.T) {
	a := budgetAddrs
	a.agentArgs = []string{"--metrics-listen", "127.0.5.1:15502", "--max-inflight-bytes", strconv.Itoa(inflightCap),
		"--body-read-timeout", "10s", "--mask-timeout", "1s", "--max-conns-per-workload", strconv.Itoa(connCap)}
	n := newTLSNodeAt(t, a)
	polite := kerneltest.NewCgroupAt(t, n.root, "polite")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	big := writeChatBody(t, "big.json", 30<<20, "plain words of a long document ")
	slow := writeChatBody(t, "slow.json", 1<<20, "plain words of a long document ")
	bait := writeChatBody(t, "bait.json", 9<<20, "api_api=aaaaaaaaaaaaaaaaa token_token=aaaaaaaaaaaaaaaaa secret_secret=aaaaaaaaaaaaaaaaa ")

	pid := n.agentP.cmd.Process.Pid
	baseline := procStatus(t, pid, "VmRSS")
	_, waitPolite := n.startClientIn(t, polite, []string{envGoClient + "=many", envCount + "=100", envPace + "=100ms",
		envPrompt + "=polite", "SSL_CERT_FILE=" + n.agentCA}, self)

	type hostile struct {
		kind string
		res  curlResult
	}
	// 100 connections that send nothing: those over the cap are closed at
	// once, the others only by the 10s ClientHello timeout.
	held := kerneltest.RunHelper(t, n.client, nil, "hold-conns", a.upstream+":443", "100", "1s")
	t.Logf("100 silent connections from one workload: %d held, %s", held.OK, held.Reply)
	if held.Err != "" || held.OK != connCap {
		t.Errorf("silent connections: %d held (%s, %s), want the cap of %d", held.OK, held.Reply, held.Err, connCap)
	}

	type run struct {
		kind, body string
		n          int
		extra      []string
	}
	var (
		mu  sync.Mutex
		got []hostile
	)
	// Two phases: the large bodies alone (slow bodies holding buffers
	// would leave none of them room), then slow bodies and bait.
	for _, phase := range [][]run{
		{{"30 MB body", big, 6, nil}},
		{{"slow body", slow, 20, []string{"--limit-rate", "16k"}}, {"keyword bait", bait, 1, nil}},
	} {
		var wg sync.WaitGroup
		for _, r := range phase {
			for range r.n {
				run := n.curlPost(t, n.client, r.body, r.extra...)
				wg.Go(func() {
					res := run()
					mu.Lock()
					got = append(got, hostile{r.kind, res})
					mu.Unlock()
				})
			}
		}
		wg.Wait()
	}
	peak := procStatus(t, pid, "VmHWM")
	res := waitPolite()

	t.Logf("agent RSS: %d MiB before, peak %d MiB (cap %d MiB + overhead %d MiB)", baseline>>20, peak>>20, inflightCap>>20, rssOverhead>>20)
	if peak-baseline > inflightCap+rssOverhead {
		t.Errorf("the agent grew by %d MiB, over the in-flight cap and its overhead (%d MiB)", (peak-baseline)>>20, (inflightCap+rssOverhead)>>20)
	}
	counts := map[string]int{}
	for _, h := range got {
		code := apiCode(h.res.body)
		counts[fmt.Sprintf("%s: %d %s", h.kind, h.res.status, code)]++
		if h.res.err != nil {
			t.Errorf("%s: %v", h.kind, h.res.err)
			continue
		}
		ok := false
		switch h.kind {
		case "30 MB body":
			ok = h.res.status == 200 || h.res.status == 503 && code == "promptrail_memory_budget"
		case "slow body":
			// Its buffer is reserved before it is read: while the large
			// bodies hold the budget, it may be refused for that instead.
			ok = h.res.status == 408 && code == "promptrail_body_timeout" || h.res.status == 503 && code == "promptrail_memory_budget"
		case "keyword bait":
			ok = h.res.status == 413 && code == "promptrail_mask_budget"
			t.Logf("keyword bait refused after %v (mask timeout 1s)", h.res.took)
		}
		if !ok {
			t.Errorf("%s: got %d %.200s", h.kind, h.res.status, h.res.body)
		}
	}
	t.Logf("hostile outcomes: %v", counts)

	if counts["30 MB body: 200 "] == 0 {
		t.Error("no 30 MB body was served: the budget refused them all")
	}
	if res.Error != "" || res.Text != "ok 100 failed 0" {
		t.Errorf("the well-behaved client was not served throughout: %s (%s)", res.Text, res.Error)
	}
	lat := slices.Sorted(slices.Values(res.LatenciesMS))
	if len(lat) > 0 {
		t.Logf("well-behaved client latency: p50 %.1f ms, p90 %.1f ms, max %.1f ms over %d requests",
			lat[len(lat)/2], lat[len(lat)*9/10], lat[len(lat)-1], len(lat))
	}

	for status, what := range map[int]string{408: "body timeout", 413: "mask budget"} {
		r := n.record(t, what, func(r *audit.Record) bool {
			return r.Decision.Action == "reject" && r.Response != nil && r.Response.Status == status
		})
		if !strings.Contains(r.Error, "promptrail:") || r.Request.Body != "" {
			t.Errorf("%s record: error %q, %d bytes of an unmasked body kept", what, r.Error, len(r.Request.Body))
		}
	}
	// Every refusal is counted by its code on /metrics.
	metrics := budgetMetrics(t, "http://127.0.5.1:15502/metrics")
	t.Logf("budget refusals on /metrics: %v", metrics)
	for code, atLeast := range map[string]int{"promptrail_conn_cap": 100 - connCap, "promptrail_body_timeout": counts["slow body: 408 promptrail_body_timeout"],
		"promptrail_mask_budget": 1, "promptrail_memory_budget": counts["30 MB body: 503 promptrail_memory_budget"]} {
		if metrics[code] < atLeast {
			t.Errorf("/metrics counts %d refusals with %s, want at least %d", metrics[code], code, atLeast)
		}
	}
	if counts["30 MB body: 503 promptrail_memory_budget"] > 0 {
		n.record(t, "memory budget", func(r *audit.Record) bool {
			return r.Decision.Action == "reject" && r.Response != nil && r.Response.Status == 503
		})
	}
}

// budgetMetrics reads promptrail_agent_budget_refusals_total by code from
// the agent's metrics endpoint.
func budgetMetrics(t *testing.T, url string) map[string]int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), `promptrail_agent_budget_refusals_total{code="`)
		if !ok {
			continue
		}
		code, val, _ := strings.Cut(rest, `"} `)
		v, _ := strconv.ParseFloat(val, 64)
		out[code] = int(v)
	}
	return out
}
