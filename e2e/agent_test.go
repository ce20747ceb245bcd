// Package e2e runs the promptrail binary as root against the real kernel:
// clients in their own cgroups and network namespaces, a real agent
// process, servers on loopback and on veth pairs. Without root, cgroup v2
// and bpffs the tests skip, or fail when PROMPTRAIL_E2E=1.
package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/promptrail/promptrail/internal/kerneltest"
)

// binary is the promptrail binary, built once by the first test that
// needs it (after its privilege check, so unprivileged runs never build).
var (
	binary    string
	buildOnce sync.Once
	buildErr  error
	binDir    string
)

func TestMain(m *testing.M) {
	kerneltest.HelperMain()
	goClientMain()
	hostileClientMain()
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func promptrail(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "promptrail-e2e-"); buildErr != nil {
			return
		}
		binary = filepath.Join(binDir, "promptrail")
		out, err := exec.Command("go", "build", "-o", binary, "../cmd/promptrail").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("building promptrail: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

// agentProc is a running `promptrail agent` and the log lines it wrote.
type agentProc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs []map[string]any
	done chan struct{}
}

// startAgent runs `promptrail agent args...` inside cgroup dir, with JSON
// logs, and waits until it reports that it runs.
func startAgent(t testing.TB, cgroup string, args ...string) *agentProc {
	t.Helper()
	return startAgentWrapped(t, cgroup, nil, args...)
}

// startAgentWrapped is startAgent with the command line wrapped (nil: not),
// e.g. in a mount namespace with its own /etc/hosts.
func startAgentWrapped(t testing.TB, cgroup string, wrap func(...string) []string, args ...string) *agentProc {
	t.Helper()
	argv := append([]string{promptrail(t), "agent", "--log-format", "json", "--log-level", "debug"}, args...)
	if wrap != nil {
		argv = wrap(argv...)
	}
	a := startProc(t, cgroup, exec.Command(argv[0], argv[1:]...))
	a.waitLog(t, "agent running", func(map[string]any) bool { return true })
	return a
}

// startProc starts cmd, a promptrail command with JSON logs, inside
// cgroup, collects its log lines and kills it when the test ends.
func startProc(t testing.TB, cgroup string, cmd *exec.Cmd) *agentProc {
	t.Helper()
	kerneltest.CommandInCgroup(t, cgroup, cmd)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", strings.Join(cmd.Args, " "), err)
	}
	a := &agentProc{cmd: cmd, done: make(chan struct{})}
	go a.collect(t, stderr)
	t.Cleanup(func() { a.stop(syscall.SIGKILL) })
	return a
}

func (a *agentProc) collect(t testing.TB, r io.Reader) {
	defer close(a.done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			m = map[string]any{"msg": "unparsed", "line": sc.Text()}
		}
		a.mu.Lock()
		a.logs = append(a.logs, m)
		a.mu.Unlock()
		if testing.Verbose() {
			fmt.Fprintf(os.Stderr, "agent: %s\n", sc.Text())
		}
	}
}

// stop signals the agent and waits for it to exit.
func (a *agentProc) stop(sig syscall.Signal) {
	if a.cmd.ProcessState != nil {
		return
	}
	a.cmd.Process.Signal(sig)
	select {
	case <-a.done:
	case <-time.After(15 * time.Second):
		a.cmd.Process.Kill()
	}
	a.cmd.Wait()
}

// waitLog waits for a log line with message msg that match accepts.
func (a *agentProc) waitLog(t testing.TB, msg string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		a.mu.Lock()
		for _, l := range a.logs {
			if l["msg"] == msg && match(l) {
				a.mu.Unlock()
				return l
			}
		}
		a.mu.Unlock()
		select {
		case <-a.done:
			t.Fatalf("agent exited before logging %q: %v", msg, a.lines())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("agent did not log %q: %v", msg, a.lines())
	return nil
}

func (a *agentProc) count(msg string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, l := range a.logs {
		if l["msg"] == msg {
			n++
		}
	}
	return n
}

func (a *agentProc) lines() []map[string]any {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]map[string]any(nil), a.logs...)
}

// echoServer answers each connection with "echo:" and what it read, and
// remembers the peers it saw.
type echoServer struct {
	addr  string
	mu    sync.Mutex
	peers []string
}

func newEchoServer(t *testing.T, addr string) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("echo server on %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &echoServer{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.peers = append(s.peers, c.RemoteAddr().String())
			s.mu.Unlock()
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				b, _ := io.ReadAll(c)
				c.Write(append([]byte("echo:"), b...))
			}()
		}
	}()
	return s
}

func (s *echoServer) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.peers...)
}

// node is a cgroup root for one test, with a cgroup for the agent and one
// for clients under it, as a node's kubepods and system slices are.
type node struct {
	root, agent, client          string
	pinPath, dataDir, resolvConf string
}

func newNode(t *testing.T) *node {
	t.Helper()
	kerneltest.RequirePrivileges(t)
	n := &node{root: kerneltest.NewCgroup(t, "")}
	n.agent = kerneltest.NewCgroupAt(t, n.root, "agent")
	n.client = kerneltest.NewCgroupAt(t, n.root, "client")
	promptrail(t)
	n.pinPath = kerneltest.PinDir(t, removePins)
	n.dataDir = t.TempDir()
	n.resolvConf = deadResolver(t)
	return n
}

// deadResolver writes a resolv.conf whose nameserver is a loopback address
// where nothing listens: the agent's own lookups stay on this machine and
// fail at once, so targets come only from what a test configures.
func deadResolver(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(p, []byte("nameserver 127.0.1.54\noptions timeout:1 attempts:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// agentArgs are the flags that point an agent at this node.
func (n *node) agentArgs(extra ...string) []string {
	return append([]string{"--cgroup-root", n.root, "--pin-path", n.pinPath, "--data-dir", n.dataDir, "--resolv-conf", n.resolvConf}, extra...)
}

// removePins is `promptrail cleanup`, run as a user would.
func removePins(dir string) error {
	out, err := exec.Command(binary, "cleanup", "--pin-path", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("promptrail cleanup: %v: %s", err, out)
	}
	return nil
}

func cgroupID(t *testing.T, dir string) float64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	return float64(st.Ino)
}
