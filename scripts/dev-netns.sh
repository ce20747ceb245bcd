#!/usr/bin/env bash
# dev-netns.sh: a pod-like sandbox for trying promptrail by hand.
#
# "up" creates, for slot N (0-255, default 100):
#   - network namespace prdevN, joined to the host by a veth pair:
#     host side prdhN 198.18.N.1/30, namespace side prdpN 198.18.N.2/30,
#     default route via the host side (198.18.0.0/15 is the RFC 2544
#     benchmarking range: never anyone's real network);
#   - cgroup promptrail-devN under the cgroup v2 root (--cgroup-root).
# "exec" runs a command in both, "down" removes what "up" made.
#
# The e2e tests use small slots (198.18.1.0/30, ...); the default of 100
# keeps clear of them.
set -euo pipefail

prog=${0##*/}

usage() {
	cat <<EOF
Usage:
  $prog up   [-n N] [--cgroup-root DIR] [--nat] [--dns ADDR]
  $prog exec [-n N] [--cgroup-root DIR] -- COMMAND [ARG...]
  $prog down [-n N] [--cgroup-root DIR]

  -n N               slot 0-255: namespace prdevN, veth 198.18.N.0/30,
                     cgroup promptrail-devN (default 100)
  --cgroup-root DIR  cgroup v2 directory to create the cgroup under
                     (default: /sys/fs/cgroup, or /sys/fs/cgroup/unified on
                     hybrid hosts)
  --nat              also let the namespace reach the outside: enable IPv4
                     forwarding and masquerade 198.18.N.0/30 (nftables table
                     ip promptrail_devN). Intercepted connections do not
                     need it: the agent dials them from the host.
  --dns ADDR         nameserver for commands run in the namespace
                     (/etc/netns/prdevN/resolv.conf); it must be reachable
                     from there, which usually takes --nat

Run as root.
EOF
}

die() {
	echo "$prog: $*" >&2
	exit 1
}

is_cgroup2() {
	[ "$(stat -f -c %T "$1" 2>/dev/null)" = cgroup2fs ]
}

default_cgroup_root() {
	local p
	for p in /sys/fs/cgroup /sys/fs/cgroup/unified; do
		if is_cgroup2 "$p"; then
			echo "$p"
			return
		fi
	done
	die "no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified; pass --cgroup-root"
}

[ $# -ge 1 ] || {
	usage >&2
	exit 2
}
cmd=$1
shift
case $cmd in
up | exec | down) ;;
-h | --help | help)
	usage
	exit 0
	;;
*)
	usage >&2
	exit 2
	;;
esac

n=100
cgroup_root=
nat=false
dns=
while [ $# -gt 0 ]; do
	case $1 in
	-n)
		[ $# -ge 2 ] || die "-n needs a value"
		n=$2
		shift 2
		;;
	--cgroup-root)
		[ $# -ge 2 ] || die "--cgroup-root needs a value"
		cgroup_root=$2
		shift 2
		;;
	--nat)
		[ "$cmd" = up ] || die "--nat is an option of up"
		nat=true
		shift
		;;
	--dns)
		[ "$cmd" = up ] || die "--dns is an option of up"
		[ $# -ge 2 ] || die "--dns needs a value"
		dns=$2
		shift 2
		;;
	--)
		shift
		break
		;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		die "unknown argument: $1 (see $prog --help)"
		;;
	esac
done

