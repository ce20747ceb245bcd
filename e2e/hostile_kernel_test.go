package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/promptrail/promptrail/agent/intercept"
	"github.com/promptrail/promptrail/internal/kerneltest"
)

// Hostile clients: a workload in the client cgroup tries to reach a target
// without the agent, or to teach the agent targets it should not have.
// Each attempt is intercepted and recorded, or refused; never an
// unrecorded exchange with the upstream. These tests use 127.0.2.0/24 and
// ports 15200-15249 only.

const hostileMetrics = "127.0.2.1:15249"

func TestHostileClientWithTheAgentsMarkIsIntercepted(t *testing.T) {
	n := newNode(t)
	a := startAgent(t, n.agent, n.agentArgs("--fail-mode", "fail-open", "--capture-dns=false", "--metrics-listen", hostileMetrics,
		"--target", "127.0.2.2:443", "--no-sni", "splice", "--proxy-listen", "127.0.0.1:15200")...)
	tests := []struct {
		name string
		mark uint32
	}{
		{"default mark", intercept.DefaultMark},
		{"the old default 0x7072", 0x7072},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			echo := newEchoServer(t, "127.0.2.2:443")
			// SO_MARK needs CAP_NET_ADMIN, which the (root) helper has, as a
			// privileged container would.
			r := kerneltest.RunHelper(t, n.client, nil, "tcp-marked", fmt.Sprint(tt.mark), "127.0.2.2:443", "ping")
			checkProxied(t, a, echo, r, n.client, "127.0.2.2:443")
			if tt.mark == intercept.DefaultMark {
				if got := kernelEvents(t, "forged_mark"); got != float64(i+1) {
					t.Errorf("forged_mark counted %v, want %d", got, i+1)
				}
			}
		})
	}
}

func TestHostileClientRawQUICToATargetIsDropped(t *testing.T) {
	n := newNode(t)
	startAgent(t, n.agent, n.agentArgs("--fail-mode", "fail-open", "--capture-dns=false", "--metrics-listen", hostileMetrics,
		"--target", "127.0.2.3:443", "--no-sni", "splice", "--proxy-listen", "127.0.0.1:15201")...)
	target, other := udpSink(t, "127.0.2.3:443"), udpSink(t, "127.0.2.4:443")

	tests := []struct {
		name, helper, addr string
		sink               chan string
		wantErrno          string // a packet dropped at egress fails the send with EPERM
		arrives            bool
	}{
		{"raw socket to target", "udp-raw", "127.0.2.3:443", target, "EPERM", false},
		{"unconnected UDP to target", "udp-sendto", "127.0.2.3:443", target, "EPERM", false},
		{"connected UDP to target", "udp-connect", "127.0.2.3:443", target, "EPERM", false},
		{"raw socket elsewhere", "udp-raw", "127.0.2.4:443", other, "", true},
	}
	dropped := 0.0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := tt.addr
			r := kerneltest.RunHelper(t, n.client, nil, tt.helper, addr)
			if r.Errno != tt.wantErrno {
				t.Errorf("%s to %s gave %q, want errno %q", tt.helper, addr, r.Err, tt.wantErrno)
			}
			select {
			case got := <-tt.sink:
				if !tt.arrives {
					t.Errorf("the listener on %s received %q", addr, got)
				}
			case <-time.After(500 * time.Millisecond):
				if tt.arrives {
					t.Errorf("the listener on %s received nothing", addr)
				}
			}
			if tt.helper == "udp-raw" && !tt.arrives {
				dropped++
			}
			if got := kernelEvents(t, "dropped_quic"); got != dropped {
				t.Errorf("dropped_quic counted %v, want %v", got, dropped)
			}
		})
	}
}

