package kubernetes

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/collector"
	"github.com/promptrail/promptrail/internal/fakeopenai"
	"github.com/promptrail/promptrail/internal/kubecluster"
)

// agentOverlay adapts deploy/ to the test cluster, and only where the
// cluster differs from a real one: the image built here (never pulled),
// programs attached to the kubelet's cgroup subtree alone (not the
// machine's root, which the other tests and the developer's processes
// share), fail-open so they go with the agent (unless a test asks for
// fail-closed), a pin path and data
// directory of the test's, and bpffs mounted without propagation because
// this host's /sys/fs/bpf is a private mount (Bidirectional and
// HostToContainer both fail there: "not a shared or slave mount"). The
// collector's claim is bound to a hostPath PersistentVolume in the
// cluster's directory (collectorVolume): the cluster has no provisioner.
// The cluster has no DNS yet: the agent reaches the collector at a fixed
// ClusterIP, and the node IP (where the fake upstream listens, and what
// the pods' hostAliases resolve api.openai.com to) is a target prefix.
// The agent trusts the fake's CA (upstream-ca, from a ConfigMap).
const agentOverlay = `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../base
  - collector-volume.yaml
configMapGenerator:
  - name: promptrail-e2e-upstream-ca
    namespace: promptrail-system
    files: [upstream-ca.pem]
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
      - op: add
        path: /spec/template/spec/volumes/-
        value: {name: upstream-ca, configMap: {name: promptrail-e2e-upstream-ca}}
      - op: add
        path: /spec/template/spec/containers/0/volumeMounts/-
        value: {name: upstream-ca, mountPath: /etc/promptrail-upstream, readOnly: true}
  - target: {kind: Service, name: promptrail-collector}
    patch: |
      - op: add
        path: /spec/clusterIP
        value: COLLECTOR_IP
  - target: {kind: ConfigMap, name: promptrail-agent}
    patch: |
      - op: replace
        path: /data/pin-path
        value: PIN_PATH
      - op: replace
        path: /data/agent.yaml
        value: |
          target: [api.openai.com:443]
          fail-mode: FAIL_MODE
          capture-dns: true
          log-format: json
          target-cidr: [NODE_IP/32]
          upstream-ca: /etc/promptrail-upstream/upstream-ca.pem
          cgroup-root: /host/sys/fs/cgroup/unified/CGROUP_ROOT
          data-dir: /var/lib/promptrail
          collector: http://COLLECTOR_IP:7070
          ship-interval: 200ms
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

// chatClient is the workload whose calls must be recorded: a Deployment
// of the Go SDK (e2e/kubernetes/chat) under a service account of its own,
// resolving api.openai.com to the node (hostAliases: the cluster has no
// DNS yet) and trusting the node CA from a ConfigMap through
// SSL_CERT_FILE, which replaces Go's system roots.
const chatClient = `apiVersion: v1
kind: ServiceAccount
metadata: {name: chat-client, namespace: default}
automountServiceAccountToken: false
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: chat, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: chat}}
  template:
    metadata: {labels: {app: chat}}
    spec:
      serviceAccountName: chat-client
      hostAliases: [{ip: NODE_IP, hostnames: [api.openai.com]}]
      containers:
      - name: chat
        image: localhost/promptrail-e2e-chat:v1
        imagePullPolicy: Never
        args: [PROMPT]
        env: [{name: SSL_CERT_FILE, value: /etc/promptrail-ca/ca.crt}, {name: CHAT_LOOP, value: "LOOP_MODE"}]
        volumeMounts: [{name: promptrail-ca, mountPath: /etc/promptrail-ca, readOnly: true}]
      volumes: [{name: promptrail-ca, configMap: {name: promptrail-ca}}]
