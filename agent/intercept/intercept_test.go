package intercept_test

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/promptrail/promptrail/agent/intercept"
	"github.com/promptrail/promptrail/internal/kerneltest"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	kerneltest.HelperMain()
	os.Exit(m.Run())
}

// fixture is an Interceptor attached to a fresh cgroup, with a stand-in
// proxy that answers each redirected connection with its origin as JSON.
type fixture struct {
	in      *intercept.Interceptor
	cg      string // the attached cgroup
	client  string // a child of cg where clients run
	pinPath string
}

func setup(t *testing.T, mutate func(*intercept.Config)) *fixture {
	t.Helper()
	kerneltest.RequirePrivileges(t)
	f := &fixture{cg: kerneltest.NewCgroup(t, "")}
	f.client = kerneltest.NewCgroup(t, f.cg)
	f.pinPath = kerneltest.PinDir(t, intercept.Remove)
	p4, p6 := originServer(t, f)
	cfg := intercept.Config{
		CgroupRoot: f.cg,
		PinPath:    f.pinPath,
		FailMode:   intercept.FailOpen,
		HostProxy4: p4,
		HostProxy6: p6,
		Ports:      []uint16{443},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	in, err := intercept.Attach(cfg)
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	t.Cleanup(func() { in.Close() })
	f.in = in
	if err := in.ApplyTargets(prefixes("127.0.0.2/32", "::1/128"), nil); err != nil {
		t.Fatalf("ApplyTargets: %v", err)
	}
	return f
}

// originServer listens on loopback (IPv4 and IPv6, one port) and replies
// to every connection with the origin the Interceptor reports for it.
func originServer(t *testing.T, f *fixture) (netip.AddrPort, netip.AddrPort) {
	t.Helper()
	ln4, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln4.Addr().(*net.TCPAddr).Port
	ln6, err := net.Listen("tcp", "[::1]:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range []net.Listener{ln4, ln6} {
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					// Read the request first: closing with unread data resets.
					c.SetDeadline(time.Now().Add(5 * time.Second))
					io.Copy(io.Discard, c)
					o, err := f.in.Origin(c.RemoteAddr().(*net.TCPAddr).AddrPort())
					if err != nil {
						fmt.Fprintf(c, `{"error":%q}`, err.Error())
						return
					}
					json.NewEncoder(c).Encode(o)
				}()
			}
		}()
	}
	return ln4.Addr().(*net.TCPAddr).AddrPort(), ln6.Addr().(*net.TCPAddr).AddrPort()
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func decodeOrigin(t *testing.T, r kerneltest.Result) intercept.Origin {
	t.Helper()
	if r.Err != "" {
		t.Fatalf("client failed: %s", r.Err)
	}
	var o intercept.Origin
	if err := json.Unmarshal([]byte(r.Reply), &o); err != nil || !o.Dst.IsValid() {
		t.Fatalf("reply %q is not an origin: %v", r.Reply, err)
	}
	return o
}

func TestRedirectReportsOrigin(t *testing.T) {
	f := setup(t, nil)
	cgid, err := intercept.CgroupID(f.client)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		helper string
		addr   string
		want   string
	}{
		{"ipv4", "tcp", "127.0.0.2:443", "127.0.0.2:443"},
		{"ipv6", "tcp", "[::1]:443", "[::1]:443"},
		{"ipv4-mapped", "tcp-mapped", "127.0.0.2:443", "127.0.0.2:443"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := kerneltest.RunHelper(t, f.client, nil, tt.helper, tt.addr, "hello")
			o := decodeOrigin(t, r)
			if o.Dst.String() != tt.want {
				t.Errorf("original destination %s, want %s", o.Dst, tt.want)
			}
			if int(o.TGID) != r.PID {
				t.Errorf("pid %d, want the client's %d", o.TGID, r.PID)
			}
			if o.CgroupID != cgid {
				t.Errorf("cgroup id %d, want %d (%s)", o.CgroupID, cgid, f.client)
			}
			if o.UID != uint32(os.Getuid()) || o.Comm == "" {
				t.Errorf("uid %d comm %q, want uid %d and a command name", o.UID, o.Comm, os.Getuid())
			}
			if time.Since(o.ConnectTime).Abs() > time.Minute {
				t.Errorf("connect time %s is not now", o.ConnectTime)
			}
		})
	}
}

func echoServer(t *testing.T, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				c.Write(append([]byte("echo:"), b...))
			}()
		}
	}()
	return ln.Addr().String()
}

