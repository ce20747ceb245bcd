package kubecluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BuildImage builds the Go package pkg (an import path of the module the
// test runs in) as a static binary, puts it at path in an image from
// scratch named ref, and imports that image into the cluster's containerd:
// the only way an image reaches this cluster, which never pulls.
func (c *Cluster) BuildImage(ref, pkg, path string) error {
	return c.buildImage(ref, pkg, path)
}

func (c *Cluster) buildImage(ref, pkg, path string) error {
	work, err := os.MkdirTemp(c.dir, "image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bin := filepath.Join(work, filepath.Base(path))
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, pkg)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w: %s", pkg, err, out)
	}
	// buildah with storage of its own (vfs: no mounts to leave behind), so
	// the machine's images are never touched.
	store := filepath.Join(c.dir, "buildah")
	buildah := func(args ...string) (string, error) {
		argv := append([]string{"--root", filepath.Join(store, "root"), "--runroot", filepath.Join(store, "run"), "--storage-driver", "vfs"}, args...)
		out, err := exec.Command("buildah", argv...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("buildah %s (Debian package buildah): %w: %s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out)), nil
	}
	ctr, err := buildah("from", "scratch")
	if err != nil {
		return err
	}
	archive := filepath.Join(work, "image.tar")
	for _, args := range [][]string{
		{"copy", ctr, bin, path},
		{"config", "--entrypoint", fmt.Sprintf("[%q]", path), ctr},
		{"commit", "--quiet", "--rm", ctr, ref},
		{"push", "--quiet", ref, "docker-archive:" + archive + ":" + ref},
		{"rmi", ref},
	} {
		if _, err := buildah(args...); err != nil {
			return err
		}
	}
	if err := c.ctr("images", "import", archive); err != nil {
		return fmt.Errorf("importing %s: %w", ref, err)
	}
	return nil
}