case $n in
'' | *[!0-9]*) die "-n wants a number from 0 to 255, not '$n'" ;;
esac
n=$((10#$n))
[ "$n" -le 255 ] || die "-n wants a number from 0 to 255, not $n"
[ "$(id -u)" -eq 0 ] || die "run as root (sudo $prog $cmd ...)"

root_arg=
if [ -z "$cgroup_root" ]; then
	cgroup_root=$(default_cgroup_root)
else
	root_arg=" --cgroup-root $cgroup_root"
fi
cgroup_root=${cgroup_root%/}
is_cgroup2 "$cgroup_root" || die "$cgroup_root is not a directory of a cgroup v2 hierarchy"

ns=prdev$n
host_if=prdh$n
pod_if=prdp$n
host_addr=198.18.$n.1
pod_addr=198.18.$n.2
subnet=198.18.$n.0/30
cgroup=$cgroup_root/promptrail-dev$n
nft_table=promptrail_dev$n
netns_etc=/etc/netns/$ns

ns_exists() {
	ip netns list | awk '{print $1}' | grep -qx -- "$ns"
}

link_exists() {
	ip link show dev "$1" >/dev/null 2>&1
}

cmd_up() {
	ns_exists && die "namespace $ns exists already; run: $prog down -n $n"
	link_exists "$host_if" && die "interface $host_if exists already; run: $prog down -n $n"
	[ -e "$cgroup" ] && die "cgroup $cgroup exists already; run: $prog down -n $n"

	ip netns add "$ns"
	ip link add "$host_if" type veth peer name "$pod_if"
	ip link set "$pod_if" netns "$ns"
	ip addr add "$host_addr/30" dev "$host_if"
	ip link set "$host_if" up
	ip -n "$ns" addr add "$pod_addr/30" dev "$pod_if"
	ip -n "$ns" link set "$pod_if" up
	ip -n "$ns" link set lo up
	ip -n "$ns" route add default via "$host_addr"
	mkdir "$cgroup"

	if $nat; then
		command -v nft >/dev/null || die "--nat needs nft (apt-get install nftables)"
		sysctl -qw net.ipv4.ip_forward=1
		nft -f - <<EOF
table ip $nft_table {
	chain postrouting {
		type nat hook postrouting priority 100; policy accept;
		ip saddr $subnet oifname != "$host_if" masquerade
	}
}
EOF
	fi
	if [ -n "$dns" ]; then
		mkdir -p "$netns_etc"
		echo "nameserver $dns" >"$netns_etc/resolv.conf"
	fi

	cat <<EOF
Up: namespace $ns ($pod_if $pod_addr/30, default via $host_addr on $host_if),
cgroup $cgroup.

Run a command in both (as root; the command runs as root too):
  $0 exec -n $n -- curl -sS https://api.openai.com/v1/models
or without this script:
  sh -c 'echo \$\$ > $cgroup/cgroup.procs && exec ip netns exec $ns "\$@"' sh curl -sS https://api.openai.com/v1/models

An agent that intercepts only this cgroup, serving the namespace on the
host side of the veth (as a DaemonSet serves pods on the node IP):
  bin/promptrail run --cgroup-root $cgroup --proxy-listen '127.0.0.1:15001,[::1]:15001,$host_addr:15001'

A private /etc/hosts for the namespace: $netns_etc/hosts (ip netns exec
bind-mounts the files of $netns_etc over /etc).
Remove everything: $0 down -n $n$root_arg
EOF
	if ! $nat; then
		echo "Only intercepted connections leave the namespace (no --nat); name lookups need --nat and --dns, or $netns_etc/hosts."
	fi
}

cmd_exec() {
	[ $# -ge 1 ] || die "exec needs a command after --"
	ns_exists || die "no namespace $ns; run: $prog up -n $n"
	[ -d "$cgroup" ] || die "no cgroup $cgroup; run: $prog up -n $n"
	# Move this shell into the cgroup, then replace it with the command, so
	# the command and everything it starts stay in the cgroup.
	echo $$ >"$cgroup/cgroup.procs"
	exec ip netns exec "$ns" "$@"
}

cmd_down() {
	local failed=false pids
	if [ -d "$cgroup" ]; then
		pids=$(tr '\n' ' ' <"$cgroup/cgroup.procs")
		pids=${pids% }
		if [ -n "$pids" ]; then
			echo "$prog: cgroup $cgroup still has processes ($pids); stop them, or: echo 1 > $cgroup/cgroup.kill" >&2
			failed=true
		else
			rmdir "$cgroup"
		fi
	fi
	if link_exists "$host_if"; then
		ip link del "$host_if" # takes the peer with it
	fi
	if ns_exists; then
		ip netns del "$ns"
	fi
	if command -v nft >/dev/null && nft list table ip "$nft_table" >/dev/null 2>&1; then
		nft delete table ip "$nft_table"
	fi
	if [ -d "$netns_etc" ]; then
		rm -f "$netns_etc/resolv.conf"
		rmdir "$netns_etc" 2>/dev/null || echo "$prog: kept $netns_etc (it holds other files)" >&2
	fi
	if $failed; then
		exit 1
	fi
	echo "Down: slot $n removed (IPv4 forwarding, if --nat enabled it, stays on)."
}

case $cmd in
up) cmd_up ;;
exec) cmd_exec "$@" ;;
down) cmd_down ;;
esac
