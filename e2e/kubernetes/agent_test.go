package kubernetes

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/promptrail/promptrail/internal/kubecluster"
)

// agentOverlay adapts deploy/ to the test cluster, and only where the
// cluster differs from a real one: the image built here (never pulled),
// programs attached to the kubelet's cgroup subtree alone (not the
// machine's root, which the other tests and the developer's processes
// share), fail-open so they go with the agent, a pin path and data
// directory of the test's, and bpffs mounted without propagation because
// this host's /sys/fs/bpf is a private mount (Bidirectional and
// HostToContainer both fail there: "not a shared or slave mount"). The
// collector is left out: its PersistentVolumeClaim has no provisioner here.
const agentOverlay = `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../base
images:
  - name: ghcr.io/promptrail/promptrail
    newName: localhost/promptrail-e2e-agent
    newTag: v1
patches:
  - patch: |
      $patch: delete
      apiVersion: apps/v1
      kind: StatefulSet
      metadata: {name: promptrail-collector, namespace: promptrail-system}
  - target: {kind: DaemonSet, name: promptrail-agent}
    patch: |
      - op: remove
        path: /spec/template/spec/containers/0/volumeMounts/2/mountPropagation
      - op: replace
        path: /spec/template/spec/volumes/4/hostPath/path
        value: DATA_DIR
  - target: {kind: ConfigMap, name: promptrail-agent}
    patch: |
      - op: replace
        path: /data/agent.yaml
        value: |
          target: [api.openai.com:443]
          fail-mode: fail-open
          capture-dns: true
          log-format: json
          cgroup-root: /host/sys/fs/cgroup/unified/CGROUP_ROOT
          pin-path: PIN_PATH
          data-dir: /var/lib/promptrail
          collector: http://promptrail-collector.promptrail-system.svc:7070
`

func TestAgentDaemonSetBecomesReady(t *testing.T) {
	// Removed after the cluster's teardown (onCluster's check included):
	// the agent (fail-open) unpins on stop; this removes what a killed one
	// left.
	pins := "/sys/fs/bpf/promptrail-e2e-kube"
	t.Cleanup(func() {
		if err := os.RemoveAll(pins); err != nil {
			t.Errorf("removing the agent's pins: %v", err)
		}
	})
	onCluster(t, "kubectl apply -k deploy/", func(t *testing.T, cfg kubecluster.Config, c *kubecluster.Cluster) {
		applyAgent(t, cfg, c, pins)
	})
}

func applyAgent(t *testing.T, cfg kubecluster.Config, c *kubecluster.Cluster, pins string) {
	if err := c.BuildImage("localhost/promptrail-e2e-agent:v1", "github.com/promptrail/promptrail/cmd/promptrail", "/promptrail"); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	base, overlay := filepath.Join(dir, "base"), filepath.Join(dir, "overlay")
	// A copy of deploy/ with the token files its secretGenerator reads.
	if out, err := exec.Command("cp", "-r", "../../deploy", base).CombinedOutput(); err != nil {
		t.Fatalf("copying deploy/: %v: %s", err, out)
	}
	for name, content := range map[string]string{
		"agent-token":      randomToken(t) + "\n",
		"collector-tokens": "promptrail-e2e " + randomToken(t) + "\n",
	} {
		if err := os.WriteFile(filepath.Join(base, "secrets", name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	k := strings.NewReplacer("DATA_DIR", filepath.Join(c.Dir(), "agent-data"),
		"CGROUP_ROOT", strings.TrimPrefix(cfg.CgroupRoot, "/"), "PIN_PATH", pins).Replace(agentOverlay)
	if err := os.MkdirAll(overlay, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := c.Kubectl(ctx, "apply", "-k", overlay); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := c.Kubectl(ctx, "-n", "promptrail-system", "rollout", "status", "daemonset/promptrail-agent", "--timeout=120s"); err != nil {
		out, _ := c.Kubectl(ctx, "-n", "promptrail-system", "describe", "pods")
		logs, _ := c.Kubectl(ctx, "-n", "promptrail-system", "logs", "daemonset/promptrail-agent", "--tail=40")
		t.Fatalf("%v\n%s\n--- agent log\n%s", err, out, logs)
	}
	t.Logf("agent DaemonSet ready %v after apply", time.Since(start).Round(time.Millisecond))
	ready, err := c.Kubectl(ctx, "-n", "promptrail-system", "get", "daemonset/promptrail-agent", "-o", "jsonpath={.status.numberReady}/{.status.desiredNumberScheduled}")
	if err != nil {
		t.Fatal(err)
	}
	if ready != "1/1" {
		t.Fatalf("agent DaemonSet ready/desired %s, want 1/1", ready)
	}
	// Ready means /healthz answers; the log says the programs are attached
	// where the test put them and identity comes from the cluster's API.
	logs, err := c.Kubectl(ctx, "-n", "promptrail-system", "logs", "daemonset/promptrail-agent")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"msg":"agent running"`,
		`"cgroup_root":"/host/sys/fs/cgroup/unified` + cfg.CgroupRoot + `"`,
		`"msg":"workload identity from the Kubernetes API","node":"` + cfg.NodeName + `"`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("agent log lacks %s:\n%s", want, logs)
		}
	}
}
