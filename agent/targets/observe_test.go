package targets

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

func aRR(name, ip string, ttl uint32) layers.DNSResourceRecord {
	return layers.DNSResourceRecord{Name: []byte(name), Type: layers.DNSTypeA, Class: layers.DNSClassIN, TTL: ttl, IP: net.ParseIP(ip)}
}

func aaaaRR(name, ip string, ttl uint32) layers.DNSResourceRecord {
	return layers.DNSResourceRecord{Name: []byte(name), Type: layers.DNSTypeAAAA, Class: layers.DNSClassIN, TTL: ttl, IP: net.ParseIP(ip)}
}

func cnameRR(name, target string, ttl uint32) layers.DNSResourceRecord {
	return layers.DNSResourceRecord{Name: []byte(name), Type: layers.DNSTypeCNAME, Class: layers.DNSClassIN, TTL: ttl, CNAME: []byte(target)}
}

// response builds a successful answer to an A query for qname.
func response(qname string, answers ...layers.DNSResourceRecord) *layers.DNS {
	return &layers.DNS{
		ID: 0x1234, QR: true, OpCode: layers.DNSOpCodeQuery, RD: true, RA: true,
		ResponseCode: layers.DNSResponseCodeNoErr,
		Questions:    []layers.DNSQuestion{{Name: []byte(qname), Type: layers.DNSTypeA, Class: layers.DNSClassIN}},
		Answers:      answers,
	}
}

// The resolvers that test packets come from; testSources trusts them.
var (
	testResolver4 = netip.MustParseAddr("192.0.2.53")
	testResolver6 = netip.MustParseAddr("2001:db8:53::53")
)

func testSources() *DNSSources { return NewDNSSources("", []netip.Addr{testResolver4, testResolver6}) }

// mustPacket serializes msg in a UDP datagram from srcPort of a test
// resolver, over IPv6 if v6.
func mustPacket(t testing.TB, v6 bool, srcPort uint16, msg *layers.DNS) []byte {
	t.Helper()
	src := testResolver4
	if v6 {
		src = testResolver6
	}
	return mustPacketFrom(t, src, srcPort, msg)
}

// mustPacketFrom is mustPacket from the address src.
func mustPacketFrom(t testing.TB, src netip.Addr, srcPort uint16, msg *layers.DNS) []byte {
	t.Helper()
	pkt, err := buildPacket(src, srcPort, msg)
	if err != nil {
		t.Fatalf("building packet: %v", err)
	}
	return pkt
}

