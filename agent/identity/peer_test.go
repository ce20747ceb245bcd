package identity

import (
	"net"
	"net/netip"
	"os"
	"testing"
)

func TestParseProcAddr(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"0100007F:1F90", "127.0.0.1:8080"},
		{"00000000000000000000000001000000:01BB", "[::1]:443"},
		{"0000000000000000FFFF00000100007F:0050", "127.0.0.1:80"},
	} {
		got, ok := parseProcAddr(tt.in)
		if !ok || got.String() != tt.want {
			t.Errorf("%s: got %v %v, want %s", tt.in, got, ok, tt.want)
		}
	}
	for _, bad := range []string{"", "zz:1", "0100007F", "0100:1"} {
		if _, ok := parseProcAddr(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

// TestPeerOriginFindsThisProcess: a connection this test makes to itself
// over loopback is found back to this very process.
func TestPeerOriginFindsThisProcess(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := &Resolver{cfg: Config{ProcRoot: "/proc", CgroupRoot: t.TempDir()}, cgroups: newCgroupIndex(t.TempDir(), "/proc", "", 16, nil)}
	o, err := r.PeerOrigin(c.LocalAddr().(*net.TCPAddr).AddrPort(), ln.Addr().(*net.TCPAddr).AddrPort())
	if err != nil {
		t.Fatal(err)
	}
	if o.PID != uint32(os.Getpid()) || o.UID != uint32(os.Getuid()) || o.GID != uint32(os.Getgid()) || o.Comm == "" {
		t.Errorf("origin %+v, want this process (pid %d uid %d gid %d)", o, os.Getpid(), os.Getuid(), os.Getgid())
	}
	if _, err := r.PeerOrigin(netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2")); err == nil {
		t.Error("a connection nobody has was found")
	}
}
