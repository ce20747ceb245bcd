package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/collector/store"
	"github.com/promptrail/promptrail/internal/kerneltest"
)

// Addresses of these tests (127.0.4.0/24, ports 15400-15499), apart from
// other tests'.
const (
	boundsProxyIP = "127.0.4.1"
)

// curlChat posts a chat request with prompt as api.openai.com (the fake
// upstream at upstream) from the client cgroup, and returns the status
// and body of the answer.
func (n *tlsNode) curlChat(t *testing.T, prompt string) (int, string) {
	t.Helper()
	body, err := json.Marshal(map[string]any{"model": "gpt-4o-mini", "messages": []map[string]string{{"role": "user", "content": prompt}}})
	if err != nil {
		t.Fatal(err)
	}
	bodyFile := t.TempDir() + "/body.json"
	if err := os.WriteFile(bodyFile, body, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("curl", "-sS", "--cacert", n.agentCA, "--resolve", "api.openai.com:443:"+n.addrs.upstream,
		"-H", "Authorization: Bearer sk-test-not-a-real-key", "-H", "Content-Type: application/json",
		"--data-binary", "@"+bodyFile, "-w", "\n%{http_code}", "https://api.openai.com/v1/chat/completions")
	kerneltest.CommandInCgroup(t, n.client, cmd)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl: %v: %s", err, out)
	}
	i := bytes.LastIndexByte(out, '\n')
	var status int
	fmt.Sscanf(string(out[i+1:]), "%d", &status)
	return status, string(out[:i])
}

// shipperBackoff bounds how long waiting on the shipper may take: its
// backoff reaches 30s after a long outage.
const shipperBackoff = 45 * time.Second

// metric reads one sample of the agent's /metrics, e.g.
// `promptrail_spool_records{state="rejected"}`; -1 if absent.
func metric(t *testing.T, addr, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			var v float64
			fmt.Sscanf(rest, "%g", &v)
			return v
		}
	}
	return -1
}

