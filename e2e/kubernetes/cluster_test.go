// Package kubernetes holds the e2e tests that run on a real single-node
// Kubernetes cluster, brought up from nothing by internal/kubecluster.
package kubernetes

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/promptrail/promptrail/internal/kerneltest"
	"github.com/promptrail/promptrail/internal/kubecluster"
)

// kubeTools returns the directory of the cluster's binaries:
// PROMPTRAIL_KUBE_BIN (make e2e-kubernetes sets it), or what
// scripts/kube-tools.sh builds (cached; cold, about six minutes).
func kubeTools(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("PROMPTRAIL_KUBE_BIN"); d != "" {
		return d
	}
	out, err := exec.Command("../../scripts/kube-tools.sh").Output()
	if err != nil {
		t.Fatalf("building the cluster's tools (scripts/kube-tools.sh): %v", err)
	}
	return strings.TrimSpace(string(out))
}

const helloPod = `apiVersion: v1
kind: Pod
metadata:
  name: hello
  namespace: default
spec:
  restartPolicy: Never
  containers:
  - name: hello
    image: localhost/promptrail-e2e-hello:v1
    imagePullPolicy: Never
    args: ["TOKEN"]
    env:
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
`

// onCluster runs fn on a cluster of its own in a subtest, and then
// requires that the cluster's teardown left the machine as it found it:
// the same host state (kubecluster.Snapshot), and none of its processes.
func onCluster(t *testing.T, name string, fn func(t *testing.T, cfg kubecluster.Config, c *kubecluster.Cluster)) {
	kerneltest.RequirePrivileges(t)
	cfg := kubecluster.DefaultConfig(kubeTools(t))
	before, err := kubecluster.Snapshot(cfg.CgroupRoot)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	var dir string
	t.Run(name, func(t *testing.T) {
		c := kubecluster.Start(t, cfg)
		pids, dir = c.PIDs(), c.Dir()
		fn(t, cfg, c)
	})
	if len(pids) == 0 {
		return // the cluster did not come up; the subtest said why
	}
	after, err := kubecluster.Snapshot(cfg.CgroupRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range kubecluster.Diff(before, after) {
		t.Errorf("left behind by the cluster: %s", d)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
			t.Errorf("component process %d still exists (kill: %v)", pid, err)
		}
	}
	if left := kubecluster.ProcessesMentioning(dir); len(left) > 0 {
		t.Errorf("processes naming the cluster's directory %s still run: %v", dir, left)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the cluster's directory %s remains (stat: %v)", dir, err)
	}
}

func TestClusterRunsAPodAndLeavesNothingBehind(t *testing.T) {
	onCluster(t, "pod runs to completion", func(t *testing.T, _ kubecluster.Config, c *kubecluster.Cluster) {
		if err := c.BuildImage("localhost/promptrail-e2e-hello:v1", "github.com/promptrail/promptrail/e2e/kubernetes/hello", "/hello"); err != nil {
			t.Fatal(err)
		}
		token := randomToken(t)
		manifest := filepath.Join(t.TempDir(), "pod.yaml")
		if err := os.WriteFile(manifest, []byte(strings.Replace(helloPod, "TOKEN", token, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		kubectl := func(args ...string) string {
			t.Helper()
			out, err := c.Kubectl(ctx, args...)
			if err != nil {
				t.Fatal(err)
			}
			return strings.TrimSpace(out)
		}
		kubectl("apply", "-f", manifest)
		start := time.Now()
		kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/hello", "--timeout=90s")
		t.Logf("pod succeeded %v after it was created", time.Since(start).Round(time.Millisecond))
		want := "hello " + token + " pod=hello namespace=default"
		if got := kubectl("logs", "pod/hello"); got != want {
			t.Fatalf("pod log %q, want %q", got, want)
		}
	})
}

func randomToken(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
