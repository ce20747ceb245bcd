//go:build ignore
/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * dns_ingress copies DNS responses (UDP from port 53) received by sockets
 * under the cgroup root into a ring buffer, so the agent learns the
 * addresses that workloads resolved for target names, also those of a CDN
 * that the agent's own resolver did not see. It never drops a packet.
 */
#include "promptrail.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define DNS_MAX_CAPTURE 2048

struct dns_event {
	__u32 len;             /* bytes in data */
	__u32 orig_len;        /* bytes in the packet */
	__u32 ingress_ifindex; /* the device it arrived on; 1 is loopback in every namespace */
	__u32 pad;
	__u64 netns_cookie; /* the receiver's network namespace; 0 if the kernel cannot tell */
	__u8 data[DNS_MAX_CAPTURE];
};

/* Set by the loader when the kernel offers bpf_get_netns_cookie to
 * cgroup_skb programs (recent kernels only): the verifier then drops the
 * branch that calls it where it is not offered. */
const volatile __u32 have_netns_cookie = 0;

/* Emits struct dns_event into BTF so that bpf2go generates its Go type. */
const struct dns_event *unused_dns_event __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} dns_events SEC(".maps");

/* udp_offset returns the offset of the UDP header, or -1 if not UDP. */
static __always_inline int udp_offset(struct __sk_buff *skb)
{
	__u8 b;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if (bpf_skb_load_bytes(skb, 9, &b, 1) || b != IPPROTO_UDP)
			return -1;
		if (bpf_skb_load_bytes(skb, 0, &b, 1))
			return -1;
		return (b & 0x0f) * 4;
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		/* Extension headers before UDP are not followed: DNS answers don't carry them. */
		if (bpf_skb_load_bytes(skb, 6, &b, 1) || b != IPPROTO_UDP)
			return -1;
		return 40;
	}
	return -1;
}

SEC("cgroup_skb/ingress")
int dns_ingress(struct __sk_buff *skb)
{
	int off = udp_offset(skb);
	if (off < 0)
		return 1;
	__u16 sport;
	if (bpf_skb_load_bytes(skb, off, &sport, sizeof(sport)) || sport != bpf_htons(53))
		return 1;

	struct dns_event *e = bpf_ringbuf_reserve(&dns_events, sizeof(*e), 0);
	if (!e) {
		count(COUNTER_DNS_DROPPED);
		return 1;
	}
	__u32 n = skb->len;
	e->orig_len = n;
	if (n > DNS_MAX_CAPTURE)
		n = DNS_MAX_CAPTURE;
	e->len = n;
	e->ingress_ifindex = skb->ingress_ifindex;
	e->pad = 0;
	if (n == 0 || bpf_skb_load_bytes(skb, 0, e->data, n)) {
		bpf_ringbuf_discard(e, 0);
		count(COUNTER_DNS_DROPPED);
		return 1;
	}
	/* After the copy: a helper call in between would make the verifier
	 * lose track of n's bounds. */
	e->netns_cookie = 0;
	if (have_netns_cookie)
		e->netns_cookie = bpf_get_netns_cookie(skb);
	bpf_ringbuf_submit(e, 0);
	count(COUNTER_DNS_CAPTURED);
	return 1;
}

char __license[] SEC("license") = "Dual MIT/GPL";
