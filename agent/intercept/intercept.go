// Package intercept attaches promptrail's eBPF programs (package bpf) to a
// cgroup v2 subtree, so that TCP connections bound for a target address are
// steered into the agent's proxy, and tells the proxy where each redirected
// connection came from: the original destination and the process, cgroup
// and network namespace that made it.
//
// The programs use cgroup hooks only (sock_addr, sock_ops, cgroup_skb): they
// work on kernels without kprobes or fentry, and whatever TLS library the
// client uses. UDP to a target's port is refused at connect and sendmsg and
// dropped at egress, where raw sockets are seen too. The agent's own sockets
// are told apart by registration (AgentSockets), never by their mark alone,
// which any process with CAP_NET_ADMIN can set.
package intercept

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
)

// FailMode says what happens to connections bound for a target while no
// agent runs.
type FailMode string

const (
	// FailOpen detaches the programs with the agent: traffic goes direct,
	// unaudited, until the agent is back.
	FailOpen FailMode = "fail-open"
	// FailClosed leaves the programs pinned in bpffs: while no agent is
	// alive (stopped, or no heartbeat for HeartbeatTimeout), connects to a
	// target fail with EPERM. Nothing leaves the node unaudited.
	FailClosed FailMode = "fail-closed"
)

// DefaultMark is the SO_MARK that the agent puts on its own sockets (see
// AgentSockets: the mark alone exempts nothing). It is one bit that none of
// these use, so their rules neither act on the agent's traffic nor lose
// their own marks to it (the old default 0x7072 had kube-proxy's
// masquerade bit, and with kube-proxy's rules every upstream dial timed
// out):
//   - kube-proxy and kubelet: 0x4000 masquerade, 0x8000 drop
//     (--iptables-masquerade-bit 14, --iptables-drop-bit 15; kubernetes
//     pkg/proxy/iptables, pkg/kubelet/kubelet_network_linux.go);
//   - Calico: Felix's default iptablesMarkMask 0xffff0000 (Felix
//     configuration reference);
//   - Cilium: 0x0f00 magic (MagicMarkHostMask in pkg/datapath/linux/
//     linux_defaults) and the upper 16 bits for identities;
//   - Istio: 1337 = 0x539 (istio-iptables' proxy mark), ambient 0x111,
//     0x222 under mask 0xfff;
//   - AWS VPC CNI: 0x80 (AWS_VPC_K8S_CNI_CONNMARK);
//   - Flannel sets no mark of its own in iptables mode; it relies on
//     kube-proxy's.
//
// Operators whose CNI uses 0x2000 pick another with --socket-mark.
const DefaultMark uint32 = 0x00002000

// DefaultPinPath is where fail-closed programs are pinned.
const DefaultPinPath = "/sys/fs/bpf/promptrail"

