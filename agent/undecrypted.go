package agent

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/promptrail/promptrail/agent/proxy"
	"github.com/promptrail/promptrail/agent/targets"
)

// What happens to a connection to a target address that is not decrypted.
const (
	UndecryptedSplice = "splice"
	UndecryptedRefuse = "refuse"
)

// Defaults of OtherSNI and NoSNI. Target addresses are often shared CDN
// addresses (api.openai.com's are Cloudflare's), so another server name
// on one is most likely another site: it is spliced, with a connection
// record. Cloudflare's edge refuses a request whose Host differs from the
// SNI (its error 1013), so a request fronted that way to the API fails
// there. No legitimate HTTPS client of an API omits the server name or
// speaks plain text to its TLS port, so those are refused.
const (
	DefaultOtherSNI = UndecryptedSplice
	DefaultNoSNI    = UndecryptedRefuse
)

// undecryptedPolicy answers proxy.Config.Undecrypted from the OtherSNI and
// NoSNI settings: each entry is "splice", "refuse" or
// "TARGET=splice|refuse", where TARGET is a configured host name, an IP or
// a CIDR. An IP or CIDR rule that holds the destination wins over a host
// rule, which wins over the default.
type undecryptedPolicy struct {
	classes map[string]*classRules // proxy.ClassOtherSNI, proxy.ClassNoSNI
	set     *targets.Set           // set once the target set exists; nil: host rules do not apply
}

type classRules struct {
	def      bool // splice
	hosts    map[string]bool
	prefixes []prefixRule
}

type prefixRule struct {
	p      netip.Prefix
	splice bool
}

func newUndecryptedPolicy(otherSNI, noSNI []string) (*undecryptedPolicy, error) {
	p := &undecryptedPolicy{classes: map[string]*classRules{}}
	for _, c := range []struct {
		class, flag, def string
		entries          []string
	}{
		{proxy.ClassOtherSNI, "other-sni", DefaultOtherSNI, otherSNI},
		{proxy.ClassNoSNI, "no-sni", DefaultNoSNI, noSNI},
	} {
		r := &classRules{def: c.def == UndecryptedSplice, hosts: map[string]bool{}}
		for _, e := range c.entries {
			if err := r.add(e); err != nil {
				return nil, fmt.Errorf("agent: --%s %q: %w", c.flag, e, err)
			}
		}
		p.classes[c.class] = r
	}
	return p, nil
}

func (r *classRules) add(entry string) error {
	target, act, found := strings.Cut(entry, "=")
	if !found {
		target, act = "", entry
	}
	var splice bool
	switch act {
	case UndecryptedSplice:
		splice = true
	case UndecryptedRefuse:
	default:
		return fmt.Errorf("want %s or %s, optionally after TARGET=", UndecryptedSplice, UndecryptedRefuse)
	}
	target = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(target), "."))
	switch {
	case target == "" || target == "*":
		r.def = splice
	case strings.Contains(target, "/"):
		pr, err := netip.ParsePrefix(target)
		if err != nil {
			return err
		}
		r.prefixes = append(r.prefixes, prefixRule{pr.Masked(), splice})
	default:
		if a, err := netip.ParseAddr(strings.Trim(target, "[]")); err == nil {
			r.prefixes = append(r.prefixes, prefixRule{netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), splice})
		} else {
			r.hosts[target] = splice
		}
	}
	return nil
}

// splice reports whether a connection of class to dst is spliced.
func (p *undecryptedPolicy) splice(dst netip.AddrPort, class string) bool {
	if class == proxy.ClassNotTLS {
		class = proxy.ClassNoSNI
	}
	r := p.classes[class]
	if r == nil {
		return false
	}
	a := dst.Addr().Unmap()
	best, found := -1, false
	var splice bool
	for _, pr := range r.prefixes {
		if pr.p.Contains(a) && pr.p.Bits() > best {
			best, splice, found = pr.p.Bits(), pr.splice, true
		}
	}
	if found {
		return splice
	}
	if p.set != nil && len(r.hosts) > 0 {
		// An address of several targets: refuse if any of them says so.
		seen := false
		for _, h := range p.set.HostsOf(a) {
			if s, ok := r.hosts[h]; ok {
				if !s {
					return false
				}
				seen = true
			}
		}
		if seen {
			return true
		}
	}
	return r.def
}
