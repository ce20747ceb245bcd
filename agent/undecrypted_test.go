package agent

import (
	"net/netip"
	"testing"

	"github.com/promptrail/promptrail/agent/proxy"
)

func TestUndecryptedPolicy(t *testing.T) {
	p, err := newUndecryptedPolicy(
		[]string{"10.0.0.0/8=refuse", "10.1.2.3=splice"},
		[]string{"192.168.0.0/16=splice"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		dst, class string
		want       bool
	}{
		{"1.2.3.4:443", proxy.ClassOtherSNI, true},   // default: splice
		{"1.2.3.4:443", proxy.ClassNoSNI, false},     // default: refuse
		{"1.2.3.4:443", proxy.ClassNotTLS, false},    // as no SNI
		{"10.9.9.9:443", proxy.ClassOtherSNI, false}, // CIDR rule
		{"10.1.2.3:443", proxy.ClassOtherSNI, true},  // the narrower IP rule wins
		{"[::ffff:10.9.9.9]:443", proxy.ClassOtherSNI, false},
		{"192.168.1.1:443", proxy.ClassNotTLS, true},
		{"192.168.1.1:443", proxy.ClassOtherSNI, true},
	} {
		if got := p.splice(netip.MustParseAddrPort(tt.dst), tt.class); got != tt.want {
			t.Errorf("%s %s: splice %v, want %v", tt.dst, tt.class, got, tt.want)
		}
	}
	for _, bad := range []string{"maybe", "10.0.0.0/33=refuse", "api.openai.com=drop"} {
		if _, err := newUndecryptedPolicy([]string{bad}, nil); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	all, _ := newUndecryptedPolicy([]string{"refuse"}, []string{"*=splice"})
	if all.splice(netip.MustParseAddrPort("1.2.3.4:443"), proxy.ClassOtherSNI) || !all.splice(netip.MustParseAddrPort("1.2.3.4:443"), proxy.ClassNoSNI) {
		t.Error("defaults not replaced")
	}
}