func TestNonTargetsPassUntouched(t *testing.T) {
	f := setup(t, nil)
	tests := []struct{ name, addr string }{
		{"other address, target port", "127.0.0.3:443"},
		{"target address, other port", "127.0.0.2:0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := echoServer(t, tt.addr)
			r := kerneltest.RunHelper(t, f.client, nil, "tcp", addr, "hi")
			if r.Err != "" || r.Reply != "echo:hi" {
				t.Fatalf("reply %q err %q, want the echo server's reply", r.Reply, r.Err)
			}
		})
	}
}

func TestOnlyRegisteredAgentSocketsAreNotRedirected(t *testing.T) {
	// The agent's dialers register their sockets; a process that merely
	// sets the agent's mark (CAP_NET_ADMIN is enough) is intercepted. The
	// helper processes cannot use the registry, so the test process itself
	// connects, moved into the client cgroup for the duration of the dial.
	tests := []struct {
		name         string
		control      func(f *fixture) func(string, string, syscall.RawConn) error
		wantRedirect bool
		wantCounters map[string]uint64
	}{
		{"registered and marked", func(f *fixture) func(string, string, syscall.RawConn) error {
			return f.in.Sockets().Control
		}, false, map[string]uint64{"skipped_agent": 1, "redirected": 0, "forged_mark": 0}},
		{"mark only (forged)", func(*fixture) func(string, string, syscall.RawConn) error {
			return kerneltest.MarkControl(intercept.DefaultMark)
		}, true, map[string]uint64{"skipped_agent": 0, "redirected": 1, "forged_mark": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t, nil)
			addr := echoServer(t, "127.0.0.2:443")
			c := kerneltest.InCgroup(t, f.client, func() (net.Conn, error) {
				d := net.Dialer{Control: tt.control(f)}
				return d.Dial("tcp", addr)
			})
			c.Write([]byte("x"))
			c.(*net.TCPConn).CloseWrite()
			b, _ := io.ReadAll(c)
			c.Close()
			if redirected := string(b) != "echo:x"; redirected != tt.wantRedirect {
				t.Errorf("connection got %q: redirected %v, want %v", b, redirected, tt.wantRedirect)
			}
			counts, err := f.in.Counters()
			if err != nil {
				t.Fatal(err)
			}
			for k, want := range tt.wantCounters {
				if counts[k] != want {
					t.Errorf("counter %s = %d, want %d (all: %v)", k, counts[k], want, counts)
				}
			}
		})
	}
}

func TestUDPToTargetIsRefused(t *testing.T) {
	f := setup(t, nil)
	tests := []struct {
		helper, addr string
		refused      bool
	}{
		{"udp-connect", "127.0.0.2:443", true},
		{"udp-sendto", "127.0.0.2:443", true},
		{"udp-connect", "[::1]:443", true},
		{"udp-sendto", "[::1]:443", true},
		{"udp-connect", "127.0.0.2:53", false},
		{"udp-sendto", "127.0.0.2:53", false},
		{"udp-sendto", "127.0.0.3:443", false},
	}
	for _, tt := range tests {
		t.Run(tt.helper+"/"+tt.addr, func(t *testing.T) {
			r := kerneltest.RunHelper(t, f.client, nil, tt.helper, tt.addr)
			if tt.refused && r.Errno != "EPERM" {
				t.Errorf("got err %q, want EPERM", r.Err)
			}
			if !tt.refused && r.Err != "" {
				t.Errorf("got err %q, want success", r.Err)
			}
		})
	}
}

func TestOriginTablesShrinkWhenConnectionsClose(t *testing.T) {
	f := setup(t, nil)
	const n = 5000
	r := kerneltest.RunHelper(t, f.client, nil, "connect-loop", "127.0.0.2:443", strconv.Itoa(n))
	if r.OK != n {
		t.Fatalf("%d of %d connections succeeded: %s", r.OK, n, r.Err)
	}
	counts, err := f.in.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if counts["redirected"] != n || counts["rekeyed"] != n {
		t.Errorf("counters %v, want %d redirected and rekeyed", counts, n)
	}
	var pending, established int
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if pending, established, err = f.in.TableSizes(); err != nil {
			t.Fatal(err)
		}
		if pending == 0 && established == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("after %d closed connections the tables hold %d pending and %d established origins, want none",
		n, pending, established)
}

