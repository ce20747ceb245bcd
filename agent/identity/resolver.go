// Package identity resolves the workload behind an intercepted connection:
// from the kernel's cgroup id and pid to container, pod, namespace,
// service account and owner — or, off Kubernetes, the systemd unit or the
// user and executable.
//
// The cgroup path carries most of it (ParseCgroupPath); the Kubernetes API,
// through a pod informer limited to the node, adds names, labels and the
// service account; /proc adds the executable and command line. Whatever is
// missing, Resolve fills what it can and says in Workload.Source where the
// identity came from.
package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/client-go/kubernetes"

	"github.com/promptrail/promptrail/audit"
)

// Sources of an identity, as in audit.Workload.Source.
const (
	SourceKubernetes = "kubernetes"
	SourceCgroup     = "cgroup"
	SourceProcess    = "process"
)

// Origin is what the kernel knows about the process behind a connection.
type Origin struct {
	CgroupID uint64 // inode number of the cgroup v2 directory
	PID      uint32 // thread group id
	UID, GID uint32
	Comm     string
}

// Config configures a Resolver. The zero value of each optional field
// means its default.
type Config struct {
	// CgroupRoot is the cgroup v2 mount: /sys/fs/cgroup, or
	// /sys/fs/cgroup/unified on hybrid hosts. Required.
	CgroupRoot string
	// ProcRoot is procfs of the host's pid namespace. Default /proc.
	ProcRoot string
	// Node names the node in host identities and selects the pods to
	// watch. Required with Kube (pass spec.nodeName through the downward
	// API: a pod's hostname is not the node's); default the hostname.
	Node string
	// TrustDomain is the SPIFFE trust domain. Default "cluster.local".
	TrustDomain string
	// Labels are the pod labels copied into records. Default
	// app.kubernetes.io/{name,instance,component}, app and version.
	Labels []string
	// Kube is the API client. If nil, pods are identified by the cgroup
	// path only (Source "cgroup"). The agent needs list and watch on pods,
	// and get on replicasets to name Deployments.
	Kube kubernetes.Interface
	// DeletedGrace is how long a deleted pod stays resolvable. Default 5m.
	DeletedGrace time.Duration
	// PodWait is the longest Resolve waits for the informer to learn a pod
	// (or the kubelet to report a container) it sees in a cgroup path;
	// the ctx passed to Resolve may cut it shorter. Default 2s.
	PodWait time.Duration
	// CacheSize bounds the cgroup id cache, the /proc cache and the owner
	// cache, each. Default 4096.
	CacheSize int
	// Logger receives warnings. If nil, nothing is logged.
	Logger *slog.Logger

	// now is the clock; tests replace it.
	now func() time.Time
}

// DefaultLabels are the pod labels recorded when Config.Labels is empty.
func DefaultLabels() []string {
	return []string{
		"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
		"app", "version",
	}
}

func (c *Config) setDefaults() error {
	if c.CgroupRoot == "" {
		return errors.New("identity: Config.CgroupRoot is required: set it to the cgroup v2 mount " +
			"(/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts)")
	}
	var st unix.Statfs_t
	if err := unix.Statfs(c.CgroupRoot, &st); err != nil {
		return fmt.Errorf("identity: Config.CgroupRoot: %w", err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return fmt.Errorf("identity: Config.CgroupRoot %s is not a cgroup v2 mount "+
			"(on hybrid hosts it is /sys/fs/cgroup/unified; mount the host's into the agent)", c.CgroupRoot)
	}
	if c.Kube != nil && c.Node == "" {
		return errors.New("identity: Config.Node is required with Kube: " +
			"set it from the downward API (fieldRef spec.nodeName)")
	}
	if c.Node == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("identity: Config.Node is empty and the hostname is unknown: %w", err)
		}
		c.Node = h
	}
	if c.ProcRoot == "" {
		c.ProcRoot = "/proc"
	}
	if c.TrustDomain == "" {
		c.TrustDomain = "cluster.local"
	}
	if len(c.Labels) == 0 {
		c.Labels = DefaultLabels()
	}
	c.Labels = append([]string(nil), c.Labels...)
	if c.DeletedGrace <= 0 {
		c.DeletedGrace = 5 * time.Minute
	}
	if c.PodWait <= 0 {
		c.PodWait = 2 * time.Second
	}
	if c.CacheSize <= 0 {
		c.CacheSize = 4096
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	return nil
}

// Resolver turns Origins into workloads. Safe for concurrent use.
type Resolver struct {
	cfg     Config
	cgroups *cgroupIndex
	procs   *lru[procKey, procFacts]
	users   *lru[uint32, string]
	pods    *podStore // nil without Kube
	close   sync.Once
}

