package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/internal/kerneltest"
)

// podman runs podman or buildah with the test's own storage, so that the
// machine's images and containers are never touched.
type podman struct{ storage []string }

func newPodman(t *testing.T) podman {
	t.Helper()
	for _, tool := range []string{"podman", "buildah", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			// .ci/run installs them; a test that cannot run must not pass.
			t.Fatalf("%s not found (Debian packages podman, buildah, runc): %v", tool, err)
		}
	}
	// Short: podman refuses a run root longer than 50 characters.
	dir, err := os.MkdirTemp("/tmp", "prp-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return podman{storage: []string{"--root", filepath.Join(dir, "storage"), "--runroot", filepath.Join(dir, "run"), "--storage-driver", "vfs"}}
}

func (p podman) run(t *testing.T, tool string, args ...string) string {
	t.Helper()
	out, err := exec.Command(tool, append(append([]string{}, p.storage...), args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// buildClientImage builds an image from scratch that holds only the static
// test client.
func (p podman) buildClientImage(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "client")
	start := time.Now()
	defer func() { t.Logf("client image built in %v", time.Since(start).Round(time.Millisecond)) }()
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./containerclient")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the container client: %v\n%s", err, out)
	}
	ctr := p.run(t, "buildah", "from", "scratch")
	p.run(t, "buildah", "copy", ctr, bin, "/client")
	p.run(t, "buildah", "config", "--entrypoint", `["/client"]`, ctr)
	const image = "localhost/promptrail-e2e-client:latest"
	p.run(t, "buildah", "commit", "--quiet", "--rm", ctr, image)
	return image
}

// removeRuncCgroups removes the cgroups runc made for a container whose
// cgroup parent is rel/libpod_parent: on a hybrid host, rel and below in
// each v1 hierarchy, and libpod_parent and below in the v2 tree, so that
// the test root itself can go.
func removeRuncCgroups(t *testing.T, mount, rel string) {
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + rel)
	for _, d := range dirs {
		if strings.HasPrefix(d, mount+"/") {
			d = filepath.Join(d, "libpod_parent")
		}
		kerneltest.RemoveCgroupTree(t, d)
	}
}

func TestContainerCallIsRecordedWithItsContainer(t *testing.T) {
	n := newIdentityNode(t)
	p := newPodman(t)
	image := p.buildClientImage(t)

	// The container's cgroup is placed under the test's cgroup root, where
	// the programs are attached; runc names it libpod-<id> as podman does.
	mount := kerneltest.CgroupRoot()
	rel, err := filepath.Rel(mount, n.root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeRuncCgroups(t, mount, rel) })
	cidFile := filepath.Join(t.TempDir(), "cid")
	prompt := "from a podman container " + randomFrom("abcdefghij", 8)
	// Host network: the container's connect() goes through the same cgroup
	// hooks as any process's; --add-host points the API's name at the fake.
	out := p.run(t, "podman", "--cgroup-manager", "cgroupfs", "run", "--runtime", "runc", "--rm", "--network", "host",
		"--cgroup-parent", "/"+rel+"/libpod_parent", "--cidfile", cidFile,
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
		"--add-host", "api.openai.com:"+identityFakeAddr, "-v", n.agentCA+":/ca.crt:ro", "-e", "SSL_CERT_FILE=/ca.crt",
		image, prompt)
	if out != reply {
		t.Fatalf("the containerised client got %q, want %q", out, reply)
	}
	cid, err := os.ReadFile(cidFile)
	if err != nil {
		t.Fatal(err)
	}
	r := n.collector.record(t, "the container's call", func(r *audit.Record) bool {
		return len(r.Request.Messages) == 1 && r.Request.Messages[0].Content == prompt
	})
	w := r.Workload
	if w.Kind != "container" || w.Runtime != "podman" || w.ContainerID != strings.TrimSpace(string(cid)) {
		t.Fatalf("container workload %+v, want kind container, runtime podman, id %s", w, cid)
	}
	if !strings.Contains(w.CgroupPath, "libpod-"+w.ContainerID) || w.Exe != "/client" {
		t.Errorf("container workload cgroup path %q, exe %q", w.CgroupPath, w.Exe)
	}
	t.Logf("container record workload: %+v", w)
}
