package agent

import (
	"net/netip"
	"reflect"
	"testing"
)

func TestPlanTargets(t *testing.T) {
	tests := []struct {
		name      string
		targets   []string
		cidrs     []string
		wantHosts []string
		wantCIDRs []string
		wantPorts []uint16
		wantErr   bool
	}{
		{name: "default", wantHosts: []string{"api.openai.com"}, wantPorts: []uint16{443}},
		{name: "names, IPs and ports", targets: []string{"API.OpenAI.com:443", "127.0.0.2", "[::1]:8443", "example.test:8443"},
			wantHosts: []string{"api.openai.com", "example.test"}, wantCIDRs: []string{"127.0.0.2/32", "::1/128"}, wantPorts: []uint16{443, 8443}},
		{name: "bare IPv6", targets: []string{"2001:db8::1"}, wantCIDRs: []string{"2001:db8::1/128"}, wantPorts: []uint16{443}},
		{name: "cidrs", targets: []string{"a.test"}, cidrs: []string{"10.0.0.0/8"}, wantHosts: []string{"a.test"},
			wantCIDRs: []string{"10.0.0.0/8"}, wantPorts: []uint16{443}},
		{name: "bad port", targets: []string{"a.test:0"}, wantErr: true},
		{name: "port too large", targets: []string{"a.test:70000"}, wantErr: true},
		{name: "bad cidr", cidrs: []string{"10.0.0.0/33"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := planTargets(tt.targets, tt.cidrs)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			var cidrs []string
			for _, c := range p.cidrs {
				cidrs = append(cidrs, c.String())
			}
			if !reflect.DeepEqual(p.hosts, tt.wantHosts) || !reflect.DeepEqual(cidrs, tt.wantCIDRs) || !reflect.DeepEqual(p.ports, tt.wantPorts) {
				t.Errorf("got hosts %v cidrs %v ports %v; want %v %v %v", p.hosts, cidrs, p.ports, tt.wantHosts, tt.wantCIDRs, tt.wantPorts)
			}
		})
	}
}

func TestParseListen(t *testing.T) {
	tests := []struct {
		name                       string
		in                         []string
		host4, host6, node4, node6 string
		wantErr                    bool
	}{
		{name: "default serves the host only", host4: "127.0.0.1:15001", host6: "[::1]:15001"},
		{name: "node addresses serve pods", in: []string{"127.0.0.1:15001", "192.0.2.7:15001", "[2001:db8::7]:15001", "192.0.2.8:15001"},
			host4: "127.0.0.1:15001", node4: "192.0.2.7:15001", node6: "[2001:db8::7]:15001"},
		{name: "unspecified address", in: []string{"0.0.0.0:15001"}, wantErr: true},
		{name: "no port", in: []string{"127.0.0.1:0"}, wantErr: true},
		{name: "garbage", in: []string{"localhost:15001"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := parseListen(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			for _, c := range []struct {
				got  netip.AddrPort
				want string
			}{{p.host4, tt.host4}, {p.host6, tt.host6}, {p.node4, tt.node4}, {p.node6, tt.node6}} {
				if want := parseOrZero(c.want); want != c.got {
					t.Errorf("got %v, want %q (plan %+v)", c.got, c.want, p)
				}
			}
		})
	}
}

func parseOrZero(s string) netip.AddrPort {
	if s == "" {
		return netip.AddrPort{}
	}
	return netip.MustParseAddrPort(s)
}

func TestCgroupMountOfASubtree(t *testing.T) {
	// A hybrid host (v2 at /sys/fs/cgroup/unified) and a DaemonSet's view
	// of the host hierarchy.
	const mountinfo = `20 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
21 30 0:38 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 30 0:39 / /host/sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw,nsdelegate
`
	for dir, want := range map[string]string{
		"/sys/fs/cgroup/unified":                    "/sys/fs/cgroup/unified",
		"/sys/fs/cgroup/unified/promptrail-test-1/": "/sys/fs/cgroup/unified",
		"/host/sys/fs/cgroup":                       "/host/sys/fs/cgroup",
		"/host/sys/fs/cgroup/kubepods.slice":        "/host/sys/fs/cgroup",
		"/sys/fs/cgroup/cpu/x":                      "/sys/fs/cgroup/cpu/x", // v1: not ours
		"/sys/fs/cgroup/unifiedX":                   "/sys/fs/cgroup/unifiedX",
	} {
		if got := cgroupMountIn(mountinfo, dir); got != want {
			t.Errorf("cgroupMountIn(%q) = %q, want %q", dir, got, want)
		}
	}
}