// New returns a Resolver and, with cfg.Kube, starts watching the node's
// pods until ctx ends or Close. It does not wait for the informer to sync
// (see Synced): until then, pods resolve from the cgroup path only.
func New(ctx context.Context, cfg Config) (*Resolver, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	r := &Resolver{
		cfg:     cfg,
		cgroups: newCgroupIndex(cfg.CgroupRoot, cfg.ProcRoot, ownCgroupMount(cfg.CgroupRoot), cfg.CacheSize, cfg.now),
		procs:   newLRU[procKey, procFacts](cfg.CacheSize),
		users:   newLRU[uint32, string](256),
	}
	if cfg.Kube != nil {
		pods, err := startPodStore(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("identity: %w", err)
		}
		r.pods = pods
	}
	return r, nil
}

// Synced reports whether the pod informer has listed the node's pods
// (always true without Kube).
func (r *Resolver) Synced() bool { return r.pods == nil || r.pods.synced() }

// Close stops the pod informer and waits for it.
func (r *Resolver) Close() {
	r.close.Do(func() {
		if r.pods != nil {
			r.pods.close()
		}
	})
}

// Resolve describes the workload behind o. It never fails: it fills what
// the cgroup, the API and /proc give. ctx bounds the wait for a pod the
// informer has not seen yet.
func (r *Resolver) Resolve(ctx context.Context, o Origin) audit.Workload {
	w := audit.Workload{PID: o.PID, UID: o.UID, GID: o.GID, Comm: o.Comm, CgroupID: o.CgroupID}
	facts := r.procFacts(o)
	w.Exe, w.Cmdline = facts.exe, facts.cmdline
	w.User = r.userName(o.UID)

	info := CgroupInfo{Kind: KindProcess}
	if e, ok := r.cgroups.lookup(o.CgroupID, o.PID); ok {
		w.CgroupPath, info = e.path, e.info
	}
	switch info.Kind {
	case KindPod:
		r.describePod(ctx, &w, info)
	case KindSystemd:
		w.Kind, w.Unit, w.Source = KindSystemd, info.Unit, SourceCgroup
		unit := info.Unit
		if info.UserManager != "" && info.UserManager != unit {
			// A user's unit is not the system's unit of the same name.
			unit = info.UserManager + "/" + unit
		}
		w.Identity = "host:" + r.cfg.Node + "/systemd/" + unit
	default:
		w.Kind, w.Source = info.Kind, SourceProcess
		w.ContainerID, w.Runtime = info.ContainerID, info.Runtime
		if info.Kind == KindSession {
			w.Unit = info.Unit
		}
		w.Identity = r.hostIdentity(w)
	}
	return w
}

func (r *Resolver) describePod(ctx context.Context, w *audit.Workload, info CgroupInfo) {
	w.Kind, w.PodUID, w.ContainerID, w.Runtime = KindPod, info.PodUID, info.ContainerID, info.Runtime
	if r.pods != nil {
		if pod, c, ok := r.pods.find(ctx, info.PodUID, info.ContainerID); ok {
			sa := pod.Spec.ServiceAccountName
			if sa == "" {
				sa = "default" // what admission sets when the spec names none
			}
			w.Source = SourceKubernetes
			w.Namespace, w.Pod, w.ServiceAccount = pod.Namespace, pod.Name, sa
			w.Container = c.name
			if c.runtime != "" {
				w.Runtime = c.runtime
			}
			w.Labels = labels(pod, r.cfg.Labels)
			w.Owner = r.pods.owner(ctx, pod)
			w.Identity = "k8s:" + pod.Namespace + "/" + sa
			w.SPIFFEID = "spiffe://" + r.cfg.TrustDomain + "/ns/" + pod.Namespace + "/sa/" + sa
			return
		}
	}
	w.Source = SourceCgroup
	w.Identity = "k8s-pod:" + info.PodUID
}

// hostIdentity is host:<node>/uid/<user>/<exe>, with comm when the exe
// link was unreadable.
func (r *Resolver) hostIdentity(w audit.Workload) string {
	exe := strings.TrimSuffix(w.Exe, " (deleted)")
	exe = strings.TrimPrefix(exe, "/")
	if exe == "" {
		exe = w.Comm
	}
	return "host:" + r.cfg.Node + "/uid/" + w.User + "/" + exe
}

// ownCgroupMount returns /sys/fs/cgroup when it is a cgroup v2 mount other
// than root: in a container, the mount of the agent's own cgroup
// namespace, whose root directory tells where that namespace sits in the
// host's hierarchy (mounted at root).
func ownCgroupMount(root string) string {
	const own = "/sys/fs/cgroup"
	var st unix.Statfs_t
	if filepath.Clean(root) == own || unix.Statfs(own, &st) != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		return ""
	}
	return own
}