func TestFailOpenDetachesOnClose(t *testing.T) {
	f := setup(t, nil)
	if n := attachedPrograms(t, f.cg); n == 0 {
		t.Fatal("no program attached while the agent runs")
	}
	if err := f.in.Close(); err != nil {
		t.Fatal(err)
	}
	if n := attachedPrograms(t, f.cg); n != 0 {
		t.Fatalf("%d programs still attached after Close in fail-open mode", n)
	}
	addr := echoServer(t, "127.0.0.2:443")
	r := kerneltest.RunHelper(t, f.client, nil, "tcp", addr, "direct")
	if r.Reply != "echo:direct" {
		t.Fatalf("after the agent stopped got %q (%s), want to reach the destination directly", r.Reply, r.Err)
	}
}

func TestFailClosedRefusesUntilAgentReturns(t *testing.T) {
	var cfg intercept.Config
	f := setup(t, func(c *intercept.Config) {
		c.FailMode = intercept.FailClosed
		c.HeartbeatTimeout = 2 * time.Second
		cfg = *c
	})
	if err := f.in.Close(); err != nil {
		t.Fatal(err)
	}
	if n := attachedPrograms(t, f.cg); n == 0 {
		t.Fatal("fail-closed programs went away with the agent")
	}
	r := kerneltest.RunHelper(t, f.client, nil, "tcp", "127.0.0.2:443", "x")
	if r.Errno != "EPERM" {
		t.Fatalf("with the agent stopped, connect to a target gave %q, want EPERM", r.Err)
	}
	other := echoServer(t, "127.0.0.3:443")
	if r := kerneltest.RunHelper(t, f.client, nil, "tcp", other, "y"); r.Reply != "echo:y" {
		t.Fatalf("non-target connect with the agent stopped: %q %s", r.Reply, r.Err)
	}

	// A new agent takes the pinned programs over without a gap.
	in2, err := intercept.Attach(cfg)
	if err != nil {
		t.Fatalf("second Attach: %v", err)
	}
	t.Cleanup(func() { in2.Close() })
	f.in = in2
	if err := in2.ApplyTargets(prefixes("127.0.0.2/32"), nil); err != nil {
		t.Fatal(err)
	}
	if n := attachedPrograms(t, f.cg); n != 6 {
		t.Errorf("%d programs attached after takeover, want 6 (no duplicates)", n)
	}
	decodeOrigin(t, kerneltest.RunHelper(t, f.client, nil, "tcp", "127.0.0.2:443", "x"))

	// Without heartbeats the programs treat the agent as gone.
	time.Sleep(cfg.HeartbeatTimeout + time.Second)
	if r := kerneltest.RunHelper(t, f.client, nil, "tcp", "127.0.0.2:443", "x"); r.Errno != "EPERM" {
		t.Fatalf("without heartbeats connect gave %q, want EPERM", r.Err)
	}

	in2.Close()
	if err := intercept.Remove(f.pinPath); err != nil {
		t.Fatal(err)
	}
	if n := attachedPrograms(t, f.cg); n != 0 {
		t.Fatalf("%d programs attached after Remove", n)
	}
}

func attachedPrograms(t *testing.T, dir string) int { return kerneltest.AttachedPrograms(t, dir) }

func TestRawUDPToATargetIsDroppedAtEgress(t *testing.T) {
	// A raw socket builds its own UDP header and passes neither connect
	// nor sendmsg: only the egress program stands between it and the
	// target. Listeners on ephemeral ports, made target ports, keep
	// parallel runs apart; port 443 itself is covered by the e2e test.
	l4, l6, other := udpListener(t, "127.0.0.2:0"), udpListener(t, "[::1]:0"), udpListener(t, "127.0.0.3:0")
	f := setup(t, func(c *intercept.Config) {
		c.Ports = []uint16{443, l4.port(), l6.port(), other.port()}
	})
	tests := []struct {
		name    string
		l       *udpSink
		dropped bool
	}{
		{"ipv4 target", l4, true},
		{"ipv6 target", l6, true},
		{"ipv4 other address", other, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, err := f.in.Counters()
			if err != nil {
				t.Fatal(err)
			}
			r := kerneltest.RunHelper(t, f.client, nil, "udp-raw", tt.l.addr)
			// A packet dropped at egress fails the send with EPERM.
			if wantErrno := map[bool]string{true: "EPERM"}[tt.dropped]; r.Errno != wantErrno {
				t.Errorf("raw send gave %q, want errno %q", r.Err, wantErrno)
			}
			if got := tt.l.received(500 * time.Millisecond); got == tt.dropped {
				t.Errorf("listener on %s received a datagram: %v, want %v", tt.l.addr, got, !tt.dropped)
			}
			after, err := f.in.Counters()
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]uint64{true: 1, false: 0}[tt.dropped]; after["dropped_quic"]-before["dropped_quic"] != want {
				t.Errorf("dropped_quic counted %d, want %d", after["dropped_quic"]-before["dropped_quic"], want)
			}
		})
	}
}

