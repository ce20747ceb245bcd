package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/promptrail/promptrail/internal/kerneltest"
)

// checkProxied asserts that a client exchange reached the echo server
// through the agent, and that the agent logged the client's origin.
func checkProxied(t *testing.T, a *agentProc, echo *echoServer, r kerneltest.Result, clientCg, dst string) {
	t.Helper()
	if r.Err != "" || r.Reply != "echo:ping" {
		t.Fatalf("client got %q (err %q), want the destination's echo", r.Reply, r.Err)
	}
	line := a.waitLog(t, "connection", func(l map[string]any) bool { return l["client"] == r.Local })
	if line["orig_dst"] != dst {
		t.Errorf("agent logged orig_dst %v, want %s", line["orig_dst"], dst)
	}
	if line["pid"] != float64(r.PID) {
		t.Errorf("agent logged pid %v, want the client's %d", line["pid"], r.PID)
	}
	if line["cgroup_id"] != cgroupID(t, clientCg) {
		t.Errorf("agent logged cgroup_id %v, want %v (%s)", line["cgroup_id"], cgroupID(t, clientCg), clientCg)
	}
	if line["bytes_sent"] != float64(4) || line["bytes_received"] != float64(9) {
		t.Errorf("agent logged %v bytes sent and %v received, want 4 and 9", line["bytes_sent"], line["bytes_received"])
	}
	// The destination saw the agent's connection, not the client's.
	if peers := echo.seen(); len(peers) != 1 || peers[0] == r.Local {
		t.Errorf("destination saw peers %v, want exactly one, the agent's (client was %s)", peers, r.Local)
	}
}

func TestHostProcessIsInterceptedWithItsOrigin(t *testing.T) {
	n := newNode(t)
	echo4 := newEchoServer(t, "127.0.1.2:443")
	a := startAgent(t, n.agent, n.agentArgs("--fail-mode", "fail-open", "--capture-dns=false",
		"--target", "127.0.1.2:443", "--target", "[::1]:443", "--no-sni", "splice", "--proxy-listen", "127.0.0.1:15101,[::1]:15101")...)

	// The agent runs inside the intercepted subtree: were its own upstream
	// connection redirected, it would loop and the exchange would fail.
	r := kerneltest.RunHelper(t, n.client, nil, "tcp", "127.0.1.2:443", "ping")
	checkProxied(t, a, echo4, r, n.client, "127.0.1.2:443")

	t.Run("ipv6", func(t *testing.T) {
		echo6 := newEchoServer(t, "[::1]:443")
		r := kerneltest.RunHelper(t, n.client, nil, "tcp", "[::1]:443", "ping")
		checkProxied(t, a, echo6, r, n.client, "[::1]:443")
	})
	t.Run("ipv4-mapped", func(t *testing.T) {
		before := len(echo4.seen())
		r := kerneltest.RunHelper(t, n.client, nil, "tcp-mapped", "127.0.1.2:443", "ping")
		if r.Reply != "echo:ping" {
			t.Fatalf("client got %q (%s)", r.Reply, r.Err)
		}
		a.waitLog(t, "connection", func(l map[string]any) bool {
			return strings.HasSuffix(r.Local, fmt.Sprint(":", portOf(l["client"]))) && l["orig_dst"] == "127.0.1.2:443"
		})
		if got := len(echo4.seen()); got != before+1 {
			t.Errorf("destination saw %d new connections, want 1", got-before)
		}
	})
	t.Run("non-target", func(t *testing.T) {
		other := newEchoServer(t, "127.0.1.3:443")
		before := a.count("connection")
		r := kerneltest.RunHelper(t, n.client, nil, "tcp", other.addr, "ping")
		if r.Reply != "echo:ping" {
			t.Fatalf("client got %q (%s)", r.Reply, r.Err)
		}
		if peers := other.seen(); len(peers) != 1 || peers[0] != r.Local {
			t.Errorf("destination saw %v, want the client %s itself", peers, r.Local)
		}
		time.Sleep(100 * time.Millisecond)
		if a.count("connection") != before {
			t.Error("the agent proxied a connection to a non-target")
		}
	})
	t.Run("udp", func(t *testing.T) {
		if r := kerneltest.RunHelper(t, n.client, nil, "udp-sendto", "127.0.1.2:443"); r.Errno != "EPERM" {
			t.Errorf("UDP to target:443 gave %q, want EPERM", r.Err)
		}
		if r := kerneltest.RunHelper(t, n.client, nil, "udp-sendto", "127.0.1.2:4443"); r.Err != "" {
			t.Errorf("UDP elsewhere gave %q, want success", r.Err)
		}
	})
}

