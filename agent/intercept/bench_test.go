package intercept_test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/promptrail/promptrail/agent/intercept"
	"github.com/promptrail/promptrail/internal/kerneltest"
)

// BenchmarkConnectHookCost measures what the programs add to connect():
// the same loop of socket/connect/close against a local listener from a
// cgroup without programs (bare), from one with them attached connecting
// to a non-target (the cost every connection on the node pays), and to a
// target (redirect plus origin bookkeeping). The three alternate in rounds
// so that warm-up and noise fall on all alike; it reports ns/connect for
// each and the ratios to bare, from one run.
func BenchmarkConnectHookCost(b *testing.B) {
	kerneltest.RequirePrivileges(b)
	bareCg := kerneltest.NewCgroup(b, "")
	hookedCg := kerneltest.NewCgroup(b, "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	direct := ln.Addr().(*net.TCPAddr).AddrPort()
	target := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), 443)
	in, err := intercept.Attach(intercept.Config{
		CgroupRoot: hookedCg, PinPath: kerneltest.PinDir(b, intercept.Remove), FailMode: intercept.FailOpen,
		HostProxy4: direct, Ports: []uint16{443},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	if err := in.ApplyTargets([]netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}, nil); err != nil {
		b.Fatal(err)
	}

	loop := func(cg string, dst netip.AddrPort, n int) time.Duration {
		return kerneltest.InCgroup(b, cg, func() (time.Duration, error) {
			start := time.Now()
			for range n {
				if err := connectClose(dst); err != nil {
					return 0, err
				}
			}
			return time.Since(start), nil
		})
	}
	const rounds = 50
	loop(bareCg, direct, 200) // warm up
	loop(hookedCg, target, 200)
	b.ResetTimer()
	var bare, hooked, redirected time.Duration
	for r := range rounds {
		n := b.N / rounds
		if r == 0 {
			n += b.N % rounds
		}
		bare += loop(bareCg, direct, n)
		hooked += loop(hookedCg, direct, n)
		redirected += loop(hookedCg, target, n)
	}
	b.StopTimer()

	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N) }
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(per(bare), "bare-ns/connect")
	b.ReportMetric(per(hooked), "non-target-ns/connect")
	b.ReportMetric(per(redirected), "redirected-ns/connect")
	b.ReportMetric(float64(hooked)/float64(bare), "non-target/bare")
	b.ReportMetric(float64(redirected)/float64(bare), "redirected/bare")
}

// connectClose connects a TCP socket and resets it at once (SO_LINGER 0),
// so that a long loop leaves no TIME_WAIT sockets behind.
func connectClose(dst netip.AddrPort) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
		return err
	}
	return unix.Connect(fd, &unix.SockaddrInet4{Addr: dst.Addr().As4(), Port: int(dst.Port())})
}
