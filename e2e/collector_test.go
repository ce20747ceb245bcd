package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/collector/client"
	"github.com/promptrail/promptrail/collector/store"
)

// collectorProc is a `promptrail collector` process that a test can kill
// and start again on the same data directory and address.
type collectorProc struct {
	*agentProc
	t                            testing.TB
	cgroup, dataDir, addr        string
	tokensFile, agentToken, read string
	extra                        []string // more flags
}

// startCollector runs a collector in cgroup with fresh tokens and a free
// loopback port.
func startCollector(t testing.TB, cgroup string) *collectorProc {
	t.Helper()
	c := newCollector(t, cgroup, freeAddr(t))
	c.start()
	return c
}

// newCollector prepares a collector on addr with fresh tokens and extra
// flags; start runs it.
func newCollector(t testing.TB, cgroup, addr string, extra ...string) *collectorProc {
	t.Helper()
	dir := t.TempDir()
	c := &collectorProc{t: t, cgroup: cgroup, dataDir: filepath.Join(dir, "data"), addr: addr, extra: extra,
		tokensFile: filepath.Join(dir, "tokens"), agentToken: filepath.Join(dir, "agent.token"), read: filepath.Join(dir, "reader.token")}
	agentTok, readerTok := "agent-token-"+randomFrom("abcdefghij", 20), "reader-token-"+randomFrom("abcdefghij", 20)
	for path, content := range map[string]string{
		c.tokensFile: fmt.Sprintf("agent * %s\nreader e2e %s\n", agentTok, readerTok),
		c.agentToken: agentTok + "\n",
		c.read:       readerTok + "\n",
	} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func (c *collectorProc) start() {
	c.t.Helper()
	cmd := exec.Command(promptrail(c.t), append([]string{"collector", "--log-format", "json", "--data-dir", c.dataDir,
		"--listen", c.addr, "--tokens-file", c.tokensFile, "--checkpoint-interval", "1s"}, c.extra...)...)
	c.agentProc = startProc(c.t, c.cgroup, cmd)
	c.waitLog(c.t, "collector serving", func(map[string]any) bool { return true })
}

// kill ends the collector with SIGKILL: no shutdown, no flush.
func (c *collectorProc) kill() { c.stop(syscall.SIGKILL) }

func (c *collectorProc) url() string { return "http://" + c.addr }

// agentArgs point an agent at this collector, shipping small batches fast.
func (c *collectorProc) agentArgs() []string {
	return []string{"--collector", c.url(), "--token-file", c.agentToken, "--ship-interval", "100ms", "--metrics-listen", ""}
}

func (c *collectorProc) client(t testing.TB) *client.Client {
	t.Helper()
	tok, err := os.ReadFile(c.read)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(c.url(), string(tok[:len(tok)-1]), nil)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// all returns every record the collector holds that matches f.
func (c *collectorProc) all(t testing.TB, f store.Filter) []audit.Record {
	t.Helper()
	f.Limit = 1000
	var out []audit.Record
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := c.client(t).EachPage(ctx, f, func(page []audit.Record) (bool, error) {
		out = append(out, page...)
		return true, nil
	})
	if err != nil {
		t.Fatalf("querying the collector: %v", err)
	}
	return out
}

// record waits until the collector holds a record that match selects.
func (c *collectorProc) record(t testing.TB, what string, match func(*audit.Record) bool) *audit.Record {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range c.all(t, store.Filter{Since: time.Now().Add(-time.Hour)}) {
			if match(&r) {
				return &r
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the collector has no record of %s", what)
	return nil
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
