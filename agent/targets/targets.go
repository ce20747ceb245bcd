// Package targets maintains the set of IP prefixes whose connections the agent
// intercepts: configured CIDRs, the addresses of configured host names as
// resolved periodically, and addresses learned from DNS answers observed on
// the node. It keeps an Applier (the eBPF loader's LPM trie) in step with that
// set, sending only real changes.
//
// Resolved and observed addresses expire when their DNS TTL (clamped, plus a
// grace period) runs out, because clients stop connecting to an address soon
// after it leaves their cache, and the kernel map must not grow without bound
// as CDN addresses rotate. An address known from several sources lives as long
// as the longest of them.
package targets

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Applier receives changes to the target set; the eBPF loader implements it.
//
// The Set calls ApplyTargets from one goroutine at a time and only with real
// changes: it never adds a prefix it has already added successfully, nor
// removes one it has not added. When ApplyTargets returns an error the Set
// assumes nothing took effect and sends the same prefixes again on its next
// pass, so an implementation that fails part-way should treat adding a present
// prefix or removing an absent one as success.
type Applier interface {
	ApplyTargets(add, remove []netip.Prefix) error
}

// Resolver looks up a host name's addresses and how long they may be cached.
// A ttl of zero means "unknown"; the Set then uses Config.MinTTL.
type Resolver interface {
	Resolve(ctx context.Context, host string) (addrs []netip.Addr, ttl time.Duration, err error)
}

// Config configures a Set. Every field's zero value selects a usable default.
type Config struct {
	// Hosts are the host names whose addresses are intercepted, such as
	// "api.openai.com". Case and one trailing dot are ignored; ports and
	// wildcards are rejected. An IP literal is taken as a single-address
	// prefix that never expires. Nil: no host names.
	Hosts []string
	// CIDRs are prefixes intercepted for as long as the Set runs.
	// IPv4-mapped IPv6 prefixes are converted to IPv4. Nil: none.
	CIDRs []netip.Prefix
	// DNSSources are the resolvers whose answers ObserveDNS learns from;
	// an answer from any other address (a workload can send itself one
	// from port 53) is refused with ErrUntrustedDNSSource. Nil: none, so
	// ObserveDNS learns nothing.
	DNSSources *DNSSources
	// Resolver resolves Hosts. Nil: NewDNSResolver("/etc/resolv.conf", nil).
	Resolver Resolver
	// MinTTL is the shortest lifetime given to a resolved or observed
	// address, so that a zero or tiny TTL does not make the agent re-resolve
	// in a tight loop. Zero: 30s.
	MinTTL time.Duration
	// MaxTTL is the longest lifetime given to a resolved or observed address,
	// so that a host moving away is noticed. Zero: 1h.
	MaxTTL time.Duration
	// Grace is added to every expiry because clients and stub caches keep
	// using an address a little after its TTL. Zero: 5m; negative: none.
	Grace time.Duration
	// RetryInterval is how soon a host is resolved again after a failure or
	// an empty answer, and how soon a failed ApplyTargets is retried.
	// Zero: 10s.
	RetryInterval time.Duration
	// Logger receives resolution failures and apply errors. Nil: slog.Default().
	Logger *slog.Logger
	// Now returns the current time; tests inject a clock. Nil: time.Now.
	Now func() time.Time
}

// Source tells where an Entry came from.
type Source string

// Sources of entries.
const (
	SourceCIDR     Source = "cidr"         // Config.CIDRs and IP literals in Config.Hosts
	SourceResolved Source = "resolved"     // Config.Resolver answers for Config.Hosts
	SourceObserved Source = "dns-observed" // DNS responses passed to ObserveDNS
)

// Entry is one reason a prefix is in the set. A prefix held by several
// sources or host names appears once for each.
type Entry struct {
	Prefix  netip.Prefix
	Source  Source
	Host    string    // configured host the prefix belongs to; empty for Config.CIDRs
	Expires time.Time // zero for static entries, which never expire
}

const (
	defaultMinTTL        = 30 * time.Second
	defaultMaxTTL        = time.Hour
	defaultGrace         = 5 * time.Minute
	defaultRetryInterval = 10 * time.Second
	defaultResolvConf    = "/etc/resolv.conf"

	// maxObservedPerHost bounds what forged or runaway DNS traffic on the
	// node can push into the kernel map, whose size is fixed.
	maxObservedPerHost = 1024
	// maxHostLen is the longest textual DNS name without the trailing dot.
	maxHostLen = 253
)

// holder identifies one reason a prefix is in the set.
type holder struct {
	source Source
	host   string
}