`

const chatReply = "answered by the fake upstream on the node"

func TestSDKCallFromADeploymentIsRecordedWithItsIdentity(t *testing.T) {
	pins := pinDir(t, "/sys/fs/bpf/promptrail-e2e-kube")
	onCluster(t, "Go SDK through the agent", func(t *testing.T, cfg kubecluster.Config, c *kubecluster.Cluster) {
		// A host process of the test on the node's bridge address: the
		// pods' api.openai.com.
		fake := fakeopenai.NewTLSServer(t, fakeopenai.Config{Reply: chatReply}, net.JoinHostPort(cfg.NodeIP, "443"))
		d := applyAgent(t, cfg, c, agentSetup{pins: pins, upstreamCA: fake.CAPEM})
		checkCollector(t, c, d)
		prompt := "from a deployment " + randomToken(t)
		pod := runChat(t, cfg, c, d, prompt, false)
		r := findRecord(t, c, d, prompt)
		w := r.Workload
		for _, f := range []struct{ name, got, want string }{
			{"source", w.Source, "kubernetes"},
			{"namespace", w.Namespace, "default"},
			{"pod", w.Pod, pod},
			{"service account", w.ServiceAccount, "chat-client"},
			{"owner", w.Owner, "Deployment/chat"},
			{"node", r.Node, cfg.NodeName},
			{"answer", answer(r), chatReply},
		} {
			if f.got != f.want {
				t.Errorf("record's %s %q, want %q", f.name, f.got, f.want)
			}
		}
		if len(fake.Requests()) == 0 {
			t.Error("the fake upstream saw no request")
		}
		// The CA the pods trust names the node, not the host name
		// (which differs from the node name here, as on cloud nodes).
		if cn := caName(t, d.caFile); !strings.HasPrefix(cn, "promptrail node CA "+cfg.NodeName+" ") {
			t.Errorf("node CA named %q, want it named after node %s", cn, cfg.NodeName)
		}
	})
}

func caName(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("no PEM in %s", file)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert.Subject.CommonName
}

// uninstallOverlay applies deploy/uninstall-daemonset.yaml (copied next
// to it) with the images of the test cluster.
const uninstallOverlay = `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [uninstall-daemonset.yaml]
images:
  - name: ghcr.io/promptrail/promptrail
    newName: localhost/promptrail-e2e-agent
    newTag: v1
  - name: registry.k8s.io/pause
    newName: localhost/promptrail-e2e-pause
    newTag: v1
