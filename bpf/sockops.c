//go:build ignore
/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * sockops moves the origin of a redirected connection from its socket
 * cookie to the client's address and port once the handshake completes,
 * which is what the proxy sees when it accepts, and deletes it when the
 * socket closes, so the tables never outgrow the live connections. It also
 * forgets the agent's own sockets (agent_sockets) when they close.
 */
#include "promptrail.h"

static __always_inline void client_key_of(struct bpf_sock_ops *skops, struct client_key *key)
{
	/* Volatile copies read every field at a fixed offset from the context:
	 * left to itself, clang sinks the reads into the branches and derives
	 * one pointer for them, which the verifier rejects for a context. */
	volatile __u32 family = skops->family;
	volatile __u32 ip4 = skops->local_ip4;
	volatile __u32 ip6[4] = {skops->local_ip6[0], skops->local_ip6[1], skops->local_ip6[2], skops->local_ip6[3]};
	volatile __u32 port = skops->local_port; /* host byte order already */

	__u32 *w = (__u32 *)key->addr;
	if (family == AF_INET) {
		w[0] = 0;
		w[1] = 0;
		w[2] = bpf_htonl(0x0000ffff);
		w[3] = ip4;
	} else {
		w[0] = ip6[0];
		w[1] = ip6[1];
		w[2] = ip6[2];
		w[3] = ip6[3];
	}
	key->port = (__u16)port;
	key->pad = 0;
}

SEC("sockops")
int track_origin(struct bpf_sock_ops *skops)
{
	__u64 cookie;
	struct origin *o;
	struct client_key key = {};

	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		/* Ask for state changes only on redirected sockets and the agent's
		 * own, so a connect that never completes still has its entry removed. */
		cookie = bpf_get_socket_cookie(skops);
		if (bpf_map_lookup_elem(&pending_origins, &cookie) || bpf_map_lookup_elem(&agent_sockets, &cookie))
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
								 BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		cookie = bpf_get_socket_cookie(skops);
		o = bpf_map_lookup_elem(&pending_origins, &cookie);
		if (!o)
			break;
		client_key_of(skops, &key);
		bpf_map_update_elem(&origins, &key, o, BPF_ANY);
		bpf_map_delete_elem(&pending_origins, &cookie);
		count(COUNTER_REKEYED);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] != BPF_TCP_CLOSE)
			break;
		cookie = bpf_get_socket_cookie(skops);
		bpf_map_delete_elem(&pending_origins, &cookie);
		bpf_map_delete_elem(&agent_sockets, &cookie);
		client_key_of(skops, &key);
		o = bpf_map_lookup_elem(&origins, &key);
		/* The client's port may already belong to a newer connection. */
		if (o && o->socket_cookie == cookie) {
			bpf_map_delete_elem(&origins, &key);
			count(COUNTER_CLOSED);
		}
		break;
	}
	return 1;
}

char __license[] SEC("license") = "Dual MIT/GPL";
