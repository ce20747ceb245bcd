//go:build ignore
/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * sendmsg4 and sendmsg6 refuse unconnected UDP datagrams to a target's TCP
 * ports: QUIC (HTTP/3) would bypass the TLS proxy, and a refused QUIC
 * attempt makes clients fall back to TCP, which is intercepted. Connected
 * UDP sockets are refused earlier, by connect4 and connect6.
 */
#include "promptrail.h"

SEC("cgroup/sendmsg4")
int sendmsg4(struct bpf_sock_addr *ctx)
{
	__u8 dst[16];
	ipv4_mapped(dst, ctx->user_ip4);
	if (is_target(dst, bpf_ntohs(ctx->user_port))) {
		count(COUNTER_REFUSED_UDP);
		return REFUSE;
	}
	return ALLOW;
}

SEC("cgroup/sendmsg6")
int sendmsg6(struct bpf_sock_addr *ctx)
{
	__u32 w[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	if (is_target((const __u8 *)w, bpf_ntohs(ctx->user_port))) {
		count(COUNTER_REFUSED_UDP);
		return REFUSE;
	}
	return ALLOW;
}

char __license[] SEC("license") = "Dual MIT/GPL";