// Config configures Attach.
type Config struct {
	// CgroupRoot is the cgroup v2 directory whose subtree is intercepted.
	// Required; DefaultCgroupRoot finds the usual one.
	CgroupRoot string
	// PinPath is a bpffs directory for the pinned links of fail-closed
	// mode. Empty: DefaultPinPath. Attach also removes what an earlier agent
	// left there.
	PinPath string
	// FailMode is FailOpen or FailClosed. Empty: FailClosed.
	FailMode FailMode
	// HostProxy4 and HostProxy6 are the proxy's addresses for sockets in
	// the agent's own (host) network namespace, usually loopback. Zero: the
	// node address of the same family is used.
	HostProxy4, HostProxy6 netip.AddrPort
	// NodeProxy4 and NodeProxy6 are the proxy's addresses for sockets in
	// other network namespaces (pods): an address of the node that pods can
	// reach, never loopback. Zero: connects from other namespaces are not
	// redirected (refused in fail-closed mode).
	NodeProxy4, NodeProxy6 netip.AddrPort
	// Ports are the destination ports that make an address a target, e.g.
	// 443. Required.
	Ports []uint16
	// Sockets registers the agent's own sockets, which the programs never
	// redirect; dial with its Control. Nil: Attach makes one with Mark, which
	// Sockets returns. The Interceptor does not close a given one.
	Sockets *AgentSockets
	// Mark is the SO_MARK of the agent's own sockets, for Sockets made by
	// Attach. Zero: DefaultMark, or that of Sockets.
	Mark uint32
	// HeartbeatTimeout is how long a fail-closed deployment waits for a
	// heartbeat before it treats the agent as gone. Zero: 5s.
	HeartbeatTimeout time.Duration
	// CaptureDNS attaches the DNS-response capture program; read the
	// packets with ReadDNS.
	CaptureDNS bool
	// Logger receives lifecycle messages. Nil: slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.CgroupRoot == "" {
		return errors.New("intercept: no cgroup root given")
	}
	if c.PinPath == "" {
		c.PinPath = DefaultPinPath
	}
	switch c.FailMode {
	case "":
		c.FailMode = FailClosed
	case FailOpen, FailClosed:
	default:
		return fmt.Errorf("intercept: unknown fail mode %q (want %s or %s)", c.FailMode, FailOpen, FailClosed)
	}
	if !c.HostProxy4.IsValid() {
		c.HostProxy4 = c.NodeProxy4
	}
	if !c.HostProxy6.IsValid() {
		c.HostProxy6 = c.NodeProxy6
	}
	if !c.HostProxy4.IsValid() && !c.HostProxy6.IsValid() {
		return errors.New("intercept: no proxy address to redirect to")
	}
	for name, ap := range map[string]netip.AddrPort{"host IPv4": c.HostProxy4, "node IPv4": c.NodeProxy4} {
		if ap.IsValid() && !ap.Addr().Is4() {
			return fmt.Errorf("intercept: %s proxy address %s is not IPv4", name, ap)
		}
	}
	for name, ap := range map[string]netip.AddrPort{"host IPv6": c.HostProxy6, "node IPv6": c.NodeProxy6} {
		if ap.IsValid() && !ap.Addr().Is6() {
			return fmt.Errorf("intercept: %s proxy address %s is not IPv6", name, ap)
		}
	}
	if c.NodeProxy4.IsValid() && c.NodeProxy4.Addr().IsLoopback() {
		return fmt.Errorf("intercept: node proxy address %s is loopback, which pods cannot reach", c.NodeProxy4)
	}
	if c.NodeProxy6.IsValid() && c.NodeProxy6.Addr().IsLoopback() {
		return fmt.Errorf("intercept: node proxy address %s is loopback, which pods cannot reach", c.NodeProxy6)
	}
	if len(c.Ports) == 0 {
		return errors.New("intercept: no target ports given")
	}
	switch {
	case c.Sockets != nil && c.Mark != 0 && c.Mark != c.Sockets.Mark():
		return fmt.Errorf("intercept: mark %#x differs from the mark %#x of the socket registry", c.Mark, c.Sockets.Mark())
	case c.Sockets != nil:
		c.Mark = c.Sockets.Mark()
	case c.Mark == 0:
		c.Mark = DefaultMark
	}
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Interceptor owns the loaded programs, their maps and their links.
type Interceptor struct {
	cfg       Config
	cgroupID  uint64
	hostNetns uint64 // cookie of the agent's network namespace
	maps      *sharedMaps
	sockets   *AgentSockets
	ownSocks  bool // sockets was made by Attach, and Close closes it
	progs     []*ebpf.Program
	links     []link.Link
	dns       *ringbuf.Reader

	closeOnce sync.Once
	closeErr  error
}

// Attach loads the programs, attaches them to cfg.CgroupRoot and returns
// the Interceptor that controls them. Call Close when done. The target set
// starts empty: fill it with ApplyTargets.
func Attach(cfg Config) (_ *Interceptor, err error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	id, err := CgroupID(cfg.CgroupRoot)
	if err != nil {
		return nil, fmt.Errorf("intercept: cgroup root: %w", err)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("intercept: removing memlock limit: %w", err)
	}
	in := &Interceptor{cfg: cfg, cgroupID: id}
	defer func() {
		if err != nil {
			in.closeAll()
		}
	}()

	in.sockets = cfg.Sockets
	if in.sockets == nil {
		if in.sockets, err = NewAgentSockets(cfg.Mark); err != nil {
			return nil, err
		}
		in.ownSocks = true
	}
	if in.maps, err = newSharedMaps(in.sockets.m); err != nil {
		return nil, err
	}
	if in.hostNetns, err = ownNetnsCookie(); err != nil {
		return nil, fmt.Errorf("intercept: reading the host network namespace cookie: %w", err)
	}
	if err := in.maps.writeConfig(&in.cfg, in.hostNetns); err != nil {
		return nil, err
	}
	if err := in.Heartbeat(); err != nil {
		return nil, err
	}
	if err := in.maps.setPorts(cfg.Ports); err != nil {
		return nil, err
	}
	progs, err := in.loadPrograms()
	if err != nil {
		return nil, err
	}
	if err := in.attachAll(progs); err != nil {
		return nil, err
	}
	if cfg.CaptureDNS {
		if in.dns, err = ringbuf.NewReader(in.maps.dnsEvents); err != nil {
			return nil, fmt.Errorf("intercept: opening ring buffer of map dns_events: %w", err)
		}
	}
	cfg.Logger.Info("ebpf programs attached", "cgroup_root", cfg.CgroupRoot, "cgroup_id", id,
		"fail_mode", cfg.FailMode, "ports", cfg.Ports, "host_proxy4", cfg.HostProxy4, "host_proxy6", cfg.HostProxy6,
		"node_proxy4", cfg.NodeProxy4, "node_proxy6", cfg.NodeProxy6, "capture_dns", cfg.CaptureDNS)
	return in, nil
}

