package identity

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/promptrail/promptrail/internal/kerneltest"
)

// nestCgroups creates rel under parent one level at a time, so that each
// level gets its own cleanup.
func nestCgroups(t *testing.T, parent, rel string) string {
	t.Helper()
	dir := parent
	for _, part := range strings.Split(rel, "/") {
		dir = kerneltest.NewCgroupAt(t, dir, part)
	}
	return dir
}

// startIn runs `sleep 30` inside cgroup dir and returns its pid; the
// process is killed when the test ends.
func startIn(t *testing.T, dir string) uint32 {
	t.Helper()
	cmd := kerneltest.CommandInCgroup(t, dir, exec.Command("sleep", "30"))
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting sleep in %s: %v", dir, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return uint32(cmd.Process.Pid)
}

func cgroupID(t *testing.T, dir string) uint64 {
	t.Helper()
	id, err := inode(dir)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestResolveRealCgroups(t *testing.T) {
	kerneltest.RequirePrivileges(t)
	root := kerneltest.CgroupRoot()
	base := kerneltest.NewCgroup(t, "")
	rel := "/" + filepath.Base(base)

	uid, cid := "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9", hexID('e')
	podRel := "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" +
		strings.ReplaceAll(uid, "-", "_") + ".slice/cri-containerd-" + cid + ".scope"
	podDir := nestCgroups(t, base, podRel)
	svcDir := nestCgroups(t, base, "system.slice/demo.service")
	podPID, svcPID := startIn(t, podDir), startIn(t, svcDir)

	kube := fake.NewClientset()
	pod := testPod("web-0", uid, cid, controller("StatefulSet", "web"))
	if _, err := kube.CoreV1().Pods("shop").Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r, _ := newTestResolver(t, kube)
	if r.cfg.CgroupRoot != root {
		t.Fatalf("resolver root %s, want %s", r.cfg.CgroupRoot, root)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sleepExe, err := filepath.EvalSymlinks(mustLookPath(t, "sleep"))
	if err != nil {
		t.Fatal(err)
	}
	self := uint32(os.Getpid())
	selfPath, err := procCgroupPath("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name                          string
		o                             Origin
		kind, identity, path, exeWant string
	}{
		{"pod", Origin{CgroupID: cgroupID(t, podDir), PID: podPID, Comm: "sleep"},
			KindPod, "k8s:shop/sa-web-0", rel + "/" + podRel, sleepExe},
		{"systemd", Origin{CgroupID: cgroupID(t, svcDir), PID: svcPID, Comm: "sleep"},
			KindSystemd, "host:" + testNode + "/systemd/demo.service", rel + "/system.slice/demo.service", sleepExe},
		// The pid is not in the cgroup (reused, or moved): found by a walk.
		{"systemd, wrong pid", Origin{CgroupID: cgroupID(t, svcDir), PID: self, Comm: "sleep"},
			KindSystemd, "host:" + testNode + "/systemd/demo.service", rel + "/system.slice/demo.service", exe},
		{"test process", Origin{CgroupID: cgroupID(t, filepath.Join(root, selfPath)), PID: self, Comm: "identity.test"},
			KindProcess, "host:" + testNode + "/uid/root/" + strings.TrimPrefix(exe, "/"), selfPath, exe},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "systemd, wrong pid" {
				// Start from an empty cache so the walk is what finds it.
				r.cgroups.cache.remove(tc.o.CgroupID)
			}
			w := r.Resolve(context.Background(), tc.o)
			if w.Kind != tc.kind || w.Identity != tc.identity || w.CgroupPath != tc.path || w.Exe != tc.exeWant {
				t.Fatalf("got kind %q identity %q path %q exe %q\nwant kind %q identity %q path %q exe %q",
					w.Kind, w.Identity, w.CgroupPath, w.Exe, tc.kind, tc.identity, tc.path, tc.exeWant)
			}
			if w.User != "root" {
				t.Errorf("user: got %q, want root", w.User)
			}
			if tc.kind == KindPod && (w.Container != "main" || w.Pod != "web-0" || w.Cmdline != "sleep 30") {
				t.Errorf("pod: got container %q pod %q cmdline %q", w.Container, w.Pod, w.Cmdline)
			}
		})
	}
}

func mustLookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadCmdline(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("a", maxCmdline-1) + "é" + "tail"
	cases := []struct{ name, content, want string }{
		{"args", "python3\x00-m\x00app\x00", "python3 -m app"},
		{"empty", "", ""},
		{"cut", strings.Repeat("x", 2000), strings.Repeat("x", maxCmdline) + "…"},
		{"cut inside a character", long, strings.Repeat("a", maxCmdline-1) + "…"},
		{"cut inside an argument", "curl\x00-H\x00Authorization: Bearer " + strings.Repeat("k", 2000) + "\x00https://api.openai.com",
			"curl -H …"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(dir, tc.name)
			if err := os.WriteFile(f, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if got := readCmdline(f); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNewConfigErrors(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no root", Config{}, "CgroupRoot is required"},
		{"not cgroup2", Config{CgroupRoot: t.TempDir()}, "not a cgroup v2 mount"},
		{"kube without node", Config{CgroupRoot: kerneltest.CgroupRoot(), Kube: fake.NewClientset()}, "Node is required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func benchResolver(b *testing.B) (*Resolver, Origin) {
	root := kerneltest.CgroupRoot()
	r, err := New(b.Context(), Config{CgroupRoot: root, Node: testNode})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(r.Close)
	path, err := procCgroupPath("/proc/self/cgroup")
	if err != nil {
		b.Fatal(err)
	}
	id, err := inode(filepath.Join(root, path))
	if err != nil {
		b.Fatal(err)
	}
	return r, Origin{CgroupID: id, PID: uint32(os.Getpid()), Comm: "identity.test"}
}

func BenchmarkResolveHit(b *testing.B) {
	r, o := benchResolver(b)
	ctx := context.Background()
	r.Resolve(ctx, o)
	for b.Loop() {
		r.Resolve(ctx, o)
	}
}

// BenchmarkResolveMiss resolves a cgroup id and pid seen for the first
// time: /proc/<pid>/{cgroup,exe,cmdline} and a stat of the cgroup.
func BenchmarkResolveMiss(b *testing.B) {
	r, o := benchResolver(b)
	ctx := context.Background()
	for b.Loop() {
		r.cgroups.cache.remove(o.CgroupID)
		r.procs.remove(procKey{o.PID, o.Comm})
		r.Resolve(ctx, o)
	}
}

// TestPathsRelativeToTheAgentsCgroupNamespace: an agent in a pod has a
// cgroup namespace of its own, and /proc/<pid>/cgroup shows other
// processes' cgroups relative to it. Plain directories stand in for the
// hierarchy (only their inodes matter) and files for /proc.
func TestPathsRelativeToTheAgentsCgroupNamespace(t *testing.T) {
	root, proc := t.TempDir(), t.TempDir()
	mk := func(rel string) string {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	procFile := func(pid, line string) {
		if err := os.MkdirAll(filepath.Join(proc, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(proc, pid, "cgroup"), []byte(line+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	agentCg := mk("kubepods/burstable/podA/agent")
	mk("kubepods/burstable/podX/ctrY")
	for _, tc := range []struct {
		name    string
		nsMount string
		found   bool
	}{
		{"namespace root known", agentCg, true},
		{"no namespace mount", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCgroupIndex(root, proc, tc.nsMount, 16, time.Now)
			// A first lookup walks the tree; a cgroup made right after it
			// is not in that walk, and the next walk is a second away.
			procFile("10", "0::/")
			if _, ok := c.lookup(cgroupID(t, agentCg), 10); !ok && tc.found {
				t.Fatal("the agent's own cgroup was not found")
			}
			pod := "pod" + strings.ReplaceAll(tc.name, " ", "-")
			fresh := mk("kubepods/besteffort/" + pod + "/ctrW")
			procFile("77", "0::/../../../besteffort/"+pod+"/ctrW")
			e, ok := c.lookup(cgroupID(t, fresh), 77)
			if ok != tc.found || (ok && e.path != "/kubepods/besteffort/"+pod+"/ctrW") {
				t.Fatalf("lookup of a relative path: %+v %v, want found=%v", e, ok, tc.found)
			}
			// A path that climbs out of the hierarchy is never joined.
			procFile("78", "0::/../../../../../../../etc")
			if e, ok := c.lookup(424242, 78); ok {
				t.Fatalf("a path above the root resolved: %+v", e)
			}
		})
	}
}
