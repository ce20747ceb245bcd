package e2e

import (
	"syscall"
	"testing"
	"time"

	"github.com/promptrail/promptrail/internal/kerneltest"
)

func TestFailOpenLeavesNothingAttached(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			n := newNode(t)
			echo := newEchoServer(t, "127.0.1.2:443")
			a := startAgent(t, n.agent, n.agentArgs("--fail-mode", "fail-open", "--capture-dns",
				"--target", "127.0.1.2:443", "--no-sni", "splice", "--proxy-listen", "127.0.0.1:15104")...)
			if attached(t, n.root) == 0 {
				t.Fatal("no program attached while the agent runs")
			}
			a.stop(sig)
			// Links die with the last file descriptor, i.e. with the process.
			waitFor(t, "programs to detach", func() bool { return attached(t, n.root) == 0 })
			r := kerneltest.RunHelper(t, n.client, nil, "tcp", "127.0.1.2:443", "ping")
			if peers := echo.seen(); r.Reply != "echo:ping" || len(peers) != 1 || peers[0] != r.Local {
				t.Fatalf("after the agent stopped: reply %q (%s), destination saw %v; want a direct connection", r.Reply, r.Err, peers)
			}
		})
	}
}

func TestFailClosedRefusesTargetsWhileNoAgentRuns(t *testing.T) {
	n := newNode(t)
	echo := newEchoServer(t, "127.0.1.2:443")
	other := newEchoServer(t, "127.0.1.3:443")
	args := n.agentArgs("--fail-mode", "fail-closed", "--heartbeat-timeout", "1s", "--capture-dns=false",
		"--target", "127.0.1.2:443", "--no-sni", "splice", "--proxy-listen", "127.0.0.1:15105")
	a := startAgent(t, n.agent, args...)
	checkProxied(t, a, echo, kerneltest.RunHelper(t, n.client, nil, "tcp", "127.0.1.2:443", "ping"), n.client, "127.0.1.2:443")

	refused := func(when string) {
		t.Helper()
		r := kerneltest.RunHelper(t, n.client, nil, "tcp", "127.0.1.2:443", "ping")
		if r.Errno != "EPERM" {
			t.Fatalf("%s: connect to a target gave %q (errno %q), want EPERM", when, r.Err, r.Errno)
		}
		if r := kerneltest.RunHelper(t, n.client, nil, "tcp", other.addr, "ping"); r.Reply != "echo:ping" {
			t.Fatalf("%s: a non-target connect gave %q (%s)", when, r.Reply, r.Err)
		}
	}

	// A crash leaves the programs; once the heartbeat is stale they refuse.
	a.stop(syscall.SIGKILL)
	time.Sleep(1500 * time.Millisecond)
	refused("agent killed")

	// A new agent takes over; a graceful stop refuses at once.
	a = startAgent(t, n.agent, args...)
	if got := attached(t, n.root); got != 6 {
		t.Errorf("%d programs attached after restart, want 6: a takeover must not stack programs", got)
	}
	r := kerneltest.RunHelper(t, n.client, nil, "tcp", "127.0.1.2:443", "ping")
	if r.Reply != "echo:ping" {
		t.Fatalf("after restart: %q (%s)", r.Reply, r.Err)
	}
	a.stop(syscall.SIGTERM)
	refused("agent stopped")

	if err := removePins(n.pinPath); err != nil {
		t.Fatal(err)
	}
	if got := attached(t, n.root); got != 0 {
		t.Fatalf("%d programs attached after cleanup", got)
	}
	if r := kerneltest.RunHelper(t, n.client, nil, "tcp", "127.0.1.2:443", "ping"); r.Reply != "echo:ping" {
		t.Fatalf("after cleanup: %q (%s), want a direct connection", r.Reply, r.Err)
	}
}

func attached(t *testing.T, dir string) int { return kerneltest.AttachedPrograms(t, dir) }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitForWithin(t, 10*time.Second, what, cond)
}

// waitForWithin polls cond until it holds, failing the test after d.
func waitForWithin(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
