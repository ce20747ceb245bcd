package targets

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/gopacket/layers"
)

// maxChain bounds how many CNAME hops ObserveDNS follows; recursive resolvers
// give up on longer chains too, and the bound keeps looping chains cheap.
const maxChain = 16

// decoder holds reusable layers so that decoding a packet does not allocate;
// gopacket's DecodingLayers are not safe for concurrent use, hence the pool.
type decoder struct {
	ip4   layers.IPv4
	ip6   layers.IPv6
	udp   layers.UDP
	dns   layers.DNS
	trunc truncFeedback
	found []observation
	src   netip.Addr // the decoded packet's source address
}

// truncFeedback records gopacket's report that a layer claims more bytes than
// were captured.
type truncFeedback struct{ truncated bool }

func (f *truncFeedback) SetTruncated() { f.truncated = true }

// observation is one address a DNS answer gave for a configured host.
type observation struct {
	host string
	addr netip.Addr
	ttl  uint32
}

// link is one name on a CNAME chain and the configured host it belongs to,
// empty while the chain has not passed through a configured host.
type link struct {
	name []byte
	host string
}

// Arrival says where a captured DNS packet arrived (as
// intercept.Arrival, which converts to it).
type Arrival struct {
	// Loopback: on a loopback device, so sent from the receiver's own
	// network namespace.
	Loopback bool
	// OtherNetns: the receiver is in another network namespace than the
	// agent's (a pod's); false where that is not known.
	OtherNetns bool
}

// ObserveDNS decodes one captured DNS response, starting at its IPv4 or IPv6
// header, that arrived as a says, and adds the A and AAAA addresses it gives for configured hosts,
// following CNAME chains within the message. Queries and unsuccessful
// responses are ignored. Packets that cannot be decoded, are not UDP from
// port 53, or were cut short by the capture return an error, and so do
// answers whose source is not one of Config.DNSSources, or that arrived
// over loopback from a source that is not a loopback address, or over the
// loopback of another network namespace (ErrUntrustedDNSSource). It is safe to call concurrently with itself and
// with Run.
//
// The source check stops a workload that sends itself an answer from a
// port 53 of its own. The loopback check stops one that forges a trusted
// resolver's source address on a packet to itself (a raw socket, or
// IP_TRANSPARENT; both need only CAP_NET_RAW): such a packet never leaves its network namespace, so it
// arrives on loopback, and a resolver that is not on loopback is never
// heard there. Its price: host processes whose resolver is an address of
// the node itself (a NodeLocal DNSCache for host-network pods) teach
// nothing. A trusted loopback resolver (127.0.0.53) is the host's, so an
// answer over a pod's own loopback is refused too, where the kernel tells
// namespaces apart (Arrival.OtherNetns). What remains possible: that
// forgery on older kernels, and a packet hairpinned back through the
// node. Such an answer can add addresses for configured hosts only, at
// most maxObservedPerHost of them, each for at most MaxTTL, so the worst it
// does is intercept more (an address whose TLS names no target is
// spliced, not decrypted).
func (s *Set) ObserveDNS(packet []byte, a Arrival) error {
	d := s.decoders.Get().(*decoder)
	msg, err := d.decodeSafely(packet)
	if err != nil {
		if !errors.Is(err, errDecoderPanic) {
			s.decoders.Put(d)
		}
		return err
	}
	if s.sources == nil || !s.sources.Contains(d.src) {
		src := d.src
		s.decoders.Put(d)
		return fmt.Errorf("%w: %s", ErrUntrustedDNSSource, src)
	}
	if a.Loopback && (a.OtherNetns || !d.src.Unmap().IsLoopback()) {
		src := d.src
		s.decoders.Put(d)
		return fmt.Errorf("%w: %s, but it arrived over loopback, so it was sent from the receiver's own network namespace", ErrUntrustedDNSSource, src)
	}
	if !msg.QR || msg.OpCode != layers.DNSOpCodeQuery || msg.ResponseCode != layers.DNSResponseCodeNoErr {
		s.decoders.Put(d)
		return nil
	}
	d.found = d.found[:0]
	for _, q := range msg.Questions {
		d.found = s.collectChain(msg.Answers, q.Name, d.found)
	}
	err = s.recordObserved(d.found)
	s.decoders.Put(d)
	return err
}

var errDecoderPanic = errors.New("targets: DNS packet decoder panicked")

// ErrUntrustedDNSSource is returned by ObserveDNS for an answer that does not
// come from one of the resolvers in Config.DNSSources.
var ErrUntrustedDNSSource = errors.New("targets: DNS answer not from a trusted resolver (resolv.conf nameservers or --dns-server)")

