package kerneltest

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// Hostile helpers: what a workload can do to get past the agent (see
// helpers for their command lines).

func tcpExchangeMarked(addr, msg string, mark uint32) Result {
	d := net.Dialer{Timeout: 5 * time.Second, Control: MarkControl(mark)}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return withErr(Result{}, err)
	}
	return exchange(c, msg)
}

// MarkControl is a dialer Control that sets SO_MARK mark on the socket, as
// any workload with CAP_NET_ADMIN can.
func MarkControl(mark uint32) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		}); err != nil {
			return err
		}
		return serr
	}
}

func sendRawUDP(addr string, payload []byte) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return err
	}
	hdr := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(hdr[0:], 40443)
	binary.BigEndian.PutUint16(hdr[2:], ap.Port())
	binary.BigEndian.PutUint16(hdr[4:], uint16(8+len(payload)))
	pkt := append(hdr, payload...) // checksum 0: none, allowed over IPv4
	if ap.Addr().Is4() {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
		if err != nil {
			return fmt.Errorf("raw socket: %w", err)
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: ap.Addr().As4()})
	}
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer unix.Close(fd)
	// IPv6 requires a UDP checksum: let the kernel fill it in (offset 6).
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_CHECKSUM, 6); err != nil {
		return fmt.Errorf("IPV6_CHECKSUM: %w", err)
	}
	return unix.Sendto(fd, pkt, 0, &unix.SockaddrInet6{Addr: ap.Addr().As16()})
}

func sendRawSYN(addr string, sport uint16) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return fmt.Errorf("want an IPv4 address and port, got %q", addr)
	}
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], ap.Port())
	binary.BigEndian.PutUint32(tcp[4:], 1) // sequence number
	tcp[12] = 5 << 4                       // data offset: 5 words, no options
	tcp[13] = 0x02                         // SYN
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	// No checksum: the receiver's TCP would drop it, but the test watches
	// with a raw socket, which sees the packet before any check.
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer unix.Close(fd)
	return unix.Sendto(fd, tcp, 0, &unix.SockaddrInet4{Addr: ap.Addr().As4()})
}

func forgeDNSAnswer(from, to, name, ip string) error {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return err
	}
	recv, err := net.ListenPacket("udp", to)
	if err != nil {
		return fmt.Errorf("receiver: %w", err)
	}
	defer recv.Close()
	// IP_TRANSPARENT lets the sender bind and send from an address that is
	// not its own (a resolver's); CAP_NET_RAW, a container default, allows
	// it. (IP_FREEBIND binds such an address without privilege, but the
	// kernel does not route what is sent from it.)
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TRANSPARENT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	send, err := lc.ListenPacket(context.Background(), "udp", from)
	if err != nil {
		return fmt.Errorf("sender on port 53: %w", err)
	}
	defer send.Close()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	m.Response = true
	m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 3600},
		A: a.AsSlice()}}
	b, err := m.Pack()
	if err != nil {
		return err
	}
	if _, err := send.WriteTo(b, recv.LocalAddr()); err != nil {
		return err
	}
	recv.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := recv.ReadFrom(make([]byte, 1500)); err != nil {
		return fmt.Errorf("the forged answer did not arrive: %w", err)
	}
	return nil
}