func TestConnectedUDPIsDroppedOnceItsPeerBecomesATarget(t *testing.T) {
	// connect4 refuses UDP to a target, but a socket connected before its
	// peer became a target (learned from DNS later, say) sends with no
	// address to check: the egress program still drops it.
	l := udpListener(t, "127.0.0.2:0")
	f := setup(t, func(c *intercept.Config) { c.Ports = []uint16{443, l.port()} })
	target := prefixes("127.0.0.2/32")
	if err := f.in.ApplyTargets(nil, target); err != nil {
		t.Fatal(err)
	}
	c := kerneltest.InCgroup(t, f.client, func() (net.Conn, error) { return net.Dial("udp", l.addr) })
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte("before")); err != nil || !l.received(2*time.Second) {
		t.Fatalf("before the peer was a target: write %v, or nothing arrived", err)
	}
	if err := f.in.ApplyTargets(target, nil); err != nil {
		t.Fatal(err)
	}
	_, err := c.Write([]byte("after"))
	if !errors.Is(err, unix.EPERM) {
		t.Errorf("write to a target gave %v, want EPERM", err)
	}
	if l.received(500 * time.Millisecond) {
		t.Error("the datagram reached the target")
	}
}

func TestRawTCPToATargetIsDroppedAtEgress(t *testing.T) {
	// A TCP stack of the workload's own, on a raw socket, never connects:
	// only the egress program sees its packets to the target.
	f := setup(t, nil)
	sport := uint16(20000 + os.Getpid()%20000)
	seen := rawTCPWatcher(t, sport)
	tests := []struct {
		addr    string
		dropped bool
	}{
		{"127.0.0.2:443", true},
		{"127.0.0.3:443", false},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			r := kerneltest.RunHelper(t, f.client, nil, "tcp-raw-syn", tt.addr, strconv.Itoa(int(sport)))
			if wantErrno := map[bool]string{true: "EPERM"}[tt.dropped]; r.Errno != wantErrno {
				t.Errorf("raw SYN gave %q, want errno %q", r.Err, wantErrno)
			}
			arrived := false
			deadline := time.After(500 * time.Millisecond)
		wait:
			for {
				select {
				case dst := <-seen:
					if dst == tt.addr {
						arrived = true
						break wait
					}
				case <-deadline:
					break wait
				}
			}
			if arrived == tt.dropped {
				t.Errorf("the SYN to %s arrived: %v, want %v", tt.addr, arrived, !tt.dropped)
			}
		})
	}
	counts, err := f.in.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if counts["dropped_raw"] != 1 {
		t.Errorf("dropped_raw counted %d, want 1", counts["dropped_raw"])
	}
}

// rawTCPWatcher reports the destination of every IPv4 TCP packet from
// source port sport that arrives on this host.
func rawTCPWatcher(t *testing.T, sport uint16) chan string {
	t.Helper()
	// Non-blocking, so that the runtime poller serves it and Close ends the read.
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_TCP)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "raw-tcp")
	t.Cleanup(func() { f.Close() })
	seen := make(chan string, 64)
	go func() {
		b := make([]byte, 65536)
		for {
			n, err := f.Read(b)
			if err != nil {
				return
			}
			ihl := int(b[0]&0x0f) * 4
			if n < ihl+4 || binary.BigEndian.Uint16(b[ihl:]) != sport {
				continue
			}
			dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[16:20])), binary.BigEndian.Uint16(b[ihl+2:]))
			select {
			case seen <- dst.String():
			default:
			}
		}
	}()
	return seen
}

// udpSink is a UDP listener that reports whether a datagram arrived.
type udpSink struct {
	addr string
	got  chan struct{}
}

func udpListener(t *testing.T, addr string) *udpSink {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	s := &udpSink{addr: pc.LocalAddr().String(), got: make(chan struct{}, 16)}
	go func() {
		b := make([]byte, 1500)
		for {
			if _, _, err := pc.ReadFrom(b); err != nil {
				return
			}
			s.got <- struct{}{}
		}
	}()
	return s
}

func (s *udpSink) port() uint16 { return netip.MustParseAddrPort(s.addr).Port() }

// received waits up to d for a datagram.
func (s *udpSink) received(d time.Duration) bool {
	select {
	case <-s.got:
		return true
	case <-time.After(d):
		return false
	}
}
