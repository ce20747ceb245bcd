//go:build ignore
/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * quic_egress drops UDP packets to a target address on port 443 or a
 * target port (QUIC, HTTP/3), and every UDP fragment to a target address,
 * whose port cannot be seen. The connect and sendmsg hooks refuse UDP
 * sockets that name a target, but a raw socket (SOCK_RAW with IPPROTO_UDP
 * or IP_HDRINCL, which CAP_NET_RAW allows and containers get by default)
 * builds its own UDP header and passes no such hook, and a UDP socket
 * connected before its peer became a target sends without naming it;
 * every packet a socket below the cgroup root sends passes this hook. For
 * the same reason it drops TCP to a target address from a raw socket (a
 * TCP stack of the workload's own, which connect4/6 never see). Drops are
 * counted (COUNTER_DROPPED_QUIC, COUNTER_DROPPED_RAW); the sender gets
 * EPERM. Packet sockets (AF_PACKET) bypass the IP layer and with it every
 * cgroup hook: they are not covered.
 */
#include "promptrail.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
/* IPv6 next-header values (RFC 8200), not in linux/in.h. */
#define IPPROTO_HOPOPTS 0
#define IPPROTO_ROUTING 43
#define IPPROTO_FRAGMENT_HDR 44
#define IPPROTO_DSTOPTS 60
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define QUIC_PORT 443
#define SOCK_RAW 3

/* Return values of cgroup_skb programs. */
#define SKB_PASS 1
#define SKB_DROP 0

/* quic_port reports whether the UDP header at off goes to a port that QUIC
 * to a target may use. */
static __always_inline int quic_port(struct __sk_buff *skb, int off)
{
	__u16 dport;
	if (bpf_skb_load_bytes(skb, off + 2, &dport, sizeof(dport)))
		return 1; /* a UDP packet too short for its header: not worth passing */
	__u16 port = bpf_ntohs(dport);
	return port == QUIC_PORT || bpf_map_lookup_elem(&target_ports, &port) != 0;
}

static __always_inline int drop_quic(void)
{
	count(COUNTER_DROPPED_QUIC);
	return SKB_DROP;
}

/* from_raw_socket reports whether a raw socket sent the packet. */
static __always_inline int from_raw_socket(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return 0;
	sk = bpf_sk_fullsock(sk);
	return sk && sk->type == SOCK_RAW;
}

static __always_inline int drop_raw(void)
{
	count(COUNTER_DROPPED_RAW);
	return SKB_DROP;
}

/* The program runs for every packet that workloads send, so each check
 * comes in order of cost: the sending socket's type and the port (a small
 * hash) before the target trie, which only raw TCP and QUIC-looking UDP
 * pay for. */

static __always_inline int egress4(struct __sk_buff *skb)
{
	__u8 vihl, proto;
	__u16 frag;
	__u32 daddr;
	__u8 dst[16];
	if (bpf_skb_load_bytes(skb, 9, &proto, 1))
		return SKB_PASS;
	if (proto == IPPROTO_TCP) {
		/* Only a kernel TCP socket, which connect4/6 redirected or the
		 * agent registered, may send TCP to a target. */
		if (!from_raw_socket(skb) || bpf_skb_load_bytes(skb, 16, &daddr, sizeof(daddr)))
			return SKB_PASS;
		ipv4_mapped(dst, daddr);
		return is_target_addr(dst) ? drop_raw() : SKB_PASS;
	}
	if (proto != IPPROTO_UDP)
		return SKB_PASS;
	if (bpf_skb_load_bytes(skb, 0, &vihl, 1) || bpf_skb_load_bytes(skb, 6, &frag, sizeof(frag)))
		return SKB_PASS;
	/* A fragment's port cannot be seen (later fragments carry none), so
	 * any UDP fragment to a target goes. */
	if (!(bpf_ntohs(frag) & (IP_MF | IP_OFFSET)) && !quic_port(skb, (vihl & 0x0f) * 4))
		return SKB_PASS;
	if (bpf_skb_load_bytes(skb, 16, &daddr, sizeof(daddr)))
		return SKB_PASS;
	ipv4_mapped(dst, daddr);
	return is_target_addr(dst) ? drop_quic() : SKB_PASS;
}

/* ext_headers bounds the IPv6 extension headers followed before giving up. */
#define EXT_HEADERS 4

static __always_inline int egress6(struct __sk_buff *skb)
{
	__u8 hdr[2];
	__u8 dst[16];
	if (bpf_skb_load_bytes(skb, 6, hdr, 1))
		return SKB_PASS;
	__u8 next = hdr[0];
	int raw = from_raw_socket(skb);
	/* The common cases first, without the trie: kernel TCP, and UDP to a
	 * port that is not QUIC's. */
	if (next == IPPROTO_TCP && !raw)
		return SKB_PASS;
	if (next == IPPROTO_UDP && !quic_port(skb, 40))
		return SKB_PASS;
	if (next != IPPROTO_UDP && next != IPPROTO_TCP && next != IPPROTO_FRAGMENT_HDR &&
	    next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING && next != IPPROTO_DSTOPTS)
		return SKB_PASS;
	if (bpf_skb_load_bytes(skb, 24, dst, sizeof(dst)) || !is_target_addr(dst))
		return SKB_PASS;
	/* Extension headers on UDP come only from raw sockets (or socket
	 * options); follow a few to find UDP. A fragment to a target is
	 * dropped whatever it carries: the port of a later fragment is not
	 * visible, and TCP does not fragment at the IP layer. */
	int off = 40;
	for (int i = 0; i < EXT_HEADERS; i++) {
		if (next == IPPROTO_UDP)
			return quic_port(skb, off) ? drop_quic() : SKB_PASS;
		if (next == IPPROTO_TCP)
			return raw ? drop_raw() : SKB_PASS;
		if (next == IPPROTO_FRAGMENT_HDR)
			return drop_quic();
		if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING && next != IPPROTO_DSTOPTS)
			return SKB_PASS;
		if (bpf_skb_load_bytes(skb, off, hdr, 2))
			return SKB_PASS;
		next = hdr[0];
		off += (hdr[1] + 1) * 8;
	}
	/* More extension headers than any real packet carries. */
	return next == IPPROTO_UDP || next == IPPROTO_FRAGMENT_HDR ? drop_quic() : SKB_PASS;
}

SEC("cgroup_skb/egress")
int quic_egress(struct __sk_buff *skb)
{
	if (skb->protocol == bpf_htons(ETH_P_IP))
		return egress4(skb);
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return egress6(skb);
	return SKB_PASS;
}

char __license[] SEC("license") = "Dual MIT/GPL";
