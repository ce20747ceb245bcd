/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * Types and maps shared by promptrail's cgroup programs. Every object that
 * includes this header declares the same maps; the Go loader creates each map
 * once and hands it to every object (MapReplacements), so all programs see one
 * target set and one origin table.
 */
#pragma once

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10

/* Return values of cgroup sock_addr programs: 1 lets the call go on, 0
 * fails it with EPERM. */
#define ALLOW 1
#define REFUSE 0

/* An address as the kernel maps see it: IPv4 is stored IPv4-mapped
 * (::ffff:a.b.c.d) so one trie serves both families. */
struct target_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* What the kernel knows about a redirected connection when it is made. */
struct origin {
	__u8 orig_addr[16]; /* original destination, IPv4-mapped for IPv4 */
	__u16 orig_port;    /* host byte order */
	__u16 family;       /* AF_INET or AF_INET6: the socket's family */
	__u32 pid;          /* thread id (kernel pid) */
	__u32 tgid;         /* process id */
	__u32 uid;
	__u32 gid;
	__u32 pad;
	__u64 cgroup_id;
	__u64 netns_cookie;
	__u64 socket_cookie;
	__u64 connect_ns; /* CLOCK_MONOTONIC, bpf_ktime_get_ns */
	char comm[16];
};

/* The client's side of a redirected connection: what the proxy sees as the
 * remote address of the connection it accepts. */
struct client_key {
	__u8 addr[16]; /* IPv4-mapped for IPv4 */
	__u16 port;    /* host byte order */
	__u16 pad;
};

/* Written by the loader at start. Addresses and ports in network order. */
struct config {
	__u32 proxy4_host; /* for sockets in the host network namespace */
	__u32 proxy4_node; /* for other namespaces (pods); 0: none */
	__u32 proxy6_host[4];
	__u32 proxy6_node[4]; /* all zero: none */
	__u16 proxy_port_host;
	__u16 proxy_port_node;
	__u32 agent_mark; /* SO_MARK of the agent's own sockets */
	__u64 host_netns_cookie;
	__u32 fail_closed;
	__u32 pad;
	__u64 heartbeat_timeout_ns;
};

/* Written by the agent while it runs (heartbeat) and when it stops. */
struct agent_state {
	__u64 heartbeat_ns; /* CLOCK_MONOTONIC */
	__u32 stopped;
	__u32 pad;
};

enum counter {
	COUNTER_REDIRECTED,
	COUNTER_REFUSED_UDP,
	COUNTER_REFUSED_NO_AGENT,
	COUNTER_SKIPPED_AGENT,
	COUNTER_SKIPPED_NO_PROXY,
	COUNTER_REKEYED,
	COUNTER_CLOSED,
	COUNTER_DNS_CAPTURED,
	COUNTER_DNS_DROPPED,
	COUNTER_FORGED_MARK,  /* a connect carried the agent's mark from a socket the agent did not register */
	COUNTER_DROPPED_QUIC, /* UDP packets to a target dropped at egress (raw sockets included) */
	COUNTER_DROPPED_RAW,  /* TCP packets to a target from a raw socket, dropped at egress */
	COUNTER_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, struct target_key);
	__type(value, __u8);
} targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u16); /* host byte order */
	__type(value, __u8);
} target_ports SEC(".maps");

/* Origins between connect() and the established handshake, by socket cookie. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct origin);
} pending_origins SEC(".maps");

/* Origins of established redirected connections, by client address. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct client_key);
	__type(value, struct origin);
} origins SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config_map SEC(".maps");

/* Cookies of the agent's own sockets, written by the agent (its dialers
 * register each socket before connecting it) and never by a program
 * except sockops, which forgets a socket when it closes. Only a process
 * that holds this map's file descriptor can write it: a workload can set
 * any SO_MARK it likes (CAP_NET_ADMIN), but it cannot register a socket.
 * LRU, so a registration that sockops never sees close (a socket outside
 * the cgroup root) ages out instead of filling the map. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} agent_sockets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct agent_state);
} agent_state_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(enum counter c)
{
	__u32 key = c;
	__u64 *v = bpf_map_lookup_elem(&counters, &key);
	if (v)
		(*v)++;
}

static __always_inline struct config *get_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&config_map, &zero);
}

/* ipv4_mapped writes ::ffff:ip4 into addr; ip4 in network order. */
static __always_inline void ipv4_mapped(__u8 addr[16], __u32 ip4)
{
	__u32 *w = (__u32 *)addr;
	w[0] = 0;
	w[1] = 0;
	w[2] = bpf_htonl(0x0000ffff);
	w[3] = ip4;
}

/* is_target_addr reports whether addr is in the target set, on any port. */
static __always_inline int is_target_addr(const __u8 addr[16])
{
	struct target_key key = {.prefixlen = 128};
	__builtin_memcpy(key.addr, addr, 16);
	return bpf_map_lookup_elem(&targets, &key) != 0;
}