`

// The uninstall sequence of deploy/README.md on a fail-closed agent whose
// pin path is not the default: the uninstall DaemonSet must clean up the
// path the agent used (the ConfigMap's pin-path key), and the last step
// must not fail on the agent DaemonSet deleted in the first.
func TestUninstallRemovesFailClosedProgramsAtAChangedPinPath(t *testing.T) {
	pins := pinDir(t, "/sys/fs/bpf/promptrail-e2e-kube-uninstall")
	onCluster(t, "uninstall", func(t *testing.T, cfg kubecluster.Config, c *kubecluster.Cluster) {
		fake := fakeopenai.NewTLSServer(t, fakeopenai.Config{Reply: chatReply}, net.JoinHostPort(cfg.NodeIP, "443"))
		d := applyAgent(t, cfg, c, agentSetup{pins: pins, upstreamCA: fake.CAPEM, failClosed: true})
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		kubectl := kubectlIn(t, ctx, c, "promptrail-system")
		kubectl("delete", "daemonset", "promptrail-agent", "--cascade=foreground", "--timeout=90s")
		if left := pinned(t, pins); len(left) == 0 {
			t.Fatalf("the fail-closed agent left nothing pinned under %s: the test would show nothing", pins)
		}
		dir := t.TempDir()
		if out, err := exec.Command("cp", "../../deploy/uninstall-daemonset.yaml", dir).CombinedOutput(); err != nil {
			t.Fatalf("copying uninstall-daemonset.yaml: %v: %s", err, out)
		}
		if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(uninstallOverlay), 0o644); err != nil {
			t.Fatal(err)
		}
		kubectl("apply", "-k", dir)
		if _, err := c.Kubectl(ctx, "-n", "promptrail-system", "rollout", "status", "daemonset/promptrail-uninstall", "--timeout=90s"); err != nil {
			out, _ := c.Kubectl(ctx, "-n", "promptrail-system", "describe", "pods", "-l", "app.kubernetes.io/name=promptrail-uninstall")
			t.Fatalf("%v\n%s", err, out)
		}
		logs := kubectl("logs", "daemonset/promptrail-uninstall", "-c", "cleanup")
		if want := "removed promptrail programs pinned under " + pins; !strings.Contains(logs, want) {
			t.Errorf("cleanup log lacks %q:\n%s", want, logs)
		}
		if left := pinned(t, pins); len(left) > 0 {
			t.Errorf("still pinned under %s after the uninstall DaemonSet ran: %v", pins, left)
		}
		kubectl("delete", "-k", dir, "--timeout=90s")
		kubectl("delete", "-k", d.overlay, "--ignore-not-found", "--timeout=120s")
	})
}

// pinDir returns dir, a pin path for the agent, removed after the
// cluster's teardown (onCluster's check included): a fail-open agent
// unpins on stop; this removes what a killed or fail-closed one left.
func pinDir(t *testing.T, dir string) string {
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing the agent's pins: %v", err)
		}
	})
	return dir
}

// pinned lists what is pinned under dir (nothing if dir is gone).
func pinned(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() {
			names = append(names, p)
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return names
}

// answer is the first choice's text of the record's response.
func answer(r audit.Record) string {
	if r.Response == nil || len(r.Response.Choices) == 0 {
		return ""
	}
	return r.Response.Choices[0].Content
}

// runChat starts the chat Deployment and returns its pod's name once the
// pod has printed the fake's answer (loop: its first "ok", the chat
// command then sends "<prompt> #<n>" in a loop).
func runChat(t *testing.T, cfg kubecluster.Config, c *kubecluster.Cluster, d deployment, prompt string, loop bool) string {
	if err := c.BuildImage("localhost/promptrail-e2e-chat:v1", "github.com/promptrail/promptrail/e2e/kubernetes/chat", "/chat"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kubectl := kubectlIn(t, ctx, c, "default")
	// The node CA, as the agent wrote it on the host (promptrail ca prints
	// the same file).
	kubectl("create", "configmap", "promptrail-ca", "--from-file=ca.crt="+d.caFile)
	manifest := filepath.Join(t.TempDir(), "chat.yaml")
	loopEnv, want := "0", "answer: "+chatReply
	if loop {
		loopEnv, want = "1", "\nok "
	}
	m := strings.NewReplacer("NODE_IP", cfg.NodeIP, "PROMPT", strconv.Quote(prompt), "LOOP_MODE", loopEnv).Replace(chatClient)
	if err := os.WriteFile(manifest, []byte(m), 0o644); err != nil {
		t.Fatal(err)
	}
	kubectl("apply", "-f", manifest)
	start := time.Now()
	kubectl("rollout", "status", "deployment/chat", "--timeout=90s")
	pod := kubectl("get", "pods", "-l", "app=chat", "-o", "jsonpath={.items[0].metadata.name}")
	var logs string
	for time.Since(start) < 90*time.Second {
		logs, _ = c.Kubectl(ctx, "-n", "default", "logs", "pod/"+pod)
		if strings.Contains(logs, "answer: ") || strings.Contains("\n"+logs, want) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !strings.Contains("\n"+logs, want) {
		agent, _ := c.Kubectl(ctx, "-n", "promptrail-system", "logs", "daemonset/promptrail-agent", "--tail=30")
		t.Fatalf("the SDK in pod %s got no answer of the fake:\n%s\n--- agent log\n%s", pod, logs, agent)
	}
	t.Logf("the SDK in pod %s got the fake's answer %v after apply", pod, time.Since(start).Round(time.Millisecond))
	if strings.Contains(logs, "attempt ") {
		t.Logf("failed attempts before the answer:\n%s", logs)
	}
	return pod
}

// findRecord waits for the collector to hold the record of prompt, read
// through its API as a reader on the pod IP.
func findRecord(t *testing.T, c *kubecluster.Cluster, d deployment, prompt string) audit.Record {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := c.Kubectl(ctx, "-n", "promptrail-system", "get", "pod/promptrail-collector-0", "-o", "jsonpath={.status.podIP}")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + net.JoinHostPort(strings.TrimSpace(out), "7070") + "/v1/records?" + url.Values{"q": {prompt}}.Encode()
	var last string
	for ctx.Err() == nil {
		var page collector.RecordsPage
		status, body := readerGet(t, ctx, u, d.readerToken)
		last = fmt.Sprintf("%d %s", status, body)
		if status == http.StatusOK && json.Unmarshal(body, &page) == nil && len(page.Records) > 0 {
			if len(page.Records) != 1 {
				t.Fatalf("%d records of one call: %s", len(page.Records), body)
			}
			return page.Records[0]
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("no record of the call in the collector after a minute; last answer: %s", last)
	return audit.Record{}
}

func readerGet(t *testing.T, ctx context.Context, u, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil
		}
		t.Fatalf("collector API on the pod IP: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// deployment is what applyAgent made that later checks need.
type deployment struct {
	readerToken string // a reader's bearer token for the collector's API
	store       string // the host directory behind the collector's volume
	caFile      string // the node CA's certificate, in the agent's data directory on the host
	overlay     string // the kustomization applied
}

// collectorIP is the collector Service's ClusterIP, in the harness's
// service range.
const collectorIP = "10.247.128.70"

func failMode(closed bool) string {
	if closed {
		return "fail-closed"
	}
	return "fail-open"
}

// agentSetup is what a test chooses of the agent it applies.
type agentSetup struct {
	pins       string // the pin path, a directory of the host's bpffs
	upstreamCA []byte // PEM the agent trusts upstream
	failClosed bool
}

func applyAgent(t *testing.T, cfg kubecluster.Config, c *kubecluster.Cluster, a agentSetup) deployment {
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
		"CGROUP_ROOT", strings.TrimPrefix(cfg.CgroupRoot, "/"), "PIN_PATH", a.pins, "FAIL_MODE", failMode(a.failClosed),
		"NODE_IP", cfg.NodeIP, "COLLECTOR_IP", collectorIP).Replace(agentOverlay)
	if err := os.MkdirAll(overlay, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"kustomization.yaml":    k,
		"collector-volume.yaml": strings.Replace(collectorVolume, "STORE_DIR", store, 1),
		"upstream-ca.pem":       string(a.upstreamCA),
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
	return deployment{readerToken: readerToken, store: store, caFile: filepath.Join(c.Dir(), "agent-data", "ca.crt"), overlay: overlay}
}

// checkCollector requires the collector StatefulSet Ready on its claim,
// bound to the test's volume, with the store written there and the API
// answering a reader on the pod's address (the bridge reaches it).
func checkCollector(t *testing.T, c *kubecluster.Cluster, d deployment) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kubectl := kubectlIn(t, ctx, c, "promptrail-system")
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
	if status, body := readerGet(t, ctx, "http://"+net.JoinHostPort(ip, "7070")+"/v1/records", d.readerToken); status != http.StatusOK {
		t.Fatalf("GET /v1/records as a reader: %d: %s", status, body)
	}
}

// bearerToken is a token the collector accepts: 16 characters at least.
func bearerToken(t *testing.T) string {
	return randomToken(t) + randomToken(t)
}

// kubectlIn returns a kubectl in namespace ns that fails the test on an
// error and returns the trimmed output.
func kubectlIn(t *testing.T, ctx context.Context, c *kubecluster.Cluster, ns string) func(args ...string) string {
	return func(args ...string) string {
		t.Helper()
		out, err := c.Kubectl(ctx, append([]string{"-n", ns}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
}
