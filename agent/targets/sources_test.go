package targets

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestObserveDNSLearnsOnlyFromTrustedResolvers(t *testing.T) {
	const host = "api.openai.com"
	answer := response(host, aRR(host, "192.0.2.10", 60))
	resolvConf := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolvConf, []byte("nameserver 198.51.100.53\nnameserver 2001:db8:1::53\nnameserver 127.0.0.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sources := NewDNSSources(resolvConf, []netip.Addr{netip.MustParseAddr("10.96.0.10")})
	tests := []struct {
		name    string
		src     string
		arrival Arrival
		learned bool
	}{
		{"resolv.conf nameserver", "198.51.100.53", Arrival{}, true},
		{"resolv.conf IPv6 nameserver", "2001:db8:1::53", Arrival{}, true},
		{"configured cluster DNS", "10.96.0.10", Arrival{}, true},
		{"cluster DNS answering a pod", "10.96.0.10", Arrival{OtherNetns: true}, true},
		{"loopback resolver over the host's loopback", "127.0.0.53", Arrival{Loopback: true}, true},
		{"a workload's own port 53", "198.51.100.66", Arrival{}, false},
		{"untrusted loopback address", "127.0.0.1", Arrival{Loopback: true}, false},
		// Sent to itself with the resolver's address forged: only a
		// packet from its own namespace arrives over loopback.
		{"trusted resolver forged over loopback", "198.51.100.53", Arrival{Loopback: true}, false},
		{"cluster DNS forged over loopback", "10.96.0.10", Arrival{Loopback: true}, false},
		// The host's loopback resolver is never heard on a pod's loopback.
		{"loopback resolver forged in a pod", "127.0.0.53", Arrival{Loopback: true, OtherNetns: true}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, a, _ := newTestSet(t, Config{Hosts: []string{host}, Resolver: newFakeResolver(), DNSSources: sources})
			err := s.ObserveDNS(mustPacketFrom(t, netip.MustParseAddr(tt.src), 53, answer), tt.arrival)
			if tt.learned && err != nil {
				t.Fatalf("ObserveDNS: %v", err)
			}
			if !tt.learned && !errors.Is(err, ErrUntrustedDNSSource) {
				t.Fatalf("ObserveDNS returned %v, want ErrUntrustedDNSSource", err)
			}
			s.sync()
			if got := s.Contains(netip.MustParseAddr("192.0.2.10")); got != tt.learned {
				t.Errorf("address learned: %v, want %v (applied %v)", got, tt.learned, a.applied())
			}
		})
	}
}

func TestDNSSourcesFollowResolvConfEdits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	write := func(content string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	old, new := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")
	write("nameserver 198.51.100.1\n", t0)
	clock := &fakeClock{now: t0}
	d := NewDNSSources(path, nil)
	d.now = clock.Now
	if !d.Contains(old) || d.Contains(new) {
		t.Fatalf("before the edit: trusted %v, want only %s", d.Addrs(), old)
	}
	write("nameserver 198.51.100.2\n", t0.Add(time.Minute))
	if !d.Contains(old) {
		t.Error("the edit took effect before the recheck interval")
	}
	clock.Advance(sourcesRecheck)
	if d.Contains(old) || !d.Contains(new) {
		t.Errorf("after the edit: trusted %v, want only %s", d.Addrs(), new)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	clock.Advance(sourcesRecheck)
	if d.Contains(new) {
		t.Error("a removed resolv.conf is still trusted")
	}
}
