package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/promptrail/promptrail/internal/kerneltest"
)

// TestMissingPrivilegesFailUnderE2E runs a kernel test of this binary as
// an unprivileged user: with PROMPTRAIL_E2E=1 it must fail, never skip.
func TestMissingPrivilegesFailUnderE2E(t *testing.T) {
	kerneltest.RequirePrivileges(t) // to switch users we need root ourselves
	dir, err := os.MkdirTemp("", "promptrail-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "e2e.test")
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		e2e      string
		wantFail bool
		wantText string
	}{
		{"1", true, "PROMPTRAIL_E2E=1 but not running as root"},
		{"", false, "SKIP"},
	} {
		cmd := exec.Command(exe, "-test.run", "^TestHostProcessIsInterceptedWithItsOrigin$", "-test.v")
		cmd.Dir = dir
		cmd.Env = append(filteredEnv(), "PROMPTRAIL_E2E="+tt.e2e, "HOME="+dir)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if failed := err != nil; failed != tt.wantFail || !strings.Contains(string(out), tt.wantText) {
			t.Errorf("PROMPTRAIL_E2E=%q as nobody: err %v, want failure %v and %q in:\n%s", tt.e2e, err, tt.wantFail, tt.wantText, out)
		}
	}
}

func filteredEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PROMPTRAIL_E2E=") {
			env = append(env, kv)
		}
	}
	return env
}
