package intercept

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/promptrail/promptrail/bpf"
)

// program is one eBPF program and where it attaches.
type program struct {
	name   string // its C function name, also its pin name
	load   func() (*ebpf.CollectionSpec, error)
	attach ebpf.AttachType
}

func (in *Interceptor) programs() []program {
	ps := []program{
		{"connect4", bpf.LoadConnect4, ebpf.AttachCGroupInet4Connect},
		{"connect6", bpf.LoadConnect6, ebpf.AttachCGroupInet6Connect},
		{"sendmsg4", bpf.LoadSendmsg, ebpf.AttachCGroupUDP4Sendmsg},
		{"sendmsg6", bpf.LoadSendmsg, ebpf.AttachCGroupUDP6Sendmsg},
		{"track_origin", bpf.LoadSockops, ebpf.AttachCGroupSockOps},
		{"quic_egress", bpf.LoadQuic, ebpf.AttachCGroupInetEgress},
	}
	if in.cfg.CaptureDNS {
		ps = append(ps, program{"dns_ingress", bpf.LoadDns, ebpf.AttachCGroupInetIngress})
	}
	return ps
}

// loadPrograms loads every object against the shared maps and returns its
// programs by name. in.progs owns them.
func (in *Interceptor) loadPrograms() (map[string]*ebpf.Program, error) {
	out := map[string]*ebpf.Program{}
	for _, p := range in.programs() {
		if out[p.name] != nil {
			continue
		}
		spec, err := p.load()
		if err != nil {
			return nil, fmt.Errorf("intercept: reading object of program %s: %w", p.name, err)
		}
		if err := setFeatures(spec); err != nil {
			return nil, fmt.Errorf("intercept: configuring program %s: %w", p.name, err)
		}
		coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
			MapReplacements: in.maps.replacementsFor(spec),
		})
		if err != nil {
			var ve *ebpf.VerifierError
			if errors.As(err, &ve) {
				return nil, fmt.Errorf("intercept: the kernel's verifier rejected program %s: %w\n%+v", p.name, err, ve)
			}
			return nil, fmt.Errorf("intercept: loading program %s: %w", p.name, err)
		}
		for name := range coll.Programs {
			prog := coll.DetachProgram(name)
			in.progs = append(in.progs, prog)
			out[name] = prog
		}
		coll.Close()
		if out[p.name] == nil {
			return nil, fmt.Errorf("intercept: program %s missing from its object", p.name)
		}
	}
	return out, nil
}

// setFeatures sets the constants by which an object adapts to the kernel.
func setFeatures(spec *ebpf.CollectionSpec) error {
	v, ok := spec.Variables[bpf.DnsVarHaveNetnsCookie]
	if !ok {
		return nil
	}
	err := features.HaveProgramHelper(ebpf.CGroupSKB, asm.FnGetNetnsCookie)
	switch {
	case err == nil:
		return v.Set(uint32(1))
	case errors.Is(err, ebpf.ErrNotSupported):
		return nil // DNS capture tells no namespaces apart; Arrival says so
	default:
		return fmt.Errorf("probing for bpf_get_netns_cookie in cgroup_skb programs: %w", err)
	}
}

