package intercept

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/promptrail/promptrail/bpf"
)

// ErrNoOrigin means that no redirected connection is known for a client
// address: the connection was not redirected by the programs (someone
// dialled the proxy directly) or it closed already.
var ErrNoOrigin = errors.New("no redirected connection from this client address")

// Origin is what the kernel knew about a redirected connection when the
// client called connect().
type Origin struct {
	Dst          netip.AddrPort // the original destination (IPv4 unmapped)
	PID          uint32         // thread id
	TGID         uint32         // process id, as ps shows it
	UID, GID     uint32
	CgroupID     uint64
	NetnsCookie  uint64
	SocketCookie uint64
	Comm         string
	ConnectTime  time.Time
}

// Origin returns the origin of the redirected connection whose client
// (the remote end of the connection the proxy accepted) is client.
func (in *Interceptor) Origin(client netip.AddrPort) (Origin, error) {
	key := bpf.Connect4ClientKey{Addr: client.Addr().As16(), Port: client.Port()}
	var o bpf.Connect4Origin
	if err := in.maps.origins.Lookup(&key, &o); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Origin{}, ErrNoOrigin
		}
		return Origin{}, fmt.Errorf("intercept: looking up %s in map origins: %w", client, err)
	}
	return originFrom(&o), nil
}

func originFrom(o *bpf.Connect4Origin) Origin {
	comm := make([]byte, 0, len(o.Comm))
	for _, c := range o.Comm {
		if c == 0 {
			break
		}
		comm = append(comm, byte(c))
	}
	return Origin{
		Dst:          netip.AddrPortFrom(netip.AddrFrom16(o.OrigAddr).Unmap(), o.OrigPort),
		PID:          o.Pid,
		TGID:         o.Tgid,
		UID:          o.Uid,
		GID:          o.Gid,
		CgroupID:     o.CgroupId,
		NetnsCookie:  o.NetnsCookie,
		SocketCookie: o.SocketCookie,
		Comm:         string(comm),
		ConnectTime:  wallFromMonotonic(o.ConnectNs),
	}
}

// monotonicNow reads CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns.
func monotonicNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) // cannot fail for CLOCK_MONOTONIC
	return uint64(ts.Nano())
}

func wallFromMonotonic(ns uint64) time.Time {
	return time.Now().Add(-time.Duration(monotonicNow() - ns))
}