// decodeSafely turns a panic in gopacket into an error: the input comes from
// the network, and gopacket v1.1.19 panics on some crafted packets. The known
// cases are caught by checkDNSLayout; this is for the ones not yet known. A
// decoder that panicked is not reused, as its state is unknown.
func (d *decoder) decodeSafely(packet []byte) (msg *layers.DNS, err error) {
	defer func() {
		if r := recover(); r != nil {
			msg, err = nil, fmt.Errorf("%w: %v", errDecoderPanic, r)
		}
	}()
	return d.decode(packet)
}

func (d *decoder) decode(packet []byte) (*layers.DNS, error) {
	if len(packet) == 0 {
		return nil, errors.New("targets: empty DNS packet")
	}
	d.trunc.truncated = false
	var (
		proto   layers.IPProtocol
		payload []byte
	)
	switch v := packet[0] >> 4; v {
	case 4:
		if err := d.ip4.DecodeFromBytes(packet, &d.trunc); err != nil {
			return nil, fmt.Errorf("targets: decoding IPv4 header: %w", err)
		}
		if d.ip4.Flags&layers.IPv4MoreFragments != 0 || d.ip4.FragOffset != 0 {
			return nil, errors.New("targets: IPv4 fragment; pass reassembled DNS responses")
		}
		proto, payload = d.ip4.Protocol, d.ip4.Payload
		d.src, _ = netip.AddrFromSlice(d.ip4.SrcIP)
	case 6:
		if err := d.ip6.DecodeFromBytes(packet, &d.trunc); err != nil {
			return nil, fmt.Errorf("targets: decoding IPv6 header: %w", err)
		}
		proto, payload = d.ip6.NextHeader, d.ip6.Payload
		d.src, _ = netip.AddrFromSlice(d.ip6.SrcIP)
		if d.ip6.HopByHop != nil {
			proto = d.ip6.HopByHop.NextHeader
		}
	default:
		return nil, fmt.Errorf("targets: IP version %d; the packet must start at the IPv4 or IPv6 header", v)
	}
	if proto != layers.IPProtocolUDP {
		return nil, fmt.Errorf("targets: IP payload is %v, not UDP; capture only UDP responses from port 53", proto)
	}
	if err := d.udp.DecodeFromBytes(payload, &d.trunc); err != nil {
		return nil, fmt.Errorf("targets: decoding UDP header: %w", err)
	}
	if d.trunc.truncated {
		return nil, fmt.Errorf("targets: packet of %d bytes is shorter than its headers claim; raise the capture snap length", len(packet))
	}
	if d.udp.SrcPort != 53 {
		return nil, fmt.Errorf("targets: UDP source port is %d, not 53; capture only DNS responses", d.udp.SrcPort)
	}
	if err := checkDNSLayout(d.udp.Payload); err != nil {
		return nil, fmt.Errorf("targets: malformed DNS message: %w", err)
	}
	if err := d.dns.DecodeFromBytes(d.udp.Payload, &d.trunc); err != nil {
		return nil, fmt.Errorf("targets: decoding DNS message: %w", err)
	}
	return &d.dns, nil
}

// checkDNSLayout walks the sections of a DNS message and fails if a question
// or record runs past its end. gopacket v1.1.19 reads the fixed fields after
// each name without a bounds check and panics on such messages.
func checkDNSLayout(msg []byte) error {
	if len(msg) < 12 {
		return fmt.Errorf("%d bytes is shorter than the 12-byte DNS header", len(msg))
	}
	questions := int(binary.BigEndian.Uint16(msg[4:]))
	records := int(binary.BigEndian.Uint16(msg[6:])) + int(binary.BigEndian.Uint16(msg[8:])) +
		int(binary.BigEndian.Uint16(msg[10:]))
	off := 12
	for i := range questions {
		end, err := skipName(msg, off)
		if err != nil || end+4 > len(msg) {
			return fmt.Errorf("question %d of %d runs past the end of the message", i+1, questions)
		}
		off = end + 4
	}
	for i := range records {
		end, err := skipName(msg, off)
		if err != nil || end+10 > len(msg) {
			return fmt.Errorf("record %d of %d runs past the end of the message", i+1, records)
		}
		off = end + 10 + int(binary.BigEndian.Uint16(msg[end+8:]))
		if off > len(msg) {
			return fmt.Errorf("record %d of %d: data runs past the end of the message", i+1, records)
		}
	}
	return nil
}

