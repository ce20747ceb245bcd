package targets

import (
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// sourcesRecheck is how often DNSSources looks whether its resolv.conf
// changed: often enough to follow an edit, rarely enough that a flood of
// captured packets costs no system calls.
const sourcesRecheck = 5 * time.Second

// DNSSources are the resolvers whose DNS answers may teach the target set:
// the nameservers of a resolv.conf, re-read when it changes, and a fixed
// list (a cluster DNS service, a node-local cache). Any workload can send
// itself a packet from port 53; only an answer from one of these addresses
// counts. Its methods are safe for concurrent use.
type DNSSources struct {
	resolvConf string
	extra      []netip.Addr
	now        func() time.Time

	mu       sync.Mutex
	checked  time.Time // when resolvConf was last looked at
	modTime  time.Time
	size     int64
	fromFile []netip.Addr
}

// NewDNSSources trusts the nameservers of resolvConf (empty: none) and
// extra. A resolv.conf that cannot be read contributes nothing until it
// can.
func NewDNSSources(resolvConf string, extra []netip.Addr) *DNSSources {
	d := &DNSSources{resolvConf: resolvConf, now: time.Now}
	for _, a := range extra {
		d.extra = append(d.extra, a.Unmap())
	}
	return d
}

// Contains reports whether a is one of the trusted resolvers.
func (d *DNSSources) Contains(a netip.Addr) bool {
	a = a.Unmap()
	if slices.Contains(d.extra, a) {
		return true
	}
	if d.resolvConf == "" {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.refreshLocked()
	return slices.Contains(d.fromFile, a)
}

// Addrs returns the trusted resolvers as they are now, for logs.
func (d *DNSSources) Addrs() []netip.Addr {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.refreshLocked()
	return append(slices.Clone(d.extra), d.fromFile...)
}

func (d *DNSSources) refreshLocked() {
	if d.resolvConf == "" {
		return
	}
	now := d.now()
	if !d.checked.IsZero() && now.Sub(d.checked) < sourcesRecheck {
		return
	}
	d.checked = now
	fi, err := os.Stat(d.resolvConf)
	if err != nil {
		d.fromFile = nil
		return
	}
	if fi.ModTime().Equal(d.modTime) && fi.Size() == d.size && d.fromFile != nil {
		return
	}
	conf, err := dns.ClientConfigFromFile(d.resolvConf)
	if err != nil {
		d.fromFile = nil
		return
	}
	d.modTime, d.size = fi.ModTime(), fi.Size()
	d.fromFile = d.fromFile[:0:0]
	for _, s := range conf.Servers {
		// resolv.conf may scope a link-local server (fe80::1%eth0).
		if a, err := netip.ParseAddr(s); err == nil {
			d.fromFile = append(d.fromFile, a.Unmap().WithZone(""))
		}
	}
}
