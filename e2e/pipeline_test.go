package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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

// startClient starts a client in the client cgroup with the private hosts
// file and returns it running; wait collects its output.
func (n *tlsNode) startClient(t *testing.T, env []string, argv ...string) (cmd *exec.Cmd, wait func() clientResult) {
	t.Helper()
	return n.startClientIn(t, n.client, env, argv...)
}

// startClientIn is startClient in another cgroup.
func (n *tlsNode) startClientIn(t *testing.T, cgroup string, env []string, argv ...string) (cmd *exec.Cmd, wait func() clientResult) {
	t.Helper()
	argv = n.withHost(argv...)
	cmd = exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	kerneltest.CommandInCgroup(t, cgroup, cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, func() clientResult {
		t.Helper()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("client: %v\n%s%s", err, stdout.String(), stderr.String())
		}
		var res clientResult
		if err := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &res); err != nil {
			t.Fatalf("client printed %q: %v (%s)", stdout.String(), err, stderr.String())
		}
		return res
	}
}

// upstreamSaw counts the requests the fake upstream received whose body
// contains s.
func (n *tlsNode) upstreamSaw(s string) int {
	c := 0
	for _, r := range n.fake.Server.Requests() {
		if strings.Contains(string(r.Body), s) {
			c++
		}
	}
	return c
}

func TestNoRecordIsLostWhileTheCollectorCrashes(t *testing.T) {
	n := newTLSNode(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const total = 500
	tag := "crash-test-" + randomFrom("abcdefghijklmnopqrstuvwxyz", 10)
	_, wait := n.startClient(t, []string{envGoClient + "=many", envPrompt + "=" + tag, envCount + "=" + fmt.Sprint(total),
		envPace + "=20ms", "SSL_CERT_FILE=" + n.agentCA}, self)

	// SIGKILL the collector twice while requests flow, and start it again
	// each time: the agent keeps serving and its spool holds the records.
	for _, at := range []int{100, 300} {
		waitFor(t, fmt.Sprintf("%d requests upstream", at), func() bool { return n.upstreamSaw(tag) >= at })
		n.collector.kill()
		waitFor(t, fmt.Sprintf("%d more requests upstream while the collector is down", 100), func() bool {
			return n.upstreamSaw(tag) >= at+100
		})
		n.collector.start()
	}
	res := wait()
	if res.Text != fmt.Sprintf("ok %d failed 0", total) {
		t.Fatalf("client: %s (%s)", res.Text, res.Error)
	}

	var recs []audit.Record
	waitFor(t, "every record in the collector", func() bool {
		recs = n.collector.all(t, store.Filter{Q: tag})
		return len(recs) >= total
	})
	seenID, seenPrompt := map[string]bool{}, map[string]int{}
	for _, r := range recs {
		if seenID[r.ID] {
			t.Errorf("record %s stored twice", r.ID)
		}
		seenID[r.ID] = true
		if len(r.Request.Messages) == 1 {
			seenPrompt[r.Request.Messages[0].Content]++
		}
	}
	for i := range total {
		if c := seenPrompt[fmt.Sprintf("%s #%d", tag, i)]; c != 1 {
			t.Errorf("request #%d has %d records, want exactly 1", i, c)
		}
	}
	if len(recs) != total {
		t.Errorf("the collector has %d records of the test's requests, want %d", len(recs), total)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := n.collector.client(t).Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK {
		t.Fatalf("verify after the crashes: %+v", rep.Problems)
	}
}

func TestAgentKilledMidStreamLeavesTheIncompleteRecord(t *testing.T) {
	n := newTLSNode(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	prompt := "mid-stream-" + randomFrom("abcdefghijklmnopqrstuvwxyz", 10)
	_, wait := n.startClient(t, []string{envGoClient + "=chat-stream", envPrompt + "=" + prompt, envFakeStall + "=2",
		"SSL_CERT_FILE=" + n.agentCA}, self)
	waitFor(t, "the streaming request upstream", func() bool { return n.upstreamSaw(prompt) == 1 })

	n.agentP.stop(syscall.SIGKILL)
	if res := wait(); res.Error == "" {
		t.Fatalf("the client's stream ended without an error although the agent died: %+v", res)
	}
	n.agentP = n.startAgent(t)
	n.agentP.waitLog(t, "sealed records left pending by an agent stop; they ship marked incomplete", func(map[string]any) bool { return true })

	r := n.record(t, "the killed stream", func(r *audit.Record) bool {
		return len(r.Request.Messages) == 1 && r.Request.Messages[0].Content == prompt
	})
	if !r.Incomplete || !strings.Contains(r.Error, "agent stopped") || !r.Request.Stream {
		t.Fatalf("record of the killed stream: incomplete %v, error %q, stream %v", r.Incomplete, r.Error, r.Request.Stream)
	}
}

func TestFullSpoolRefusesRequestsUntilTheCollectorDrainsIt(t *testing.T) {
	n := newTLSNode(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// No collector, and a spool that holds a dozen records or so.
	n.collector.kill()
	n.agentP.stop(syscall.SIGTERM)
	n.agentP = n.startAgent(t, "--spool-max-bytes", "48KiB")
	tag := "spool-full-" + randomFrom("abcdefghij", 8)
	env := []string{envGoClient + "=many", envPrompt + "=" + tag, envCount + "=60", envPace + "=0s", "SSL_CERT_FILE=" + n.agentCA}
	_, wait := n.startClient(t, env, self)
	res := wait()
	var ok, failed int
	if _, err := fmt.Sscanf(res.Text, "ok %d failed %d", &ok, &failed); err != nil {
		t.Fatalf("client: %q", res.Text)
	}
	if ok == 0 || failed == 0 || !strings.Contains(res.Error, "503") {
		t.Fatalf("with a full spool: %d ok, %d failed, first error %q; want some of each, refused with a 503 the SDK shows", ok, failed, res.Error)
	}
	if got := n.upstreamSaw(tag); got != ok {
		t.Fatalf("the upstream saw %d of the requests, want only the %d that were spooled", got, ok)
	}
	n.agentP.waitLog(t, "request refused: its record could not be spooled", func(map[string]any) bool { return true })

	// The collector comes back: the spool drains, and every record — the
	// forwarded ones and the refusals — arrives.
	n.collector.start()
	var recs []audit.Record
	waitFor(t, "the spooled records in the collector", func() bool {
		recs = n.collector.all(t, store.Filter{Q: tag})
		return len(recs) == ok+failed
	})
	refused := n.collector.all(t, store.Filter{Q: tag, Action: "reject"})
	if len(refused) != failed || refused[0].Response.Status != 503 {
		t.Fatalf("%d refused records, want %d with status 503", len(refused), failed)
	}
	// With room again, requests go through.
	env[3] = envCount + "=5"
	_, wait = n.startClient(t, env, self)
	if res := wait(); res.Text != "ok 5 failed 0" {
		t.Fatalf("after the spool drained: %s (%s)", res.Text, res.Error)
	}
}
