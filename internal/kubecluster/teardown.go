package kubecluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// teardown stops the cluster and removes all it made. Pods go first, while
// the kubelet runs, so that containerd removes their sandboxes' network
// namespaces and veths itself; then every component, the runtime shims,
// what still runs in the cluster's cgroups, and the host changes.
func (c *Cluster) teardown() {
	if c.tb.Failed() {
		c.dumpLogs()
	}
	report := func(what string, err error) {
		if err != nil {
			c.tb.Errorf("cluster teardown: %s: %v", what, err)
		}
	}
	if c.running("kubelet") && c.running("kube-apiserver") {
		c.stop("kube-controller-manager") // no controller recreates what is deleted
		report("deleting pods", c.deletePods())
	}
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.stopProc(c.procs[i])
	}
	if c.dir != "" {
		report("runtime shims", killProcsMentioning(c.dir))
	}
	for _, d := range c.cgroups {
		report("cgroups", removeCgroupTree(d))
	}
	report("mounts", unmountUnder(c.dir))
	report("network namespaces", c.removeNetns())
	report("bridge", c.removeBridge())
	for _, tool := range []string{"iptables", "ip6tables"} {
		if c.before != nil {
			report(tool, removeAddedChains(tool, c.before[tool]))
		}
	}
	for k, v := range c.sysctls {
		b, _ := os.ReadFile("/proc/sys/" + k)
		if strings.TrimSpace(string(b)) != v {
			report("sysctl "+k, os.WriteFile("/proc/sys/"+k, []byte(v), 0))
		}
	}
	c.removeCNICache()
	report("work directory", os.RemoveAll(c.dir))
}

func (c *Cluster) running(name string) bool {
	for _, p := range c.procs {
		if p.name == name {
			select {
			case <-p.done:
				return false
			default:
				return true
			}
		}
	}
	return false
}

func (c *Cluster) stop(name string) {
	for _, p := range c.procs {
		if p.name == name {
			c.stopProc(p)
		}
	}
}

func (c *Cluster) stopProc(p *proc) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// deletePods deletes every pod and waits until containerd runs no task
// (the sandboxes' pause processes included).
func (c *Cluster) deletePods() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.Kubectl(ctx, "delete", "pods", "--all", "--all-namespaces", "--grace-period=1", "--wait=true"); err != nil {
		return err
	}
	return c.waitFor("containerd's tasks to stop", 30*time.Second, func() error {
		out, err := exec.Command("ctr", "--address", c.containerdSock(), "--namespace", "k8s.io", "tasks", "ls").Output()
		if err != nil {
			return err
		}
		if strings.Contains(string(out), "RUNNING") {
			return fmt.Errorf("tasks still run:\n%s", out)
		}
		return nil
	})
}

// ProcessesMentioning returns the PIDs of the processes (other than this
// one) whose command line names a path below dir.
func ProcessesMentioning(dir string) []int {
	ents, _ := os.ReadDir("/proc")
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), dir+"/") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killProcsMentioning kills, by PID, the processes whose command line names
// dir: containerd's shims, which leave containerd's process group and
// outlive it, carry the cluster's socket path.
func killProcsMentioning(dir string) error {
	pids := ProcessesMentioning(dir)
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for syscall.Kill(pid, 0) == nil {
			if time.Now().After(deadline) {
				return fmt.Errorf("process %d still runs after SIGKILL", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// removeCgroupTree kills what runs below dir and removes the groups, deepest
// first.
func removeCgroupTree(dir string) error {
	var all []string
	filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err == nil && e.IsDir() {
			all = append(all, p)
		}
		return nil
	})
	var errs []error
	for i := len(all) - 1; i >= 0; i-- {
		d := all[i]
		deadline := time.Now().Add(5 * time.Second)
		for {
			b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, _ := strconv.Atoi(f); pid > 0 {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			err := os.Remove(d)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("%s: %w", d, err))
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

// removeNetns removes the pod network namespaces that containerd made and
// did not remove: their names are in the sandboxes' state under dir.
func (c *Cluster) removeNetns() error {
	cur, _ := filepath.Glob("/run/netns/cni-*")
	var errs []error
	for _, ns := range cur {
		// containerd 1.6 makes the pod namespaces in /run/netns; only those
		// that its state under our directory names are ours.
		if !mentions(filepath.Join(c.dir, "containerd"), filepath.Base(ns)) {
			continue
		}
		syscall.Unmount(ns, syscall.MNT_DETACH)
		if err := os.Remove(ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// mentions reports whether any file under dir (its first 1 MB) names s.
func mentions(dir, s string) bool {
	found := false
	filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if found || err != nil || !e.Type().IsRegular() {
			return nil
		}
		if fi, err := e.Info(); err != nil || fi.Size() > 1<<20 {
			return nil
		}
		b, _ := os.ReadFile(p)
		found = strings.Contains(string(b), s)
		return nil
	})
	return found
}

func (c *Cluster) removeBridge() error {
	if !c.bridgeMade || exec.Command("ip", "link", "show", c.cfg.Bridge).Run() != nil {
		return nil
	}
	ports, _ := lines("ip", "-o", "link", "show", "master", c.cfg.Bridge)
	for _, p := range ports {
		if f := strings.Fields(p); len(f) > 1 {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			run("ip", "link", "del", name)
		}
	}
	// The service route goes with the bridge it points at.
	return run("ip", "link", "del", c.cfg.Bridge)
}

// removeCNICache removes what the CNI library cached under /var/lib/cni for
// the cluster's network, and the directories it created for that.
func (c *Cluster) removeCNICache() {
	var now []string
	filepath.WalkDir("/var/lib/cni", func(p string, _ os.DirEntry, err error) error {
		if err == nil && !slices.Contains(c.cniBefore, p) {
			now = append(now, p)
		}
		return nil
	})
	sort.Slice(now, func(i, j int) bool { return len(now[i]) > len(now[j]) })
	for _, p := range now {
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			os.Remove(p) // only when empty: another user's files stay
		} else if strings.Contains(filepath.Base(p), "promptrail-e2e") {
			os.Remove(p)
		}
	}
}