/* is_target reports whether addr:port is in the target set. */
static __always_inline int is_target(const __u8 addr[16], __u16 port)
{
	if (!bpf_map_lookup_elem(&target_ports, &port))
		return 0;
	return is_target_addr(addr);
}

/* agent_unavailable reports whether a fail-closed deployment has no live
 * agent: it stopped, or its heartbeat is older than the timeout. */
static __always_inline int agent_unavailable(const struct config *cfg)
{
	if (!cfg->fail_closed)
		return 0;
	__u32 zero = 0;
	struct agent_state *st = bpf_map_lookup_elem(&agent_state_map, &zero);
	if (!st || st->stopped)
		return 1;
	return bpf_ktime_get_ns() - st->heartbeat_ns > cfg->heartbeat_timeout_ns;
}

/* is_agent_socket reports whether the socket is one of the agent's own,
 * whose connections must never be redirected back to it: its cookie is
 * registered in agent_sockets and it carries the agent's mark. The mark
 * alone proves nothing (any process with CAP_NET_ADMIN can set it): a
 * marked socket that is not registered is counted as a forgery and
 * intercepted like any other. */
static __always_inline int is_agent_socket(struct bpf_sock_addr *ctx, const struct config *cfg)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 0;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	int registered = bpf_map_lookup_elem(&agent_sockets, &cookie) != 0;
	int marked = cfg->agent_mark && sk->mark == cfg->agent_mark;
	if (marked && !registered)
		count(COUNTER_FORGED_MARK);
	return registered && marked;
}

/* remember_origin stores who is connecting where, keyed by socket cookie
 * until sockops learns the client's address. */
static __always_inline void remember_origin(struct bpf_sock_addr *ctx, const __u8 dst[16],
					     __u16 port, __u16 family, __u64 netns)
{
	struct origin o = {};
	__builtin_memcpy(o.orig_addr, dst, 16);
	o.orig_port = port;
	o.family = family;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	o.pid = (__u32)pid_tgid;
	o.tgid = pid_tgid >> 32;
	__u64 uid_gid = bpf_get_current_uid_gid();
	o.uid = (__u32)uid_gid;
	o.gid = uid_gid >> 32;
	o.cgroup_id = bpf_get_current_cgroup_id();
	o.netns_cookie = netns;
	o.socket_cookie = bpf_get_socket_cookie(ctx);
	o.connect_ns = bpf_ktime_get_ns();
	bpf_get_current_comm(o.comm, sizeof(o.comm));
	bpf_map_update_elem(&pending_origins, &o.socket_cookie, &o, BPF_ANY);
}

enum verdict {
	VERDICT_PASS,          /* not ours: leave the connect alone */
	VERDICT_REFUSE,        /* fail it with EPERM */
	VERDICT_REDIRECT_HOST, /* to the proxy's host-namespace address */
	VERDICT_REDIRECT_NODE, /* to the proxy's node address, reachable from pods */
};

/* decide is the policy shared by connect4 and connect6. has_host_proxy and
 * has_node_proxy say whether the proxy has an address of the destination's
 * family for the host namespace and for other namespaces (pods). */
static __always_inline enum verdict decide(struct bpf_sock_addr *ctx, const __u8 dst[16], __u16 port,
					   int has_host_proxy, int has_node_proxy)
{
	if (!is_target(dst, port))
		return VERDICT_PASS;
	if (ctx->protocol == IPPROTO_UDP) {
		/* QUIC would bypass the TLS proxy: refuse so clients fall back to TCP. */
		count(COUNTER_REFUSED_UDP);
		return VERDICT_REFUSE;
	}
	if (ctx->protocol != IPPROTO_TCP)
		return VERDICT_PASS;
	struct config *cfg = get_config();
	if (!cfg)
		return VERDICT_PASS;
	if (is_agent_socket(ctx, cfg)) {
		count(COUNTER_SKIPPED_AGENT);
		return VERDICT_PASS;
	}
	if (agent_unavailable(cfg)) {
		count(COUNTER_REFUSED_NO_AGENT);
		return VERDICT_REFUSE;
	}
	__u64 netns = bpf_get_netns_cookie(ctx);
	enum verdict v = VERDICT_REDIRECT_HOST;
	int has_proxy = has_host_proxy;
	if (netns != cfg->host_netns_cookie) {
		v = VERDICT_REDIRECT_NODE;
		has_proxy = has_node_proxy;
	}
	if (!has_proxy) {
		count(COUNTER_SKIPPED_NO_PROXY);
		return cfg->fail_closed ? VERDICT_REFUSE : VERDICT_PASS;
	}
	remember_origin(ctx, dst, port, ctx->family, netns);
	count(COUNTER_REDIRECTED);
	return v;
}