// attachAll attaches every program to the cgroup root. A link pinned by an
// earlier fail-closed agent on the same cgroup is taken over with an atomic
// program update, so enforcement never lapses across a restart; other
// leftovers are removed once the new programs are in place.
func (in *Interceptor) attachAll(progs map[string]*ebpf.Program) error {
	failClosed := in.cfg.FailMode == FailClosed
	if failClosed {
		if err := ensureBPFFS(in.cfg.PinPath); err != nil {
			return err
		}
		if err := os.MkdirAll(in.cfg.PinPath, 0o700); err != nil {
			return fmt.Errorf("intercept: creating pin directory (is bpffs mounted?): %w", err)
		}
	}
	var stale []link.Link
	defer func() {
		for _, l := range stale {
			l.Close()
		}
	}()
	took := 0
	for _, p := range in.programs() {
		prog, pin := progs[p.name], filepath.Join(in.cfg.PinPath, p.name)
		var l link.Link
		if old, err := link.LoadPinnedLink(pin, nil); err == nil {
			if failClosed && in.linkOnOurCgroup(old) && old.Update(prog) == nil {
				l = old
				took++
			} else {
				stale = append(stale, old)
			}
		}
		if l == nil {
			var err error
			l, err = link.AttachCgroup(link.CgroupOptions{Path: in.cfg.CgroupRoot, Attach: p.attach, Program: prog})
			if err != nil {
				return fmt.Errorf("intercept: attaching program %s to %s: %w", p.name, in.cfg.CgroupRoot, err)
			}
			in.links = append(in.links, l)
			if failClosed {
				if err := replacePin(l, pin); err != nil {
					return fmt.Errorf("intercept: pinning program %s: %w", p.name, err)
				}
			}
			continue
		}
		in.links = append(in.links, l)
	}
	if took > 0 {
		in.cfg.Logger.Info("took over programs pinned by an earlier agent", "count", took, "pin_path", in.cfg.PinPath)
	}
	for _, l := range stale {
		if err := l.Unpin(); err != nil {
			return fmt.Errorf("intercept: removing a program left by an earlier agent: %w", err)
		}
	}
	if len(stale) > 0 {
		in.cfg.Logger.Info("removed programs left by an earlier agent", "count", len(stale), "pin_path", in.cfg.PinPath)
	}
	if !failClosed {
		// A fail-open agent leaves nothing behind, so neither may its predecessor.
		return Remove(in.cfg.PinPath)
	}
	return nil
}

func (in *Interceptor) linkOnOurCgroup(l link.Link) bool {
	info, err := l.Info()
	if err != nil || info.Cgroup() == nil {
		return false
	}
	return info.Cgroup().CgroupId == in.cgroupID
}

func replacePin(l link.Link, pin string) error {
	if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return l.Pin(pin)
}

// Remove detaches and deletes the programs pinned under pinPath by a
// fail-closed agent, so connections to targets go direct again. It is what
// `promptrail cleanup` runs; a missing directory is not an error.
func Remove(pinPath string) error {
	entries, err := os.ReadDir(pinPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("intercept: reading pin directory: %w", err)
	}
	var errs []error
	for _, e := range entries {
		p := filepath.Join(pinPath, e.Name())
		if l, err := link.LoadPinnedLink(p, nil); err == nil {
			errs = append(errs, l.Unpin(), l.Close())
			continue
		}
		errs = append(errs, os.Remove(p))
	}
	errs = append(errs, os.Remove(pinPath))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("intercept: removing pinned programs in %s: %w", pinPath, err)
	}
	return nil
}

// ownNetnsCookie returns the cookie of the calling process's network
// namespace, the value bpf_get_netns_cookie returns for sockets in it.
func ownNetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	return unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
}

func cgroupInode(path string) (uint64, error) {
	if !isCgroup2(path) {
		return 0, fmt.Errorf("%s is not a directory of a cgroup v2 hierarchy", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return fi.Sys().(*syscall.Stat_t).Ino, nil
}

// ensureBPFFS mounts bpffs at /sys/fs/bpf when the pin path lies there and
// nothing is mounted yet, as minimal hosts leave it; pins elsewhere are the
// operator's to mount.
func ensureBPFFS(pinPath string) error {
	const mnt = "/sys/fs/bpf"
	var st unix.Statfs_t
	if !strings.HasPrefix(filepath.Clean(pinPath)+"/", mnt+"/") || (unix.Statfs(mnt, &st) == nil && st.Type == unix.BPF_FS_MAGIC) {
		return nil
	}
	if err := unix.Mount("bpf", mnt, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("intercept: fail-closed mode pins its programs, but bpffs is not mounted at %s and mounting it failed: %w", mnt, err)
	}
	return nil
}

func isCgroup2(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}
