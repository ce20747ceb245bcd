package kubernetes

import (
	"context"
	"io"
	"net"
	"net/http"
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
// collector's claim is bound to a hostPath PersistentVolume in the
// cluster's directory (collectorVolume): the cluster has no provisioner.
const agentOverlay = `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../base
  - collector-volume.yaml
images:
  - name: ghcr.io/promptrail/promptrail
    newName: localhost/promptrail-e2e-agent
    newTag: v1
patches:
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
        path: /data/pin-path
        value: PIN_PATH
      - op: replace
        path: /data/agent.yaml
        value: |
          target: [api.openai.com:443]
          fail-mode: fail-open
          capture-dns: true
          log-format: json
          cgroup-root: /host/sys/fs/cgroup/unified/CGROUP_ROOT
          data-dir: /var/lib/promptrail
          collector: http://promptrail-collector.promptrail-system.svc:7070
`

// collectorVolume is where the collector's claim binds: no storage class,
// as the claim asks for none and the cluster has no default one.
const collectorVolume = `apiVersion: v1
kind: PersistentVolume
metadata:
  name: promptrail-e2e-collector
spec:
  capacity: {storage: 20Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: STORE_DIR, type: Directory}
`

// collectorUID is the collector's user in deploy/collector-statefulset.yaml:
// fsGroup does not apply to hostPath volumes, so the directory is its.
const collectorUID = 65532

func TestAgentAndCollectorBecomeReady(t *testing.T) {
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
		d := applyAgent(t, cfg, c, pins)
		checkCollector(t, c, d)
	})
}

// deployment is what applyAgent made that later checks need.
type deployment struct {
	readerToken string // a reader's bearer token for the collector's API
	store       string // the host directory behind the collector's volume
}

func applyAgent(t *testing.T, cfg kubecluster.Config, c *kubecluster.Cluster, pins string) deployment {
	if err := c.BuildImage("localhost/promptrail-e2e-agent:v1", "github.com/promptrail/promptrail/cmd/promptrail", "/promptrail"); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	base, overlay := filepath.Join(dir, "base"), filepath.Join(dir, "overlay")
	// A copy of deploy/ with the token files its secretGenerator reads.
	if out, err := exec.Command("cp", "-r", "../../deploy", base).CombinedOutput(); err != nil {
		t.Fatalf("copying deploy/: %v: %s", err, out)
	}
	// The agent's token is the one the collector accepts for this node.
	agentToken, readerToken := bearerToken(t), bearerToken(t)
	for name, content := range map[string]string{
		"agent-token":      agentToken + "\n",
		"collector-tokens": "agent " + cfg.NodeName + " " + agentToken + "\nreader promptrail-e2e-reader " + readerToken + "\n",
	} {
		if err := os.WriteFile(filepath.Join(base, "secrets", name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	store := filepath.Join(c.Dir(), "collector-store")
	if err := os.Mkdir(store, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(store, collectorUID, collectorUID); err != nil {
		t.Fatal(err)
	}
	k := strings.NewReplacer("DATA_DIR", filepath.Join(c.Dir(), "agent-data"),
		"CGROUP_ROOT", strings.TrimPrefix(cfg.CgroupRoot, "/"), "PIN_PATH", pins).Replace(agentOverlay)
	if err := os.MkdirAll(overlay, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"kustomization.yaml":    k,
		"collector-volume.yaml": strings.Replace(collectorVolume, "STORE_DIR", store, 1),
	} {
		if err := os.WriteFile(filepath.Join(overlay, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
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
	return deployment{readerToken: readerToken, store: store}
}

// checkCollector requires the collector StatefulSet Ready on its claim,
// bound to the test's volume, with the store written there and the API
// answering a reader on the pod's address (the bridge reaches it).
func checkCollector(t *testing.T, c *kubecluster.Cluster, d deployment) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kubectl := func(args ...string) string {
		t.Helper()
		out, err := c.Kubectl(ctx, append([]string{"-n", "promptrail-system"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	if _, err := c.Kubectl(ctx, "-n", "promptrail-system", "rollout", "status", "statefulset/promptrail-collector", "--timeout=120s"); err != nil {
		out, _ := c.Kubectl(ctx, "-n", "promptrail-system", "describe", "pod/promptrail-collector-0", "pvc")
		logs, _ := c.Kubectl(ctx, "-n", "promptrail-system", "logs", "pod/promptrail-collector-0", "--tail=40")
		t.Fatalf("%v\n%s\n--- collector log\n%s", err, out, logs)
	}
	if got := kubectl("get", "pvc/data-promptrail-collector-0", "-o", "jsonpath={.status.phase} {.spec.volumeName}"); got != "Bound promptrail-e2e-collector" {
		t.Fatalf("collector claim %q, want Bound to promptrail-e2e-collector", got)
	}
	if files, err := os.ReadDir(d.store); err != nil || len(files) == 0 {
		t.Fatalf("the collector wrote nothing to its volume %s (%d files, %v)", d.store, len(files), err)
	}
	ip := kubectl("get", "pod/promptrail-collector-0", "-o", "jsonpath={.status.podIP}")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(ip, "7070")+"/v1/records", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+d.readerToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("collector API on the pod IP: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /v1/records as a reader: %s: %s", resp.Status, b)
	}
}

// bearerToken is a token the collector accepts: 16 characters at least.
func bearerToken(t *testing.T) string {
	return randomToken(t) + randomToken(t)
}