// Run sends heartbeats until ctx is done. In fail-closed mode the programs
// refuse connects to targets once heartbeats stop for HeartbeatTimeout.
func (in *Interceptor) Run(ctx context.Context) error {
	t := time.NewTicker(in.cfg.HeartbeatTimeout / 5)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if err := in.Heartbeat(); err != nil {
				in.cfg.Logger.Error("heartbeat failed", "err", err)
			}
		}
	}
}

// Heartbeat tells the programs that the agent is alive.
func (in *Interceptor) Heartbeat() error {
	return in.maps.writeState(monotonicNow(), false)
}

// Close detaches the programs in fail-open mode. In fail-closed mode it
// marks the agent stopped, so connects to targets are refused at once, and
// leaves the pinned programs in place for the next agent to take over.
func (in *Interceptor) Close() error {
	in.closeOnce.Do(func() {
		if in.cfg.FailMode == FailClosed && in.maps != nil {
			if err := in.maps.writeState(monotonicNow(), true); err != nil {
				in.closeErr = err
			}
			in.cfg.Logger.Warn("agent stopped in fail-closed mode: connects to targets are refused until an agent runs again; `promptrail cleanup` removes the programs",
				"pin_path", in.cfg.PinPath)
		}
		if err := in.closeAll(); err != nil && in.closeErr == nil {
			in.closeErr = err
		}
	})
	return in.closeErr
}

func (in *Interceptor) closeAll() error {
	var errs []error
	if in.dns != nil {
		errs = append(errs, in.dns.Close())
	}
	for _, l := range in.links {
		errs = append(errs, l.Close())
	}
	for _, p := range in.progs {
		errs = append(errs, p.Close())
	}
	if in.maps != nil {
		errs = append(errs, in.maps.Close())
	}
	if in.ownSocks {
		errs = append(errs, in.sockets.Close())
	}
	return errors.Join(errs...)
}

// Sockets returns the registry of the agent's own sockets: Config.Sockets,
// or the one Attach made.
func (in *Interceptor) Sockets() *AgentSockets { return in.sockets }

// CgroupID returns the id of the cgroup v2 directory at path, the number
// that bpf_get_current_cgroup_id reports for processes in it.
func CgroupID(path string) (uint64, error) {
	return cgroupInode(path)
}

// DefaultCgroupRoot returns the mount point of the cgroup v2 hierarchy:
// /sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified on hybrid ones.
func DefaultCgroupRoot() (string, error) {
	return ResolveCgroupRoot("/sys/fs/cgroup")
}

// ResolveCgroupRoot returns dir if it is in a cgroup v2 hierarchy, or
// dir/unified if that is: a host's /sys/fs/cgroup mounted into a pod
// (deploy/daemonset.yaml mounts it at /host/sys/fs/cgroup) is a tmpfs of
// v1 controllers on hybrid hosts, with the v2 hierarchy under unified/,
// and one manifest serves both layouts only if the agent looks there.
func ResolveCgroupRoot(dir string) (string, error) {
	for _, p := range []string{dir, filepath.Join(dir, "unified")} {
		if isCgroup2(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("no cgroup v2 hierarchy at %s or %s/unified: pass --cgroup-root a directory of the host's cgroup v2 mount (on hybrid hosts /sys/fs/cgroup/unified)", dir, dir)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
