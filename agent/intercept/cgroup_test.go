package intercept_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/promptrail/promptrail/agent/intercept"
	"github.com/promptrail/promptrail/internal/kerneltest"
)

// The DaemonSet mounts the host's /sys/fs/cgroup and configures that one
// path for every node: on a hybrid host (this one's layout, v2 under
// unified/) the agent must find the v2 hierarchy below it.
func TestResolveCgroupRootFindsTheV2Hierarchy(t *testing.T) {
	kerneltest.RequirePrivileges(t) // a cgroup v2 hierarchy among them
	v2 := kerneltest.CgroupRoot()
	tests := []struct {
		name, dir, want string
		errWants        []string
	}{
		{name: "the v2 mount itself", dir: v2, want: v2},
		{name: "no cgroup filesystem", dir: t.TempDir(), errWants: []string{"no cgroup v2 hierarchy", "/unified", "--cgroup-root"}},
	}
	if filepath.Base(v2) == "unified" {
		tests = append(tests, struct {
			name, dir, want string
			errWants        []string
		}{name: "a hybrid host's cgroup mount", dir: filepath.Dir(v2), want: v2})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := intercept.ResolveCgroupRoot(tt.dir)
			if tt.errWants != nil {
				if err == nil {
					t.Fatalf("ResolveCgroupRoot(%s) = %s, want an error", tt.dir, got)
				}
				for _, w := range tt.errWants {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error lacks %q: %v", w, err)
					}
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ResolveCgroupRoot(%s) = %q, %v; want %q", tt.dir, got, err, tt.want)
			}
		})
	}
}