func buildPacket(src netip.Addr, srcPort uint16, msg *layers.DNS) ([]byte, error) {
	v6 := src.Is6()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	udp := &layers.UDP{SrcPort: layers.UDPPort(srcPort), DstPort: 41000}
	var ip gopacket.SerializableLayer
	if v6 {
		ip6 := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolUDP, HopLimit: 64,
			SrcIP: src.AsSlice(), DstIP: net.ParseIP("2001:db8:53::1")}
		if err := udp.SetNetworkLayerForChecksum(ip6); err != nil {
			return nil, err
		}
		ip = ip6
	} else {
		ip4 := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP,
			SrcIP: src.AsSlice(), DstIP: net.IPv4(192, 0, 2, 100).To4()}
		if err := udp.SetNetworkLayerForChecksum(ip4); err != nil {
			return nil, err
		}
		ip = ip4
	}
	if err := gopacket.SerializeLayers(buf, opts, ip, udp, msg); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func TestObserveDNS(t *testing.T) {
	const host = "api.openai.com"
	query := response(host)
	query.QR = false
	nxdomain := response(host, aRR(host, "192.0.2.66", 60))
	nxdomain.ResponseCode = layers.DNSResponseCodeNXDomain

	tests := []struct {
		name string
		v6   bool
		msg  *layers.DNS
		want []string // prefixes added for host
	}{
		{"A over IPv4", false, response(host, aRR(host, "192.0.2.1", 60), aRR(host, "192.0.2.2", 60)), []string{"192.0.2.1", "192.0.2.2"}},
		{"AAAA over IPv6", true, response(host, aaaaRR(host, "2001:db8::1", 60)), []string{"2001:db8::1"}},
		{"IPv4-mapped AAAA becomes /32", true, response(host, aaaaRR(host, "::ffff:192.0.2.9", 60)), []string{"192.0.2.9"}},
		{"case-insensitive", false, response("API.OpenAI.COM", aRR("Api.OpenAI.com", "192.0.2.1", 60)), []string{"192.0.2.1"}},
		{"CNAME chain", false, response(host,
			cnameRR(host, "x.cdn.net", 300), cnameRR("x.cdn.net", "y.cdn.net", 300), aRR("y.cdn.net", "192.0.2.3", 20)),
			[]string{"192.0.2.3"}},
		{"CNAME chain out of order", false, response(host,
			aRR("y.cdn.net", "192.0.2.3", 20), cnameRR("x.cdn.net", "y.cdn.net", 300), cnameRR(host, "x.cdn.net", 300)),
			[]string{"192.0.2.3"}},
		{"chain entering a configured host", false, response("alias.corp.example",
			cnameRR("alias.corp.example", host, 300), aRR(host, "192.0.2.4", 60)),
			[]string{"192.0.2.4"}},
		{"unrelated record in a matching answer ignored", false, response(host,
			aRR(host, "192.0.2.1", 60), aRR("evil.example", "203.0.113.6", 60), aRR("x.cdn.net", "203.0.113.7", 60)),
			[]string{"192.0.2.1"}},
		{"unrelated name", false, response("example.com", aRR("example.com", "203.0.113.1", 60)), nil},
		{"configured name off the question's chain", false, response("evil.example", aRR(host, "203.0.113.6", 60)), nil},
		{"CNAME to an unrelated name only", false, response("www.example.com",
			cnameRR("www.example.com", "x.cdn.net", 60), aRR("x.cdn.net", "203.0.113.2", 60)), nil},
		{"CNAME loop", false, response(host, cnameRR(host, "a.example", 60), cnameRR("a.example", host, 60)), nil},
		{"query ignored", false, query, nil},
		{"NXDOMAIN ignored", false, nxdomain, nil},
		{"unspecified address ignored", false, response(host, aRR(host, "0.0.0.0", 60)), nil},
		{"empty answer", true, response(host), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, a, _ := newTestSet(t, Config{Hosts: []string{host}, Resolver: newFakeResolver(), Grace: -1})
			if err := s.ObserveDNS(mustPacket(t, tt.v6, 53, tt.msg), Arrival{}); err != nil {
				t.Fatalf("ObserveDNS: %v", err)
			}
			want := pfxs(tt.want...)
			slices.SortFunc(want, netip.Prefix.Compare)
			var got []netip.Prefix
			for _, e := range s.Entries() {
				if e.Source != SourceObserved || e.Host != host {
					t.Errorf("entry %+v: want source %q host %q", e, SourceObserved, host)
				}
				got = append(got, e.Prefix)
			}
			if !slices.Equal(got, want) {
				t.Errorf("entries = %v, want %v", got, want)
			}
			if got := a.applied(); !slices.Equal(got, want) {
				t.Errorf("applied = %v, want %v", got, want)
			}
		})
	}
}

func TestObserveDNSTTL(t *testing.T) {
	tests := []struct {
		ttl  uint32
		want time.Duration
	}{
		{0, 30 * time.Second},
		{10, 30 * time.Second},
		{600, 600 * time.Second},
		{1 << 31, time.Hour},
		{^uint32(0), time.Hour},
	}
	for _, tt := range tests {
		s, _, _ := newTestSet(t, Config{Hosts: []string{"api.openai.com"}, Resolver: newFakeResolver(), Grace: time.Minute})
		pkt := mustPacket(t, false, 53, response("api.openai.com", aRR("api.openai.com", "192.0.2.1", tt.ttl)))
		if err := s.ObserveDNS(pkt, Arrival{}); err != nil {
			t.Fatal(err)
		}
		e := s.Entries()
		if len(e) != 1 || !e[0].Expires.Equal(t0.Add(tt.want+time.Minute)) {
			t.Errorf("TTL %d: entries %+v, want expiry at %v", tt.ttl, e, t0.Add(tt.want+time.Minute))
		}
	}
}