// skipName returns the offset just past the name at off, without following
// compression pointers.
func skipName(msg []byte, off int) (int, error) {
	for off < len(msg) {
		switch c := msg[off]; {
		case c == 0:
			return off + 1, nil
		case c&0xc0 == 0xc0:
			return off + 2, nil
		case c&0xc0 != 0:
			return 0, fmt.Errorf("unsupported label type %#x", c&0xc0)
		default:
			off += 1 + int(c)
		}
	}
	return 0, errors.New("name runs past the end of the message")
}

// collectChain appends the addresses in answers that belong to a configured
// host on the CNAME chain starting at qname. Records off that chain are
// ignored, so an answer cannot claim addresses for a name nobody asked about.
func (s *Set) collectChain(answers []layers.DNSResourceRecord, qname []byte, out []observation) []observation {
	var chain [maxChain]link
	n := 0
	name, host := qname, s.lookupHost(qname)
	for {
		chain[n] = link{name: name, host: host}
		n++
		if n == maxChain {
			break
		}
		next := cnameOf(answers, name)
		if next == nil || onChain(chain[:n], next) {
			break
		}
		name = next
		if host == "" {
			host = s.lookupHost(name)
		}
	}
	if chain[n-1].host == "" {
		return out // no configured host on the chain
	}
	for i := range answers {
		rr := &answers[i]
		if rr.Class != layers.DNSClassIN || (rr.Type != layers.DNSTypeA && rr.Type != layers.DNSTypeAAAA) {
			continue
		}
		h := hostOf(chain[:n], rr.Name)
		if h == "" {
			continue
		}
		// gopacket hands over the record data as is, whatever its length.
		if rr.Type == layers.DNSTypeA && len(rr.IP) != 4 || rr.Type == layers.DNSTypeAAAA && len(rr.IP) != 16 {
			continue
		}
		addr, _ := netip.AddrFromSlice(rr.IP)
		if addr = addr.Unmap(); !usableAddr(addr) {
			continue
		}
		out = append(out, observation{host: h, addr: addr, ttl: rr.TTL})
	}
	return out
}

func cnameOf(answers []layers.DNSResourceRecord, name []byte) []byte {
	for i := range answers {
		rr := &answers[i]
		if rr.Type == layers.DNSTypeCNAME && rr.Class == layers.DNSClassIN && bytes.EqualFold(rr.Name, name) {
			return rr.CNAME
		}
	}
	return nil
}

func onChain(chain []link, name []byte) bool {
	for _, l := range chain {
		if bytes.EqualFold(l.name, name) {
			return true
		}
	}
	return false
}

func hostOf(chain []link, name []byte) string {
	for _, l := range chain {
		if l.host != "" && bytes.EqualFold(l.name, name) {
			return l.host
		}
	}
	return ""
}

// lookupHost returns the configured host equal to name, ignoring case and a
// trailing dot, or "". It lowers into a stack buffer so lookups on the packet
// path do not allocate.
func (s *Set) lookupHost(name []byte) string {
	name = bytes.TrimSuffix(name, []byte("."))
	if len(name) == 0 || len(name) > maxHostLen || len(s.hosts) == 0 {
		return ""
	}
	var buf [maxHostLen]byte
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return s.hosts[string(buf[:len(name)])]
}

// recordObserved adds observed addresses, applying new prefixes at once
// because the client that received the answer is about to connect.
func (s *Set) recordObserved(found []observation) error {
	if len(found) == 0 {
		return nil
	}
	now := s.now()
	var added, dropped int
	wake := false
	s.mu.Lock()
	for _, o := range found {
		p := addrPrefix(o.addr)
		h := holder{source: SourceObserved, host: o.host}
		if _, held := s.prefixes[p][h]; !held && s.observed[o.host] >= maxObservedPerHost {
			dropped++
			continue
		}
		exp := now.Add(s.clampTTL(time.Duration(o.ttl)*time.Second) + s.grace)
		if s.addLocked(p, h, exp) {
			added++
		}
		if exp.Before(s.wakeAt) {
			s.wakeAt = exp
			wake = true
		}
	}
	s.mu.Unlock()
	if added > 0 {
		s.sync()
		wake = wake || s.applyFailed.Load()
	}
	if wake {
		s.wakeRun()
	}
	if dropped > 0 {
		return fmt.Errorf("targets: dropped %d observed addresses: host already has %d; forged DNS responses on the node?",
			dropped, maxObservedPerHost)
	}
	return nil
}