func portOf(v any) string {
	ap, err := netip.ParseAddrPort(fmt.Sprint(v))
	if err != nil {
		return "?"
	}
	return fmt.Sprint(ap.Port())
}

func TestPodInItsOwnNetworkNamespaceIsIntercepted(t *testing.T) {
	n := newNode(t)
	ns := kerneltest.NewNetns(t, 1)
	// The "API" sits behind the node: the pod reaches it through its veth.
	dst := netip.AddrPortFrom(ns.HostAddr, 443).String()
	echo := newEchoServer(t, dst)
	nodeProxy := netip.AddrPortFrom(ns.HostAddr, 15102).String()
	a := startAgent(t, n.agent, n.agentArgs("--fail-mode", "fail-open", "--capture-dns=false",
		"--target", dst, "--no-sni", "splice", "--proxy-listen", "127.0.0.1:15102,"+nodeProxy)...)

	r := kerneltest.RunHelper(t, n.client, ns.Command, "tcp", dst, "ping")
	if !strings.HasPrefix(r.Local, ns.PodAddr.String()+":") {
		t.Fatalf("client's address %s is not in the pod's namespace", r.Local)
	}
	checkProxied(t, a, echo, r, n.client, dst)
}

func TestDNSAnswerSeenOnTheNodeAddsATarget(t *testing.T) {
	n := newNode(t)
	const name = "api.promptrail-test.example"
	cdn := netip.MustParseAddr("127.0.1.4")
	resolver := startDNS(t, "127.0.1.53:53", name, cdn)
	echo := newEchoServer(t, "127.0.1.4:443")
	// The resolver stands for the cluster DNS service, whose answers are
	// trusted; the agent's own resolv.conf points nowhere.
	a := startAgent(t, n.agent, n.agentArgs("--fail-mode", "fail-open", "--capture-dns", "--dns-server", "127.0.1.53",
		"--target", name+":443", "--no-sni", "splice", "--proxy-listen", "127.0.0.1:15103")...)

	// Before any DNS answer the address is nobody's target.
	r := kerneltest.RunHelper(t, n.client, nil, "tcp", "127.0.1.4:443", "ping")
	if peers := echo.seen(); len(peers) != 1 || peers[0] != r.Local {
		t.Fatalf("before the DNS answer the connection went %v, want direct from %s", peers, r.Local)
	}

	res := kerneltest.RunHelper(t, n.client, nil, "resolve", resolver, name)
	if !slices.Contains(res.Addrs, cdn.String()) {
		t.Fatalf("resolver answered %v (%s), want %s", res.Addrs, res.Err, cdn)
	}
	a.waitLog(t, "target added", func(l map[string]any) bool { return l["prefix"] == "127.0.1.4/32" })
	r = kerneltest.RunHelper(t, n.client, nil, "tcp", "127.0.1.4:443", "ping")
	if r.Reply != "echo:ping" {
		t.Fatalf("client got %q (%s)", r.Reply, r.Err)
	}
	a.waitLog(t, "connection", func(l map[string]any) bool {
		return l["client"] == r.Local && l["orig_dst"] == "127.0.1.4:443"
	})
}

// startDNS serves A records for name on addr (UDP) and returns addr.
func startDNS(t *testing.T, addr, name string, a netip.Addr) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("DNS server on %s: %v", addr, err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, qq := range q.Question {
			if qq.Qtype == dns.TypeA && strings.EqualFold(qq.Name, dns.Fqdn(name)) {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300},
					A:   a.AsSlice(),
				})
			}
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return addr
}