func TestObserveDNSErrors(t *testing.T) {
	good := mustPacket(t, false, 53, response("api.openai.com", aRR("api.openai.com", "192.0.2.1", 60)))
	good6 := mustPacket(t, true, 53, response("api.openai.com", aaaaRR("api.openai.com", "2001:db8::1", 60)))
	withByte := func(b []byte, i int, v byte) []byte {
		b = slices.Clone(b)
		b[i] = v
		return b
	}
	tests := []struct {
		name   string
		packet []byte
		want   string
	}{
		{"nil", nil, "empty"},
		{"garbage", []byte("\xde\xad\xbe\xef garbage"), "IP version"},
		{"version 5", withByte(good, 0, 0x55), "IP version 5"},
		{"short IPv4 header", good[:12], "IPv4"},
		{"short IPv6 header", good6[:30], "IPv6"},
		{"truncated by capture", good[:len(good)-5], "snap length"},
		{"truncated IPv6", good6[:len(good6)-3], "snap length"},
		{"UDP header cut", good[:24], "UDP"},
		{"TCP", withByte(good, 9, byte(layers.IPProtocolTCP)), "not UDP"},
		{"fragment", withByte(good, 6, 0x20), "fragment"},
		{"not from port 53", mustPacket(t, false, 5353, response("api.openai.com", aRR("api.openai.com", "192.0.2.1", 60))), "port is 5353"},
		{"DNS header cut", fixLengths(good[:20+8+6]), "DNS"},
		{"DNS answer cut", fixLengths(good[:len(good)-3]), "DNS"},
		{"DNS record header cut", fixLengths(good[:len(good)-10]), "runs past the end"},
		{"DNS question cut", fixLengths(good[:20+8+12+17]), "question 1 of 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, a, _ := newTestSet(t, Config{Hosts: []string{"api.openai.com"}, Resolver: newFakeResolver()})
			err := s.ObserveDNS(tt.packet, Arrival{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ObserveDNS() error = %v, want one containing %q", err, tt.want)
			}
			if errors.Is(err, errDecoderPanic) {
				t.Errorf("decoder panicked: %v", err)
			}
			if n := a.numCalls(); n != 0 || len(s.Entries()) != 0 {
				t.Errorf("malformed packet changed the set: %d apply calls, entries %v", n, s.Entries())
			}
		})
	}
}

// fixLengths rewrites the IPv4 and UDP length fields of a cut IPv4 packet so
// that the cut reaches the DNS decoder instead of being caught as truncation.
func fixLengths(pkt []byte) []byte {
	pkt = slices.Clone(pkt)
	n := len(pkt)
	pkt[2], pkt[3] = byte(n>>8), byte(n)
	u := n - 20
	pkt[24], pkt[25] = byte(u>>8), byte(u)
	return pkt
}

func FuzzObserveDNS(f *testing.F) {
	for _, p := range seedPackets(f) {
		f.Add(p)
	}
	cfg := Config{Hosts: []string{"api.openai.com", "x.cdn.net"}, Resolver: newFakeResolver(), Logger: discardLogger(), DNSSources: testSources()}
	f.Fuzz(func(t *testing.T, packet []byte) {
		// A fresh Set per input keeps runs independent and cheap.
		s, err := New(cfg, nopApplier{})
		if err != nil {
			t.Fatal(err)
		}
		err = s.ObserveDNS(packet, Arrival{})
		if errors.Is(err, errDecoderPanic) {
			t.Fatalf("gopacket panicked on this input: %v", err)
		}
		for _, e := range s.Entries() {
			if !e.Prefix.IsSingleIP() || e.Prefix.Addr().Is4In6() || !usableAddr(e.Prefix.Addr()) {
				t.Fatalf("bad entry %+v", e)
			}
		}
	})
}

// seedPackets are valid responses of each shape ObserveDNS handles; the
// fuzzer mutates them into the malformed ones.
func seedPackets(tb testing.TB) [][]byte {
	return [][]byte{
		mustPacket(tb, false, 53, response("api.openai.com", aRR("api.openai.com", "192.0.2.1", 60))),
		mustPacket(tb, true, 53, response("api.openai.com", aaaaRR("api.openai.com", "2001:db8::1", 60))),
		mustPacket(tb, false, 53, response("api.openai.com",
			cnameRR("api.openai.com", "x.cdn.net", 300), cnameRR("x.cdn.net", "y.cdn.net", 300), aRR("y.cdn.net", "192.0.2.3", 20))),
	}
}

func BenchmarkObserveDNS(b *testing.B) {
	const host = "api.openai.com"
	cases := []struct {
		name string
		pkt  []byte
	}{
		{"cname-chain", mustPacket(b, false, 53, response(host,
			cnameRR(host, "x.cdn.net", 300), aRR("x.cdn.net", "192.0.2.1", 60), aRR("x.cdn.net", "192.0.2.2", 60)))},
		{"unrelated", mustPacket(b, false, 53, response("www.example.com",
			cnameRR("www.example.com", "www.example.com.cdn.net", 300), aRR("www.example.com.cdn.net", "203.0.113.1", 60)))},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			s, err := New(Config{Hosts: []string{host}, Resolver: newFakeResolver(), Logger: discardLogger(), DNSSources: testSources()}, nopApplier{})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(c.pkt)))
			for b.Loop() {
				if err := s.ObserveDNS(c.pkt, Arrival{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "packets/s")
		})
	}
}