func TestHostileClientForgedDNSAnswerTeachesNoTarget(t *testing.T) {
	n := newNode(t)
	const name = "api.i10bpf-test.example"
	resolver := startDNS(t, "127.0.2.53:53", name, netip.MustParseAddr("127.0.2.5"))
	real := newEchoServer(t, "127.0.2.5:443")
	// The test's resolver stands for the cluster DNS service, and so does
	// 192.0.2.53, whose answers would arrive from off the node; 127.0.2.54
	// stands for a loopback resolver of the host's (127.0.0.53). The
	// agent's resolv.conf points nowhere, so it learns addresses only by
	// watching.
	a := startAgent(t, n.agent, n.agentArgs("--fail-mode", "fail-open", "--capture-dns", "--dns-server", "127.0.2.53,192.0.2.53,127.0.2.54",
		"--metrics-listen", hostileMetrics,
		"--target", name+":443", "--no-sni", "splice", "--proxy-listen", "127.0.0.1:15202")...)

	// A pod-like namespace: a packet sent to its own address (from any
	// source, with IP_TRANSPARENT, which CAP_NET_RAW allows) never leaves it.
	pod := kerneltest.NewNetns(t, 2)
	forgeries := []struct {
		name, from, to, addr, why string
		wrap                      func(...string) []string
	}{
		// The workload answers itself from a port 53 of its own.
		{"from an untrusted source", "127.0.2.66:53", "127.0.2.67:0", "127.0.2.6", "127.0.2.66", nil},
		// It forges the trusted cluster DNS address; the answer arrives
		// over the pod's loopback, where that resolver is never heard.
		{"from a forged trusted source", "192.0.2.53:53", netip.AddrPortFrom(pod.PodAddr, 0).String(), "127.0.2.7",
			"arrived over loopback", pod.Command},
	}
	// The host's loopback resolver, forged on the pod's own loopback: told
	// apart where the kernel gives cgroup_skb programs the namespace.
	if err := features.HaveProgramHelper(ebpf.CGroupSKB, asm.FnGetNetnsCookie); err == nil {
		forgeries = append(forgeries, struct {
			name, from, to, addr, why string
			wrap                      func(...string) []string
		}{"from the host's loopback resolver, forged in a pod", "127.0.2.54:53", "127.0.2.67:0", "127.0.2.8",
			"arrived over loopback", pod.Command})
	} else {
		t.Logf("this kernel cannot tell a pod's loopback from the host's in cgroup_skb (%v): a loopback resolver forged in a pod is not refused here", err)
	}
	for i, f := range forgeries {
		t.Run(f.name, func(t *testing.T) {
			forged := newEchoServer(t, f.addr+":443")
			if r := kerneltest.RunHelper(t, n.client, f.wrap, "dns-forge", f.from, f.to, name, f.addr); r.Err != "" {
				t.Fatalf("forging: %s", r.Err)
			}
			a.waitLog(t, "ignored a captured DNS packet", func(l map[string]any) bool {
				err := fmt.Sprint(l["err"])
				return strings.Contains(err, "not from a trusted resolver") && strings.Contains(err, f.why)
			})
			r := kerneltest.RunHelper(t, n.client, nil, "tcp", f.addr+":443", "ping")
			if peers := forged.seen(); len(peers) != 1 || peers[0] != r.Local {
				t.Errorf("the forged address was intercepted: the destination saw %v, want the client %s itself", peers, r.Local)
			}
			for _, l := range a.lines() {
				if l["msg"] == "target added" && l["prefix"] == f.addr+"/32" {
					t.Errorf("the agent added the forged address: %v", l)
				}
			}
			if got := scrape(t, "promptrail_agent_dns_answers_untrusted_total"); got != float64(i+1) {
				t.Errorf("promptrail_agent_dns_answers_untrusted_total = %v, want %d", got, i+1)
			}
		})
	}
	t.Run("answer from the trusted resolver", func(t *testing.T) {
		res := kerneltest.RunHelper(t, n.client, nil, "resolve", resolver, name)
		if !slices.Contains(res.Addrs, "127.0.2.5") {
			t.Fatalf("resolver answered %v (%s)", res.Addrs, res.Err)
		}
		a.waitLog(t, "target added", func(l map[string]any) bool { return l["prefix"] == "127.0.2.5/32" })
		checkProxied(t, a, real, kerneltest.RunHelper(t, n.client, nil, "tcp", "127.0.2.5:443", "ping"), n.client, "127.0.2.5:443")
	})
}

// udpSink listens on addr and passes on what arrives.
func udpSink(t *testing.T, addr string) chan string {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("UDP listener on %s: %v", addr, err)
	}
	t.Cleanup(func() { pc.Close() })
	got := make(chan string, 16)
	go func() {
		b := make([]byte, 1500)
		for {
			n, _, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			got <- string(b[:n])
		}
	}()
	return got
}

// kernelEvents reads promptrail_kernel_events_total{event=...} from the
// agent's /metrics on hostileMetrics.
func kernelEvents(t *testing.T, event string) float64 {
	t.Helper()
	return scrape(t, `promptrail_kernel_events_total{event="`+event+`"}`)
}

// scrape reads the sample named series (with its labels, as printed) from
// the agent's /metrics on hostileMetrics.
func scrape(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + hostileMetrics + "/metrics")
	if err != nil {
		t.Fatalf("scraping the agent's metrics: %v", err)
	}
	defer resp.Body.Close()
	prefix := series + " "
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", sc.Text(), err)
			}
			return f
		}
	}
	t.Fatalf("the agent's /metrics has no %s", strings.TrimSpace(prefix))
	return 0
}
