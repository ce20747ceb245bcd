#!/usr/bin/env bash
# Builds the Kubernetes e2e cluster's components (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl, etcd)
# from tools/kube in one `go build`, into a cache directory keyed by the
# module versions (tools/kube/go.mod, go.sum) and the Go version, and prints
# that bin directory. A cached build is reused: a cold one takes about six
# minutes and 2.7 GB of memory.
#   KUBE_TOOLS_CACHE  cache root (default /var/cache/promptrail/kube)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mod="$root/tools/kube"
cache="${KUBE_TOOLS_CACHE:-/var/cache/promptrail/kube}"
GO="${GO:-go}"

key="$({ cat "$mod/go.mod" "$mod/go.sum"; "$GO" env GOVERSION GOOS GOARCH; } | sha256sum | cut -c1-16)"
dir="$cache/$key"
tools=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd)

complete() {
	local t
	for t in "${tools[@]}"; do [ -x "$dir/bin/$t" ] || return 1; done
}

if ! complete; then
	echo "kube-tools: building into $dir/bin (cold: about 6 minutes)" >&2
	mkdir -p "$cache"
	tmp="$(mktemp -d "$cache/.tmp.XXXXXX")"
	trap 'rm -rf "$tmp"' EXIT
	# CGO off: static binaries, no libc dependency; the kubelet and
	# kube-proxy need no cgo on Linux.
	(cd "$mod" && CGO_ENABLED=0 "$GO" build -trimpath -o "$tmp/" \
		k8s.io/kubernetes/cmd/kube-apiserver \
		k8s.io/kubernetes/cmd/kube-controller-manager \
		k8s.io/kubernetes/cmd/kube-scheduler \
		k8s.io/kubernetes/cmd/kubelet \
		k8s.io/kubernetes/cmd/kube-proxy \
		k8s.io/kubernetes/cmd/kubectl \
		go.etcd.io/etcd/server/v3)
	# go build names a /vN module's main package after the element before it.
	mv "$tmp/server" "$tmp/etcd"
	mkdir -p "$dir"
	rm -rf "$dir/bin"
	mv "$tmp" "$dir/bin"
	trap - EXIT
fi
echo "$dir/bin"