func TestLargePromptsAndRefusedRecordsDoNotStopThePipeline(t *testing.T) {
	const metrics = boundsProxyIP + ":15402"
	// The collector refuses records that started more than 5s before
	// they arrive: a record that waited out a collector outage is one.
	n := newTLSNodeAt(t, tlsNodeAddrs{upstream: "127.0.4.5", proxy: boundsProxyIP + ":15400", explicit: boundsProxyIP + ":15401",
		collector: boundsProxyIP + ":15450", collectorArgs: []string{"--max-clock-skew", "5s"},
		agentArgs: []string{"--metrics-listen", metrics}})
	tag := "bounds-" + randomFrom("abcdefghij", 8)

	n.collector.kill()
	stale := tag + " waited out the outage"
	if status, body := n.curlChat(t, stale); status != 200 {
		t.Fatalf("request while the collector is down: %d %s", status, body)
	}
	time.Sleep(7 * time.Second)
	n.collector.start()
	waitForWithin(t, shipperBackoff, "the stale record refused and kept aside", func() bool {
		return metric(t, metrics, `promptrail_spool_records{state="rejected"}`) == 1
	})
	if got := metric(t, metrics, `promptrail_shipper_records_rejected_total{code="clock_skew"}`); got != 1 {
		t.Errorf("rejected records counted by code clock_skew: %v, want 1", got)
	}

	// A 5 MB prompt, then ordinary ones: all arrive.
	large := tag + " large " + strings.Repeat("0123456789", 500_000)
	if status, body := n.curlChat(t, large); status != 200 {
		t.Fatalf("the 5 MB prompt: %d %.200s", status, body)
	}
	for i := range 5 {
		if status, body := n.curlChat(t, fmt.Sprintf("%s ordinary #%d", tag, i)); status != 200 {
			t.Fatalf("ordinary request %d: %d %s", i, status, body)
		}
	}
	var recs []audit.Record
	waitFor(t, "the large and the ordinary records in the collector", func() bool {
		recs = n.collector.all(t, store.Filter{Q: tag})
		return len(recs) >= 6
	})
	var big *audit.Record
	for i, r := range recs {
		if len(r.Request.Messages) == 1 && r.Request.Messages[0].Content == stale {
			t.Errorf("the refused record %s is in the collector", r.ID)
		}
		if len(r.Request.Messages) == 1 && strings.HasPrefix(r.Request.Messages[0].Content, tag+" large ") {
			big = &recs[i]
		}
	}
	if len(recs) != 6 || big == nil {
		t.Fatalf("the collector holds %d records of the test (large one found: %v), want the large one and 5 ordinary", len(recs), big != nil)
	}
	enc, _ := json.Marshal(big)
	if !big.Request.Truncated || len(big.Request.Messages[0].Content) > 1<<20 || !strings.HasPrefix(large, big.Request.Messages[0].Content) ||
		big.Request.Size < 5_000_000 || len(enc) > audit.MaxRecordBytes {
		t.Errorf("large record: truncated %v, prompt kept %d bytes, size %d, record %d bytes; want flagged, the prompt's first MiB at most, the full size, under %d",
			big.Request.Truncated, len(big.Request.Messages[0].Content), big.Request.Size, len(enc), audit.MaxRecordBytes)
	}

	// The collector's chain check shows where the refused record was.
	rep, err := n.collector.client(t).Verify(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	gap := false
	for _, p := range rep.Problems {
		gap = gap || p.Kind == store.IssueGap
	}
	if rep.OK || !gap {
		t.Errorf("verify: OK %v, problems %+v; want the gap of the refused record", rep.OK, rep.Problems)
	}
}

func TestAFullDiskNeverCrashesTheAgent(t *testing.T) {
	kerneltest.RequirePrivileges(t)
	dataDir := kerneltest.Tmpfs(t, 192<<20)
	n := newTLSNodeAt(t, tlsNodeAddrs{upstream: "127.0.4.6", proxy: boundsProxyIP + ":15410", explicit: boundsProxyIP + ":15411",
		collector: boundsProxyIP + ":15451", dataDir: dataDir, collectorDisabled: true})
	tag := "full-disk-" + randomFrom("abcdefghij", 8)

	// Large prompts with no collector to take them fill the disk up to
	// the spool's reserve; then requests are refused, as --spool-full
	// reject says.
	prompt := func(i int) string { return fmt.Sprintf("%s #%d %s", tag, i, strings.Repeat("x", 1_500_000)) }
	ok, refusal := 0, ""
	for i := 0; refusal == "" && i < 200; i++ {
		switch status, body := n.curlChat(t, prompt(i)); status {
		case 200:
			ok++
		case 503:
			refusal = body
		default:
			t.Fatalf("request %d: %d %.300s", i, status, body)
		}
	}
	if ok == 0 || !strings.Contains(refusal, "promptrail_spool_unavailable") {
		t.Fatalf("%d requests forwarded, then %q; want some, then a 503 promptrail_spool_unavailable", ok, refusal)
	}

	// Something else takes the rest of the disk, and the agent restarts.
	filler := kerneltest.FillDisk(t, dataDir)
	n.agentP.stop(syscall.SIGTERM)
	if ws := n.agentP.cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() {
		t.Fatalf("the agent died of %v stopping on a full disk", ws.Signal())
	}
	n.agentP = n.startAgent(t)
	if status, body := n.curlChat(t, tag+" on the full disk"); status != 503 {
		t.Fatalf("request on a full disk after the restart: %d %.300s, want 503", status, body)
	}

	// Space returns and the collector comes: everything forwarded
	// arrives, and requests are forwarded again.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	n.collector.start()
	waitForWithin(t, shipperBackoff, "every forwarded record in the collector", func() bool {
		got := 0
		for _, r := range n.collector.all(t, store.Filter{Q: tag}) {
			if r.Decision.Action != "reject" {
				got++
			}
		}
		return got == ok
	})
	waitFor(t, "a request forwarded again", func() bool {
		status, _ := n.curlChat(t, tag+" after")
		return status == 200
	})
	n.collector.record(t, "the request after space returned", func(r *audit.Record) bool {
		return len(r.Request.Messages) == 1 && r.Request.Messages[0].Content == tag+" after" && r.Response != nil && r.Response.Status == 200
	})
	if ws := n.agentP.cmd.ProcessState; ws != nil {
		t.Fatalf("the agent exited: %v", ws)
	}
}
