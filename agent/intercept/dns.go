package intercept

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/promptrail/promptrail/bpf"
)

// Arrival says where a captured DNS packet arrived.
type Arrival struct {
	// Loopback: it arrived on a loopback device, so it was sent from the
	// receiver's own network namespace.
	Loopback bool
	// OtherNetns: the receiver is in a network namespace other than the
	// agent's, such as a pod's. False also where the kernel cannot tell
	// (bpf_get_netns_cookie is offered to cgroup_skb programs by recent
	// kernels only).
	OtherNetns bool
}

// ReadDNS calls fn with every DNS response packet (from the IP header on)
// that a socket under the cgroup root received, and where it arrived,
// until ctx is done or the Interceptor is closed. It needs
// Config.CaptureDNS. fn must not keep the slice.
func (in *Interceptor) ReadDNS(ctx context.Context, fn func(packet []byte, a Arrival)) error {
	if in.dns == nil {
		return errors.New("intercept: DNS capture is not enabled")
	}
	stop := context.AfterFunc(ctx, func() { in.dns.Close() })
	defer stop()
	var rec ringbuf.Record
	for {
		if err := in.dns.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return nil
			}
			return fmt.Errorf("intercept: reading ring buffer of map dns_events: %w", err)
		}
		var ev bpf.DnsDnsEvent
		hdr := int(unsafe.Offsetof(ev.Data))
		if len(rec.RawSample) < hdr {
			continue
		}
		n := int(binary.NativeEndian.Uint32(rec.RawSample[unsafe.Offsetof(ev.Len):]))
		if n > len(rec.RawSample)-hdr {
			n = len(rec.RawSample) - hdr
		}
		// The loopback device has ifindex 1 in every network namespace
		// (LOOPBACK_IFINDEX in the kernel's net/core/dev.c).
		ifindex := binary.NativeEndian.Uint32(rec.RawSample[unsafe.Offsetof(ev.IngressIfindex):])
		netns := binary.NativeEndian.Uint64(rec.RawSample[unsafe.Offsetof(ev.NetnsCookie):])
		fn(rec.RawSample[hdr:hdr+n], Arrival{Loopback: ifindex == 1, OtherNetns: netns != 0 && netns != in.hostNetns})
	}
}
