package identity

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// errNoPeer means no process of this network namespace holds the socket.
var errNoPeer = errors.New("no local process holds the peer socket")

// PeerOrigin finds the process behind a TCP connection the agent accepted
// from a local client (an explicit-proxy client on loopback, which the
// kernel hooks did not redirect and so gave no origin): the socket whose
// local address is client and remote address is server, in the agent's
// network namespace, and the process whose file descriptors hold it. It
// reads /proc/net/tcp{,6} and every process's fd directory, so it is for
// the explicit proxy's rare connections, not the transparent path.
func (r *Resolver) PeerOrigin(client, server netip.AddrPort) (Origin, error) {
	uid, ino, err := findSocket(r.cfg.ProcRoot, client, server)
	if err != nil {
		return Origin{}, err
	}
	pid, err := socketOwner(r.cfg.ProcRoot, ino)
	if err != nil {
		return Origin{}, err
	}
	o := Origin{PID: pid, UID: uid}
	dir := filepath.Join(r.cfg.ProcRoot, strconv.FormatUint(uint64(pid), 10))
	if b, err := os.ReadFile(filepath.Join(dir, "comm")); err == nil {
		o.Comm = strings.TrimSpace(string(b))
	}
	o.GID = statusID(filepath.Join(dir, "status"), "Gid:")
	if p, err := procCgroupPath(filepath.Join(dir, "cgroup")); err == nil {
		if rel, ok := r.cgroups.rebase(p); ok {
			p = rel
		}
		if id, err := inode(filepath.Join(r.cfg.CgroupRoot, p)); err == nil {
			o.CgroupID = id
		}
	}
	return o, nil
}

// findSocket returns the uid and inode of the TCP socket from local to
// remote, from /proc/net/tcp or tcp6 (Documentation/networking/proc_net_tcp.rst).
func findSocket(proc string, local, remote netip.AddrPort) (uid uint32, ino uint64, err error) {
	local, remote = netip.AddrPortFrom(local.Addr().Unmap(), local.Port()), netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	for _, f := range []string{"net/tcp", "net/tcp6"} {
		b, err := os.ReadFile(filepath.Join(proc, f))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Scan() // header
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 10 {
				continue
			}
			l, lok := parseProcAddr(fs[1])
			r, rok := parseProcAddr(fs[2])
			if !lok || !rok || l != local || r != remote {
				continue
			}
			u, _ := strconv.ParseUint(fs[7], 10, 32)
			i, _ := strconv.ParseUint(fs[9], 10, 64)
			if i == 0 {
				continue // a socket in TIME_WAIT has no owner
			}
			return uint32(u), i, nil
		}
	}
	return 0, 0, fmt.Errorf("%w: no TCP socket %s -> %s in this network namespace", errNoPeer, local, remote)
}

// parseProcAddr parses "0100007F:1F90": the address as the kernel holds
// it in memory (host-order 32-bit words), then the port in hex.
func parseProcAddr(s string) (netip.AddrPort, bool) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, false
	}
	raw, err := hex.DecodeString(a)
	port, perr := strconv.ParseUint(p, 16, 16)
	if err != nil || perr != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, false
	}
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(raw[i:], binary.NativeEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), true
}

// socketOwner returns the process one of whose descriptors is the socket
// with inode ino.
func socketOwner(proc string, ino uint64) (uint32, error) {
	want := "socket:[" + strconv.FormatUint(ino, 10) + "]"
	ents, err := os.ReadDir(proc)
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		pid, err := strconv.ParseUint(e.Name(), 10, 32)
		if err != nil {
			continue
		}
		fdDir := filepath.Join(proc, e.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil && l == want {
				return uint32(pid), nil
			}
		}
	}
	return 0, fmt.Errorf("%w: socket inode %d", errNoPeer, ino)
}

// statusID reads the real id from a /proc/<pid>/status line such as
// "Gid:\t1000\t1000\t1000\t1000".
func statusID(file, key string) uint32 {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			if fs := strings.Fields(rest); len(fs) > 0 {
				n, _ := strconv.ParseUint(fs[0], 10, 32)
				return uint32(n)
			}
		}
	}
	return 0
}
