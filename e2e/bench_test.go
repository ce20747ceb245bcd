package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/promptrail/promptrail/internal/fakeopenai"
	"github.com/promptrail/promptrail/internal/kerneltest"
)

// BenchmarkProxy measures what the agent adds to a call of the API, with
// the real agent binary intercepting a client in a cgroup, against the
// same client calling the fake upstream directly, in one run: added
// latency (p50, p99) of a ~1 KB non-streaming request on a kept-alive
// connection, requests per second at concurrency 32, added time to first
// token of a stream, and the agent's CPU and peak RSS under that load.
// Run it with `make bench`.
func BenchmarkProxy(b *testing.B) {
	kerneltest.RequirePrivileges(b)
	n := &node{root: kerneltest.NewCgroup(b, "")}
	n.agent = kerneltest.NewCgroupAt(b, n.root, "agent")
	n.client = kerneltest.NewCgroupAt(b, n.root, "client")
	n.dataDir = b.TempDir()
	fake := fakeopenai.NewTLSServer(b, fakeopenai.Config{Reply: strings.Repeat("word ", 40)}, "127.0.1.6:443")
	upCA := filepath.Join(b.TempDir(), "up.pem")
	os.WriteFile(upCA, fake.CAPEM, 0o644)
	a := startAgent(b, n.agent, "--cgroup-root", n.root, "--data-dir", n.dataDir, "--resolv-conf", deadResolver(b), "--fail-mode", "fail-open", "--capture-dns=false",
		"--target", "api.openai.com:443", "--target-cidr", "127.0.1.6/32", "--upstream-ca", upCA,
		"--proxy-listen", "127.0.0.1:15120", "--pin-path", "/sys/fs/bpf/promptrail-bench-"+strconv.Itoa(os.Getpid()))
	agentCA, err := os.ReadFile(filepath.Join(n.dataDir, "ca.crt"))
	if err != nil {
		b.Fatal(err)
	}
	agentPool := x509.NewCertPool()
	agentPool.AppendCertsFromPEM(agentCA)

	const requests = 2000
	b.ResetTimer()
	direct := measure(b, fake.CertPool, requests)
	proxied := kerneltest.InCgroup(b, n.client, func() (figures, error) {
		cpu0 := procCPU(b, a.cmd.Process.Pid)
		f := measure(b, agentPool, requests)
		f.cpu = procCPU(b, a.cmd.Process.Pid) - cpu0
		return f, nil
	})
	b.StopTimer()

	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(pct(proxied.lat, 50)-pct(direct.lat, 50)), "added-p50-ms")
	b.ReportMetric(ms(pct(proxied.lat, 99)-pct(direct.lat, 99)), "added-p99-ms")
	b.ReportMetric(ms(pct(direct.lat, 50)), "direct-p50-ms")
	b.ReportMetric(proxied.rps, "proxied-req/s")
	b.ReportMetric(direct.rps, "direct-req/s")
	b.ReportMetric(ms(pct(proxied.ttft, 50)-pct(direct.ttft, 50)), "added-ttft-p50-ms")
	b.ReportMetric(proxied.cpu.Seconds()/proxied.wall.Seconds(), "agent-cpu-cores")
	b.ReportMetric(float64(peakRSS(b, a.cmd.Process.Pid))/(1<<20), "agent-peak-rss-MiB")
}

// figures are one client's measurements.
type figures struct {
	lat, ttft []time.Duration
	rps       float64
	wall      time.Duration // of the measured phases, for CPU share
	cpu       time.Duration
}

// measure runs the three loads against https://api.openai.com, which the
// client's dialer sends to the fake upstream's address (redirected to the
// agent when the process is in the intercepted cgroup).
func measure(b *testing.B, roots *x509.CertPool, requests int) figures {
	start := time.Now()
	client := benchClient(roots)
	defer client.CloseIdleConnections()
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + strings.Repeat("x", 900) + `"}]}`
	call := func(c *http.Client, payload string) (time.Duration, error) {
		t0 := time.Now()
		resp, err := c.Post("https://api.openai.com/v1/chat/completions", "application/json", strings.NewReader(payload))
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return 0, fmt.Errorf("status %d", resp.StatusCode)
		}
		return time.Since(t0), nil
	}
	var f figures
	for i := range requests + 100 {
		d, err := call(client, body)
		if err != nil {
			b.Fatal(err)
		}
		if i >= 100 { // warm-up excluded
			f.lat = append(f.lat, d)
		}
	}
	// Throughput at concurrency 32.
	var done atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	t0 := time.Now()
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if _, err := call(client, body); err == nil {
					done.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	f.rps = float64(done.Load()) / time.Since(t0).Seconds()
	// Time to first token of a stream.
	stream := `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	for range 200 {
		t0 := time.Now()
		resp, err := client.Post("https://api.openai.com/v1/chat/completions", "application/json", strings.NewReader(stream))
		if err != nil {
			b.Fatal(err)
		}
		br := bufio.NewReader(resp.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				b.Fatalf("stream ended before content: %v", err)
			}
			if strings.Contains(line, `"content":"w`) {
				f.ttft = append(f.ttft, time.Since(t0))
				break
			}
		}
		io.Copy(io.Discard, br)
		resp.Body.Close()
	}
	f.wall = time.Since(start)
	return f
}

func benchClient(roots *x509.CertPool) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, "127.0.1.6:443")
		},
		TLSClientConfig:     &tls.Config{RootCAs: roots},
		MaxIdleConnsPerHost: 64,
	}}
}

func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// procCPU returns the user+system CPU time of process pid.
func procCPU(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (which may hold spaces), 1-based: utime 14, stime 15.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / clkTck
}

// peakRSS returns the peak resident set size (VmHWM) of pid in bytes.
func peakRSS(b *testing.B, pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
