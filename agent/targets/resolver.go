package targets

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

const (
	// dnsServerTimeout bounds one query to one nameserver, so that a dead
	// server early in resolv.conf costs seconds rather than the whole
	// resolution.
	dnsServerTimeout = 2 * time.Second
	// ednsBufferSize is the DNS flag day 2020 recommendation: large enough
	// for typical A/AAAA answers, small enough to avoid IP fragmentation.
	ednsBufferSize = 1232
)

// dnsResolver asks the nameservers from resolv.conf directly because the
// system resolver does not report TTLs, which decide when to re-resolve.
type dnsResolver struct {
	resolvConf string
	port       string // overrides resolv.conf's port (53); tests point it at their server
	timeout    time.Duration
	control    func(network, address string, c syscall.RawConn) error
	// lookupIP is the system resolver, used for names that DNS does not
	// know, such as /etc/hosts entries; tests replace it.
	lookupIP func(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// NewDNSResolver returns a Resolver that queries the nameservers listed in
// resolvConf (read on every lookup, so edits take effect) for A and AAAA
// records over UDP, retrying over TCP when an answer is truncated. It reports
// the smallest TTL along the answer's CNAME chain. When DNS fails or has no
// address for a name, it falls back to the system resolver, which honours
// /etc/hosts, and reports a TTL of zero. Names under "localhost" are never
// sent to the nameservers (RFC 6761) and resolve to loopback unless the
// system resolver knows them. control, if not nil, is the dialer Control
// of its sockets (the agent's intercept.AgentSockets.Control, so that its
// lookups are the agent's own traffic to the programs too).
func NewDNSResolver(resolvConf string, control func(network, address string, c syscall.RawConn) error) Resolver {
	return &dnsResolver{
		resolvConf: resolvConf,
		timeout:    dnsServerTimeout,
		control:    control,
		lookupIP:   hostsThenServers(resolvConf, control),
	}
}

// hostsThenServers is the fallback lookup: Go's resolver, which reads
// /etc/hosts first, sending its DNS queries to the nameservers of
// resolvConf rather than the system's, so that a resolv.conf given to the
// agent is the only place its queries go.
func hostsThenServers(resolvConf string, control func(network, address string, c syscall.RawConn) error) func(ctx context.Context, network, host string) ([]netip.Addr, error) {
	conf, err := dns.ClientConfigFromFile(resolvConf)
	if err != nil || len(conf.Servers) == 0 {
		return net.DefaultResolver.LookupNetIP
	}
	server := net.JoinHostPort(conf.Servers[0], conf.Port)
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		d := net.Dialer{Control: control}
		return d.DialContext(ctx, network, server)
	}}
	return r.LookupNetIP
}

// Resolve implements Resolver.
func (r *dnsResolver) Resolve(ctx context.Context, host string) ([]netip.Addr, time.Duration, error) {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, 0, nil
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return r.resolveLocalhost(ctx, host)
	}
	addrs, ttl, dnsErr := r.queryServers(ctx, dns.Fqdn(host))
	if dnsErr == nil {
		return addrs, ttl, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("targets: resolving %q: %w", host, err)
	}
	addrs, err := r.lookupIP(ctx, "ip", host)
	if err == nil && len(addrs) == 0 {
		err = errors.New("no addresses")
	}
	if err != nil {
		return nil, 0, fmt.Errorf("targets: resolving %q: DNS: %w; system resolver: %w", host, dnsErr, err)
	}
	return unmapAll(addrs), 0, nil
}

func (r *dnsResolver) resolveLocalhost(ctx context.Context, host string) ([]netip.Addr, time.Duration, error) {
	addrs, err := r.lookupIP(ctx, "ip", host)
	if err == nil && len(addrs) > 0 {
		return unmapAll(addrs), 0, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("targets: resolving %q: %w", host, err)
	}
	return []netip.Addr{netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.IPv6Loopback()}, 0, nil
}

