package kerneltest

import (
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// AttachedPrograms counts the programs attached directly to the cgroup at
// dir for every hook type promptrail uses.
func AttachedPrograms(tb testing.TB, dir string) int {
	tb.Helper()
	f, err := os.Open(dir)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	n := 0
	for _, at := range []ebpf.AttachType{ebpf.AttachCGroupInet4Connect, ebpf.AttachCGroupInet6Connect,
		ebpf.AttachCGroupUDP4Sendmsg, ebpf.AttachCGroupUDP6Sendmsg, ebpf.AttachCGroupSockOps, ebpf.AttachCGroupInetIngress,
		ebpf.AttachCGroupInetEgress} {
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: at})
		if err != nil {
			tb.Fatalf("querying %s programs on %s: %v", at, dir, err)
		}
		n += len(res.Programs)
	}
	return n
}
