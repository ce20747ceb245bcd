package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/promptrail/promptrail/agent/identity"
	"github.com/promptrail/promptrail/agent/intercept"
	"github.com/promptrail/promptrail/audit"
)

// newIdentity starts workload identity resolution: from the cgroup path
// and /proc always, and from a pod informer restricted to this node when
// Kubernetes is on.
func newIdentity(ctx context.Context, cfg Config, node string, log *slog.Logger) (*identity.Resolver, error) {
	kube := cfg.KubeClient
	if kube == nil && cfg.Kube {
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("agent: --kube: no in-cluster Kubernetes configuration (is the agent running in a pod with its service account token mounted?): %w", err)
		}
		rc.UserAgent = "promptrail-agent"
		if kube, err = kubernetes.NewForConfig(rc); err != nil {
			return nil, fmt.Errorf("agent: Kubernetes client: %w", err)
		}
	}
	// Identity needs the hierarchy's mount, whose paths /proc/<pid>/cgroup
	// gives, not the subtree the programs attach to.
	mount := cgroupMount(cfg.CgroupRoot)
	r, err := identity.New(ctx, identity.Config{CgroupRoot: mount, Node: node, TrustDomain: cfg.TrustDomain,
		Labels: cfg.IdentityLabels, Kube: kube, Logger: log.With("component", "identity")})
	if err != nil {
		return nil, fmt.Errorf("agent: workload identity: %w", err)
	}
	if kube != nil {
		log.Info("workload identity from the Kubernetes API", "node", node, "trust_domain", orDefaultString(cfg.TrustDomain, "cluster.local"))
	} else {
		log.Info("workload identity from cgroup paths and /proc (no Kubernetes API: --kube is off)")
	}
	return r, nil
}

// cgroupMount returns the cgroup v2 mount point that holds dir, from
// /proc/self/mountinfo; dir itself if none is found.
func cgroupMount(dir string) string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return dir
	}
	return cgroupMountIn(string(b), dir)
}

// cgroupMountIn is cgroupMount over the content of a mountinfo file.
func cgroupMountIn(mountinfo, dir string) string {
	best := ""
	for _, line := range strings.Split(mountinfo, "\n") {
		// mount-id parent major:minor root mount-point options ... - fstype source opts
		pre, post, ok := strings.Cut(line, " - ")
		f := strings.Fields(pre)
		if !ok || len(f) < 5 || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		mp := f[4]
		if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > len(best) {
			best = mp
		}
	}
	if best == "" {
		return dir
	}
	return best
}

// identify adapts the resolver to the proxy's origin type.
func identify(r *identity.Resolver) func(context.Context, intercept.Origin) audit.Workload {
	return func(ctx context.Context, o intercept.Origin) audit.Workload {
		return r.Resolve(ctx, identity.Origin{CgroupID: o.CgroupID, PID: o.TGID, UID: o.UID, GID: o.GID, Comm: o.Comm})
	}
}

// peerOrigin finds the local process behind an explicit-proxy client.
func peerOrigin(r *identity.Resolver) func(client, server netip.AddrPort) (intercept.Origin, error) {
	return func(client, server netip.AddrPort) (intercept.Origin, error) {
		o, err := r.PeerOrigin(client, server)
		return intercept.Origin{PID: o.PID, TGID: o.PID, UID: o.UID, GID: o.GID, CgroupID: o.CgroupID, Comm: o.Comm}, err
	}
}
