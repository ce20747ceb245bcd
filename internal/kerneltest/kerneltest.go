// Package kerneltest gives tests that touch the kernel what they need and
// takes it away again: privileges checks that fail instead of skipping in
// CI, throwaway cgroups and bpffs pin directories, network namespaces that
// look like a pod's, and child processes started inside a cgroup.
package kerneltest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// EnvE2E is the variable that makes missing privileges a test failure.
const EnvE2E = "PROMPTRAIL_E2E"

// RequirePrivileges skips the test when the process cannot load and attach
// eBPF programs, unless PROMPTRAIL_E2E=1, where it fails it: CI must never
// pass by skipping.
func RequirePrivileges(tb testing.TB) {
	tb.Helper()
	reason := ""
	switch {
	case os.Geteuid() != 0:
		reason = "not running as root"
	case CgroupRoot() == "":
		reason = "no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified"
	case !isBPFFS("/sys/fs/bpf"):
		reason = "bpffs is not mounted at /sys/fs/bpf"
	}
	if reason == "" {
		return
	}
	if os.Getenv(EnvE2E) == "1" {
		tb.Fatalf("%s=1 but %s: this test needs root, cgroup v2 and bpffs", EnvE2E, reason)
	}
	tb.Skipf("%s (set %s=1 to make this a failure)", reason, EnvE2E)
}

// CgroupRoot returns the cgroup v2 mount point, or "" if there is none.
// PROMPTRAIL_TEST_CGROUP_ROOT overrides it.
func CgroupRoot() string {
	if p := os.Getenv("PROMPTRAIL_TEST_CGROUP_ROOT"); p != "" {
		return p
	}
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(p, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return p
		}
	}
	return ""
}

func isBPFFS(p string) bool {
	var st unix.Statfs_t
	return unix.Statfs(p, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

// NewCgroup creates a fresh cgroup under parent ("" for the cgroup root)
// and removes it when the test ends, killing what still runs in it.
func NewCgroup(tb testing.TB, parent string) string {
	tb.Helper()
	if parent == "" {
		parent = CgroupRoot()
	}
	dir, err := os.MkdirTemp(parent, "promptrail-test-")
	if err != nil {
		tb.Fatalf("creating cgroup under %s: %v", parent, err)
	}
	tb.Cleanup(func() { removeCgroup(tb, dir) })
	return dir
}

// NewCgroupAt creates the cgroup at the relative path rel (which may have
// several levels, like a kubepods path) under parent.
func NewCgroupAt(tb testing.TB, parent, rel string) string {
	tb.Helper()
	dir := parent
	for _, part := range strings.Split(rel, "/") {
		dir = filepath.Join(dir, part)
		if err := os.Mkdir(dir, 0o755); err != nil {
			tb.Fatalf("creating cgroup %s: %v", dir, err)
		}
		level := dir // each level's own cleanup; they run deepest first
		tb.Cleanup(func() { removeCgroup(tb, level) })
	}
	return dir
}

// RemoveCgroupTree removes the cgroup dir and every cgroup below it,
// deepest first, killing what still runs in them (in any hierarchy, v1
// included: a container runtime on a hybrid host makes groups there).
func RemoveCgroupTree(tb testing.TB, dir string) {
	tb.Helper()
	var all []string
	filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err == nil && e.IsDir() {
			all = append(all, p)
		}
		return nil
	})
	for i := len(all) - 1; i >= 0; i-- {
		removeCgroup(tb, all[i])
	}
}

func removeCgroup(tb testing.TB, dir string) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		killAll(dir)
		err := os.Remove(dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			tb.Errorf("removing cgroup %s: %v", dir, err)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func killAll(dir string) {
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err == nil {
		return
	}
	b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	for _, f := range strings.Fields(string(b)) {
		var pid int
		fmt.Sscan(f, &pid)
		if pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// CommandInCgroup prepares cmd to start directly inside cgroup dir
// (clone3 with CLONE_INTO_CGROUP), so not a single instruction of it runs
// elsewhere. The directory handle is closed when the test ends.
func CommandInCgroup(tb testing.TB, dir string, cmd *exec.Cmd) *exec.Cmd {
	tb.Helper()
	f, err := os.Open(dir)
	if err != nil {
		tb.Fatalf("opening cgroup %s: %v", dir, err)
	}
	tb.Cleanup(func() { f.Close() })
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = int(f.Fd())
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	return cmd
}

// PinDir returns a fresh directory in bpffs and removes whatever is pinned
// in it when the test ends (remove is the package's own unpin function).
func PinDir(tb testing.TB, remove func(string) error) string {
	tb.Helper()
	dir, err := os.MkdirTemp("/sys/fs/bpf", "promptrail-test-")
	if err != nil {
		tb.Fatalf("creating pin directory in bpffs: %v", err)
	}
	tb.Cleanup(func() {
		if err := remove(dir); err != nil {
			tb.Errorf("removing pins: %v", err)
		}
		os.RemoveAll(dir)
	})
	return dir
}

// InCgroup runs fn with the whole test process moved into cgroup dir, and
// moves it back afterwards. Sockets that fn creates belong to dir for their
// lifetime. Tests that use it must not run in parallel.
func InCgroup[T any](tb testing.TB, dir string, fn func() (T, error)) T {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		tb.Fatal(err)
	}
	orig := ""
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			orig = filepath.Join(CgroupRoot(), rest)
		}
	}
	if orig == "" {
		tb.Fatal("no cgroup v2 entry in /proc/self/cgroup")
	}
	pid := []byte(fmt.Sprint(os.Getpid()))
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), pid, 0); err != nil {
		tb.Fatalf("moving the test process into %s: %v", dir, err)
	}
	defer func() {
		if err := os.WriteFile(filepath.Join(orig, "cgroup.procs"), pid, 0); err != nil {
			tb.Errorf("moving the test process back to %s: %v", orig, err)
		}
	}()
	v, err := fn()
	if err != nil {
		tb.Fatalf("in cgroup %s: %v", dir, err)
	}
	return v
}