// queryServers asks for A and AAAA concurrently, so that a slow or dead
// server delays a resolution once rather than twice.
func (r *dnsResolver) queryServers(ctx context.Context, fqdn string) ([]netip.Addr, time.Duration, error) {
	conf, err := dns.ClientConfigFromFile(r.resolvConf)
	if err != nil {
		return nil, 0, fmt.Errorf("reading nameservers: %w", err)
	}
	if len(conf.Servers) == 0 {
		return nil, 0, fmt.Errorf("%s lists no nameserver", r.resolvConf)
	}
	port := conf.Port
	if r.port != "" {
		port = r.port
	}
	servers := make([]string, len(conf.Servers))
	for i, s := range conf.Servers {
		servers[i] = net.JoinHostPort(s, port)
	}

	var res [2]resolveResult
	var wg sync.WaitGroup
	for i, qtype := range [2]uint16{dns.TypeA, dns.TypeAAAA} {
		wg.Go(func() {
			res[i].addrs, res[i].ttl, res[i].err = r.queryType(ctx, servers, fqdn, qtype)
		})
	}
	wg.Wait()

	var addrs []netip.Addr
	ttl := time.Duration(math.MaxInt64)
	for _, q := range res {
		if len(q.addrs) > 0 {
			addrs = append(addrs, q.addrs...)
			ttl = min(ttl, q.ttl)
		}
	}
	if len(addrs) == 0 {
		if err := errors.Join(res[0].err, res[1].err); err != nil {
			return nil, 0, err
		}
		return nil, 0, fmt.Errorf("%s has no A or AAAA records", fqdn)
	}
	return addrs, ttl, nil
}

// queryType tries each server in turn until one gives a definite answer.
// A missing record type (NODATA) is a definite answer with no addresses.
func (r *dnsResolver) queryType(ctx context.Context, servers []string, fqdn string, qtype uint16) ([]netip.Addr, time.Duration, error) {
	m := new(dns.Msg)
	m.SetQuestion(fqdn, qtype)
	m.SetEdns0(ednsBufferSize, false)
	var errs []error
	for _, server := range servers {
		resp, err := r.exchange(ctx, m, server)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", server, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		switch resp.Rcode {
		case dns.RcodeSuccess:
			addrs, ttl := answerAddrs(resp, fqdn, qtype)
			return addrs, ttl, nil
		case dns.RcodeNameError:
			return nil, 0, fmt.Errorf("%s: %s does not exist (NXDOMAIN)", server, fqdn)
		default:
			errs = append(errs, fmt.Errorf("%s: answered %s", server, dns.RcodeToString[resp.Rcode]))
		}
	}
	return nil, 0, fmt.Errorf("%s query for %s failed on every nameserver: %w",
		dns.TypeToString[qtype], fqdn, errors.Join(errs...))
}

// exchange sends m over UDP and repeats it over TCP when the UDP answer is
// truncated, since a truncated answer may lack some of the addresses.
func (r *dnsResolver) exchange(ctx context.Context, m *dns.Msg, server string) (*dns.Msg, error) {
	resp, err := r.exchangeNet(ctx, "udp", m, server)
	if err == nil && resp.Truncated {
		resp, err = r.exchangeNet(ctx, "tcp", m, server)
	}
	return resp, err
}

func (r *dnsResolver) exchangeNet(ctx context.Context, network string, m *dns.Msg, server string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	c := &dns.Client{Net: network, Timeout: r.timeout, Dialer: &net.Dialer{Timeout: r.timeout, Control: r.control}}
	resp, _, err := c.ExchangeContext(ctx, m, server)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", network, err)
	}
	// The ID alone is 16 bits; checking the question too rejects stray or
	// forged answers for other names.
	if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, m.Question[0].Name) ||
		resp.Question[0].Qtype != m.Question[0].Qtype {
		return nil, fmt.Errorf("%s: answer does not match the question for %s", network, m.Question[0].Name)
	}
	return resp, nil
}

// answerAddrs returns the addresses at the end of fqdn's CNAME chain and the
// smallest TTL along the way: the answer is only valid while every link is.
func answerAddrs(resp *dns.Msg, fqdn string, qtype uint16) ([]netip.Addr, time.Duration) {
	name := fqdn
	minTTL := uint32(math.MaxUint32)
	for range maxChain {
		next := ""
		for _, rr := range resp.Answer {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, name) {
				next = c.Target
				minTTL = min(minTTL, c.Hdr.Ttl)
				break
			}
		}
		if next == "" {
			break
		}
		name = next
	}
	var addrs []netip.Addr
	for _, rr := range resp.Answer {
		hdr := rr.Header()
		if hdr.Rrtype != qtype || hdr.Class != dns.ClassINET || !strings.EqualFold(hdr.Name, name) {
			continue
		}
		var a netip.Addr
		switch rr := rr.(type) {
		case *dns.A:
			a, _ = netip.AddrFromSlice(rr.A)
		case *dns.AAAA:
			a, _ = netip.AddrFromSlice(rr.AAAA)
		}
		if a.IsValid() {
			addrs = append(addrs, a.Unmap())
			minTTL = min(minTTL, hdr.Ttl)
		}
	}
	if len(addrs) == 0 {
		return nil, 0
	}
	return addrs, time.Duration(minTTL) * time.Second
}

func unmapAll(addrs []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, len(addrs))
	for i, a := range addrs {
		out[i] = a.Unmap()
	}
	return out
}
