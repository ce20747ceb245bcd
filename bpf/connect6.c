//go:build ignore
/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * connect6 steers IPv6 connects to a target into the agent's proxy,
 * IPv4-mapped destinations (::ffff:a.b.c.d, used by dual-stack sockets)
 * included, and refuses UDP (QUIC) connects to a target.
 */
#include "promptrail.h"

static __always_inline int is_v4_mapped(const __u32 w[4])
{
	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff);
}

static __always_inline int is_zero6(const __u32 w[4])
{
	return (w[0] | w[1] | w[2] | w[3]) == 0;
}

static __always_inline void set_dst6(struct bpf_sock_addr *ctx, const __u32 w[4])
{
	ctx->user_ip6[0] = w[0];
	ctx->user_ip6[1] = w[1];
	ctx->user_ip6[2] = w[2];
	ctx->user_ip6[3] = w[3];
}

SEC("cgroup/connect6")
int connect6(struct bpf_sock_addr *ctx)
{
	__u32 w[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	__u16 port = bpf_ntohs(ctx->user_port);

	struct config *cfg = get_config();
	if (!cfg)
		return ALLOW;
	int mapped = is_v4_mapped(w);
	int has_host = mapped ? cfg->proxy4_host != 0 : !is_zero6(cfg->proxy6_host);
	int has_node = mapped ? cfg->proxy4_node != 0 : !is_zero6(cfg->proxy6_node);
	enum verdict v = decide(ctx, (const __u8 *)w, port, has_host, has_node);
	if (v == VERDICT_PASS)
		return ALLOW;
	if (v == VERDICT_REFUSE)
		return REFUSE;

	__u32 to[4] = {0, 0, bpf_htonl(0x0000ffff), 0};
	if (mapped) {
		to[3] = v == VERDICT_REDIRECT_HOST ? cfg->proxy4_host : cfg->proxy4_node;
	} else if (v == VERDICT_REDIRECT_HOST) {
		__builtin_memcpy(to, cfg->proxy6_host, sizeof(to));
	} else {
		__builtin_memcpy(to, cfg->proxy6_node, sizeof(to));
	}
	set_dst6(ctx, to);
	ctx->user_port = v == VERDICT_REDIRECT_HOST ? cfg->proxy_port_host : cfg->proxy_port_node;
	return ALLOW;
}

char __license[] SEC("license") = "Dual MIT/GPL";
