package kerneltest

import (
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
)

// Netns is a network namespace joined to the host by a veth pair, as a
// pod's is: the host side has HostAddr, the namespace side PodAddr, and the
// namespace routes everything through the host.
type Netns struct {
	Name     string
	HostAddr netip.Addr
	PodAddr  netip.Addr
}

// NewNetns creates a namespace with a veth pair addressed from
// 198.18.<n>.0/30 (RFC 2544 benchmarking space: never routed to anyone
// else) and removes both when the test ends. n tells concurrent tests apart.
func NewNetns(tb testing.TB, n byte) *Netns {
	tb.Helper()
	var rnd [3]byte
	rand.Read(rnd[:])
	id := hex.EncodeToString(rnd[:])
	ns := &Netns{
		Name:     "prt-" + id,
		HostAddr: netip.AddrFrom4([4]byte{198, 18, n, 1}),
		PodAddr:  netip.AddrFrom4([4]byte{198, 18, n, 2}),
	}
	hostIf, podIf := "prh"+id, "prp"+id
	tb.Cleanup(func() {
		run(tb, true, "ip", "link", "del", hostIf)
		run(tb, true, "ip", "netns", "del", ns.Name)
	})
	steps := [][]string{
		{"ip", "netns", "add", ns.Name},
		{"ip", "link", "add", hostIf, "type", "veth", "peer", "name", podIf},
		{"ip", "link", "set", podIf, "netns", ns.Name},
		{"ip", "addr", "add", ns.HostAddr.String() + "/30", "dev", hostIf},
		{"ip", "link", "set", hostIf, "up"},
		{"ip", "-n", ns.Name, "addr", "add", ns.PodAddr.String() + "/30", "dev", podIf},
		{"ip", "-n", ns.Name, "link", "set", podIf, "up"},
		{"ip", "-n", ns.Name, "link", "set", "lo", "up"},
		{"ip", "-n", ns.Name, "route", "add", "default", "via", ns.HostAddr.String()},
	}
	for _, s := range steps {
		run(tb, false, s...)
	}
	return ns
}

// Command returns the command line that runs argv inside the namespace.
func (ns *Netns) Command(argv ...string) []string {
	return append([]string{"ip", "netns", "exec", ns.Name}, argv...)
}

func run(tb testing.TB, quiet bool, argv ...string) {
	tb.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil && !quiet {
		tb.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
	}
}