// Set is the target set. Its methods are safe for concurrent use.
type Set struct {
	applier  Applier
	resolver Resolver
	sources  *DNSSources
	log      *slog.Logger
	now      func() time.Time
	minTTL   time.Duration
	maxTTL   time.Duration
	grace    time.Duration
	retry    time.Duration

	// Read-only after New, so ObserveDNS and Contains read them unlocked.
	hosts map[string]string // lower-case name → the same string, to look up []byte names without allocating
	names []string          // hosts to resolve, sorted
	wide  []netip.Prefix    // static prefixes wider than one address; Contains must scan them

	decoders sync.Pool // *decoder; ObserveDNS runs on many goroutines
	wake     chan struct{}
	running  atomic.Bool

	mu       sync.Mutex
	prefixes map[netip.Prefix]map[holder]time.Time // zero time: never expires
	observed map[string]int                        // per host: prefixes held by SourceObserved
	wakeAt   time.Time                             // when Run next wakes up on its own; zero when not running

	applyMu     sync.Mutex
	applied     map[netip.Prefix]struct{} // what the Applier has accepted
	applyFailed atomic.Bool
}

// New validates cfg and returns a Set holding the static entries. Nothing is
// applied or resolved until Run is called.
func New(cfg Config, a Applier) (*Set, error) {
	if a == nil {
		return nil, errors.New("targets: nil Applier; pass the eBPF loader that owns the target map")
	}
	s := &Set{
		applier:  a,
		resolver: cfg.Resolver,
		sources:  cfg.DNSSources,
		log:      cfg.Logger,
		now:      cfg.Now,
		hosts:    make(map[string]string, len(cfg.Hosts)),
		wake:     make(chan struct{}, 1),
		prefixes: make(map[netip.Prefix]map[holder]time.Time),
		observed: make(map[string]int),
		applied:  make(map[netip.Prefix]struct{}),
	}
	if err := s.setDurations(cfg); err != nil {
		return nil, err
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.decoders.New = func() any { return new(decoder) }

	for i, p := range cfg.CIDRs {
		if !p.IsValid() {
			return nil, fmt.Errorf("targets: CIDRs[%d] is not a valid prefix; parse it with netip.ParsePrefix", i)
		}
		s.addStatic(normalizePrefix(p), holder{source: SourceCIDR})
	}
	for _, h := range cfg.Hosts {
		name, addr, err := normalizeHost(h)
		if err != nil {
			return nil, err
		}
		if addr.IsValid() {
			s.addStatic(addrPrefix(addr), holder{source: SourceCIDR, host: name})
			continue
		}
		if _, dup := s.hosts[name]; !dup {
			s.hosts[name] = name
			s.names = append(s.names, name)
		}
	}
	slices.Sort(s.names)
	if s.resolver == nil && len(s.names) > 0 {
		s.resolver = NewDNSResolver(defaultResolvConf, nil)
	}
	return s, nil
}

func (s *Set) setDurations(cfg Config) error {
	s.minTTL = cmp.Or(cfg.MinTTL, defaultMinTTL)
	s.maxTTL = cmp.Or(cfg.MaxTTL, defaultMaxTTL)
	s.grace = max(cmp.Or(cfg.Grace, defaultGrace), 0)
	s.retry = cmp.Or(cfg.RetryInterval, defaultRetryInterval)
	switch {
	case s.minTTL < 0:
		return fmt.Errorf("targets: MinTTL %v is negative; use zero for the 30s default", cfg.MinTTL)
	case s.maxTTL < s.minTTL:
		return fmt.Errorf("targets: MaxTTL %v is below MinTTL %v", s.maxTTL, s.minTTL)
	case s.retry < 0:
		return fmt.Errorf("targets: RetryInterval %v is negative; use zero for the 10s default", cfg.RetryInterval)
	}
	return nil
}

func (s *Set) addStatic(p netip.Prefix, h holder) {
	s.addLocked(p, h, time.Time{})
	if !p.IsSingleIP() && !slices.Contains(s.wide, p) {
		s.wide = append(s.wide, p)
	}
}

// normalizeHost returns the lower-case name without a trailing dot, or the
// address if host is an IP literal.
func normalizeHost(host string) (string, netip.Addr, error) {
	name := strings.TrimSuffix(strings.ToLower(host), ".")
	if addr, err := netip.ParseAddr(name); err == nil {
		if addr.Zone() != "" {
			return "", netip.Addr{}, fmt.Errorf("targets: host %q: zoned addresses cannot be intercepted; drop the %%zone", host)
		}
		return name, addr.Unmap(), nil
	}
	if err := checkHostName(name); err != nil {
		return "", netip.Addr{}, fmt.Errorf("targets: host %q: %w", host, err)
	}
	return name, netip.Addr{}, nil
}

// checkHostName accepts what can appear as an owner name in DNS answers for a
// host; being strict here turns typos into startup errors instead of silently
// never matching.
func checkHostName(name string) error {
	switch {
	case name == "":
		return errors.New("empty host name")
	case len(name) > maxHostLen:
		return fmt.Errorf("name is %d bytes long; DNS allows %d", len(name), maxHostLen)
	case strings.Contains(name, "*"):
		return errors.New("wildcards are not supported; list each host name")
	case strings.ContainsAny(name, ":/[]"):
		return errors.New("want a bare host name without scheme, port or brackets")
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" {
			return errors.New("empty label (two dots in a row, or a leading dot)")
		}
		if len(label) > 63 {
			return fmt.Errorf("label %q is longer than 63 bytes", label)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with a hyphen", label)
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("label %q contains %q; only letters, digits, '-' and '_' are allowed", label, c)
			}
		}
	}
	return nil
}

