#!/usr/bin/env bash
# vagrant-provision.sh: sets up the dev VM of the Vagrantfile (Debian 12).
# Run as root, in two phases, with a reboot in between (the Vagrantfile does
# this):
#
#   kernel  the newest kernel from bookworm-backports (bookworm's own 6.1
#           has everything promptrail needs; backports tracks newer ones)
#   tools   Go, clang-16/llvm-16/libbpf-dev/bpftool (make generate), iproute2
#           and nftables (scripts/dev-netns.sh, the e2e tests), Node.js and
#           npm (e2e clients), podman (deploy/Containerfile), bpffs, k3s
#
# Both phases can be run again; they skip what is already in place.
#
# Environment:
#   GO_VERSION   Go release to install (default 1.26.8, the go.mod minimum)
#   INSTALL_K3S  1 (default) installs k3s, 0 skips it
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
GO_VERSION=${GO_VERSION:-1.26.8}
INSTALL_K3S=${INSTALL_K3S:-1}
arch=$(dpkg --print-architecture) # amd64, arm64: also Go's names

log() { echo "--- $*"; }

phase_kernel() {
	log "kernel from bookworm-backports"
	echo "deb http://deb.debian.org/debian bookworm-backports main" >/etc/apt/sources.list.d/bookworm-backports.list
	apt-get update -qq
	apt-get install -y -qq -t bookworm-backports "linux-image-$arch" >/dev/null
	log "installed; the VM reboots into it"
}

install_go() {
	if [ "$(/usr/local/go/bin/go env GOVERSION 2>/dev/null || true)" = "go$GO_VERSION" ]; then
		log "Go $GO_VERSION already installed"
	else
		log "Go $GO_VERSION"
		local file=go$GO_VERSION.linux-$arch.tar.gz tmp sum
		tmp=$(mktemp -d)
		curl -fsSL -o "$tmp/$file" "https://dl.google.com/go/$file"
		sum=$(curl -fsSL "https://dl.google.com/go/$file.sha256")
		echo "$sum  $tmp/$file" | sha256sum -c --quiet -
		rm -rf /usr/local/go
		tar -C /usr/local -xzf "$tmp/$file"
		rm -rf "$tmp"
	fi
	# On sudo's secure_path too, so that `sudo make test` finds go.
	ln -sf /usr/local/go/bin/go /usr/local/bin/go
	ln -sf /usr/local/go/bin/gofmt /usr/local/bin/gofmt
}

mount_bpffs() {
	if mountpoint -q /sys/fs/bpf; then
		log "bpffs already mounted"
		return
	fi
	log "mounting bpffs at /sys/fs/bpf"
	mount -t bpf bpf /sys/fs/bpf
	grep -qs '^bpf[[:space:]]\+/sys/fs/bpf[[:space:]]' /etc/fstab ||
		echo "bpf /sys/fs/bpf bpf defaults 0 0" >>/etc/fstab
}

check_kernel() {
	log "kernel $(uname -r)"
	if [ "$(stat -f -c %T /sys/fs/cgroup)" != cgroup2fs ]; then
		echo "warning: /sys/fs/cgroup is not cgroup v2 (unified); promptrail needs cgroup v2" >&2
	fi
	if [ ! -e /sys/kernel/btf/vmlinux ]; then
		echo "warning: no /sys/kernel/btf/vmlinux; promptrail needs a kernel with BTF" >&2
	fi
}

install_k3s() {
	if [ "$INSTALL_K3S" != 1 ]; then
		log "k3s skipped (INSTALL_K3S=$INSTALL_K3S)"
		return
	fi
	if command -v k3s >/dev/null; then
		log "k3s already installed"
		return
	fi
	log "k3s (single-node cluster; kubectl for the vagrant user)"
	curl -sfL https://get.k3s.io |
		INSTALL_K3S_EXEC="--write-kubeconfig-mode=0644 --disable=traefik" sh -
}

phase_tools() {
	log "packages"
	apt-get update -qq
	apt-get install -y -qq \
		build-essential git ca-certificates curl \
		clang-16 llvm-16 libbpf-dev bpftool \
		iproute2 nftables \
		nodejs npm \
		podman >/dev/null
	install_go
	mount_bpffs
	check_kernel
	install_k3s
	log "done: vagrant ssh, then cd /vagrant && sudo make test"
}

case ${1:-} in
kernel) phase_kernel ;;
tools) phase_tools ;;
*)
	echo "usage: ${0##*/} kernel|tools" >&2
	exit 2
	;;
esac
