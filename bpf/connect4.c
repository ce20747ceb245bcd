//go:build ignore
/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * connect4 steers IPv4 connects to a target into the agent's proxy and
 * refuses UDP (QUIC) connects to a target.
 */
#include "promptrail.h"

/* Emits enum counter into BTF so that bpf2go generates its Go constants. */
const enum counter *unused_counter __attribute__((unused));

SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx)
{
	__u8 dst[16];
	ipv4_mapped(dst, ctx->user_ip4);
	__u16 port = bpf_ntohs(ctx->user_port);

	struct config *cfg = get_config();
	if (!cfg)
		return ALLOW;
	switch (decide(ctx, dst, port, cfg->proxy4_host != 0, cfg->proxy4_node != 0)) {
	case VERDICT_REFUSE:
		return REFUSE;
	case VERDICT_REDIRECT_HOST:
		ctx->user_ip4 = cfg->proxy4_host;
		ctx->user_port = cfg->proxy_port_host;
		return ALLOW;
	case VERDICT_REDIRECT_NODE:
		ctx->user_ip4 = cfg->proxy4_node;
		ctx->user_port = cfg->proxy_port_node;
		return ALLOW;
	default:
		return ALLOW;
	}
}

char __license[] SEC("license") = "Dual MIT/GPL";