// normalizePrefix masks p and turns IPv4-mapped IPv6 prefixes into IPv4 ones,
// because the kernel sees IPv4 destinations as IPv4.
func normalizePrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked()
}

func addrPrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen())
}

// usableAddr rejects addresses no TCP connection goes to; DNS filters answer
// 0.0.0.0 for blocked names, and intercepting that would be meaningless.
func usableAddr(a netip.Addr) bool {
	return a.IsValid() && !a.IsUnspecified() && !a.IsMulticast() && a.Zone() == ""
}

// addLocked records that h holds p until exp (zero: forever), keeping the
// later expiry if h already holds p. It reports whether p is new to the set.
func (s *Set) addLocked(p netip.Prefix, h holder, exp time.Time) bool {
	hs, ok := s.prefixes[p]
	if !ok {
		hs = make(map[holder]time.Time, 1)
		s.prefixes[p] = hs
	}
	old, held := hs[h]
	switch {
	case !held:
		hs[h] = exp
		if h.source == SourceObserved {
			s.observed[h.host]++
		}
	case old.IsZero():
	case exp.IsZero() || exp.After(old):
		hs[h] = exp
	}
	return !ok
}

// expireLocked drops every holder whose expiry is not after now.
func (s *Set) expireLocked(now time.Time) {
	for p, hs := range s.prefixes {
		for h, exp := range hs {
			if exp.IsZero() || now.Before(exp) {
				continue
			}
			delete(hs, h)
			if h.source == SourceObserved {
				if s.observed[h.host]--; s.observed[h.host] <= 0 {
					delete(s.observed, h.host)
				}
			}
		}
		if len(hs) == 0 {
			delete(s.prefixes, p)
		}
	}
}

func (s *Set) clampTTL(ttl time.Duration) time.Duration {
	return min(max(ttl, s.minTTL), s.maxTTL)
}

// Contains reports whether connections to a are intercepted. Entries past
// their expiry count until the next expiry pass removes them, matching what
// the kernel map holds.
func (s *Set) Contains(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	a = a.WithZone("").Unmap()
	for _, p := range s.wide {
		if p.Contains(a) {
			return true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.prefixes[addrPrefix(a)]
	return ok
}

// Entries returns a snapshot of the set sorted by prefix, source and host.
func (s *Set) Entries() []Entry {
	s.mu.Lock()
	out := make([]Entry, 0, len(s.prefixes))
	for p, hs := range s.prefixes {
		for h, exp := range hs {
			out = append(out, Entry{Prefix: p, Source: h.source, Host: h.host, Expires: exp})
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Entry) int {
		return cmp.Or(a.Prefix.Compare(b.Prefix), cmp.Compare(a.Source, b.Source), cmp.Compare(a.Host, b.Host))
	})
	return out
}

// HostsOf returns the configured host names that a is an address of, as
// resolved or observed (sorted; none for an address only a CIDR holds).
func (s *Set) HostsOf(a netip.Addr) []string {
	if !a.IsValid() {
		return nil
	}
	s.mu.Lock()
	var out []string
	for h := range s.prefixes[addrPrefix(a.WithZone("").Unmap())] {
		if h.host != "" && !slices.Contains(out, h.host) {
			out = append(out, h.host)
		}
	}
	s.mu.Unlock()
	slices.Sort(out)
	return out
}
