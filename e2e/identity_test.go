package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/promptrail/promptrail/agent"
	"github.com/promptrail/promptrail/agent/intercept"
	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/collector/store"
	"github.com/promptrail/promptrail/internal/fakeopenai"
	"github.com/promptrail/promptrail/internal/kerneltest"
)

// identityNode runs the agent in this test process, so that its
// Kubernetes client can be client-go's fake clientset holding the pods a
// test makes; everything else (eBPF, proxy, spool, collector) is real.
type identityNode struct {
	*node
	collector *collectorProc
	agentCA   string
}

// identityNodeName is the node whose pods the in-process agent watches.
const identityNodeName = "node-e2e"

const identityFakeAddr = "127.0.1.7"

func newIdentityNode(t *testing.T, objects ...runtime.Object) *identityNode {
	t.Helper()
	n := &identityNode{node: newNode(t)}
	fakeUp := fakeopenai.NewTLSServer(t, fakeopenai.Config{Reply: reply}, identityFakeAddr+":443")
	upCA := filepath.Join(t.TempDir(), "upstream-ca.pem")
	if err := os.WriteFile(upCA, fakeUp.CAPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	n.collector = startCollector(t, n.node.agent)
	ready := make(chan struct{})
	var once sync.Once
	logger := slog.New(&signalHandler{Handler: slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}),
		msg: "agent running", fire: func() { once.Do(func() { close(ready) }) }})
	kube := fake.NewSimpleClientset(objects...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, agent.Config{
			DataDir: n.dataDir, Targets: []string{"api.openai.com:443"}, TargetCIDRs: []string{identityFakeAddr + "/32"},
			CgroupRoot: n.root, ProxyListen: []string{"127.0.0.1:15120"}, FailMode: intercept.FailOpen, PinPath: n.pinPath,
			DNSResolvConf: n.resolvConf, UpstreamCA: upCA, Node: identityNodeName, KubeClient: kube,
			Collector: n.collector.url(), TokenFile: n.collector.agentToken, ShipInterval: 100 * time.Millisecond, Logger: logger,
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("agent stopped before running: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not start")
	}
	n.agentCA = filepath.Join(n.dataDir, "ca.crt")
	return n
}

// curl calls the fake API as api.openai.com from cgroup and returns the
// record of that call.
func (n *identityNode) curl(t *testing.T, cgroup, prompt string) *audit.Record {
	t.Helper()
	body := fmt.Sprintf(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":%q}]}`, prompt)
	cmd := exec.Command("curl", "-sS", "--fail-with-body", "--cacert", n.agentCA, "--resolve", "api.openai.com:443:"+identityFakeAddr,
		"-H", "Authorization: Bearer sk-test-not-a-real-key", "-H", "Content-Type: application/json",
		"-d", body, "https://api.openai.com/v1/chat/completions")
	kerneltest.CommandInCgroup(t, cgroup, cmd)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "chat.completion") {
		t.Fatalf("curl from %s: %v: %s", cgroup, err, out)
	}
	return n.collector.record(t, prompt, func(r *audit.Record) bool {
		return len(r.Request.Messages) == 1 && r.Request.Messages[0].Content == prompt
	})
}

func TestRecordsNameTheWorkload(t *testing.T) {
	const (
		podUID      = "4f2c1b7e-9a3d-4e21-8c55-0d6a3b9e7f10"
		containerID = "9b1f3c2d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
	)
	owner := true
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "checkout-7d9f8", Namespace: "shop", UID: "rs-uid",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "checkout", UID: "dep-uid", Controller: &owner}}}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "checkout-7d9f8-x2x4q", Namespace: "shop", UID: types.UID(podUID),
			Labels:          map[string]string{"app.kubernetes.io/name": "checkout", "pod-template-hash": "7d9f8"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "checkout-7d9f8", UID: "rs-uid", Controller: &owner}}},
		Spec: corev1.PodSpec{NodeName: "node-e2e", ServiceAccountName: "checkout", Containers: []corev1.Container{{Name: "app"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning,
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app", ContainerID: "containerd://" + containerID}}},
	}
	n := newIdentityNode(t, rs, pod)

	t.Run("pod", func(t *testing.T) {
		cg := kerneltest.NewCgroupAt(t, n.root, "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"+
			strings.ReplaceAll(podUID, "-", "_")+".slice/cri-containerd-"+containerID+".scope")
		w := n.curl(t, cg, "from the checkout pod").Workload
		want := audit.Workload{Kind: "pod", Namespace: "shop", Pod: "checkout-7d9f8-x2x4q", PodUID: podUID, Container: "app",
			ContainerID: containerID, Runtime: "containerd", ServiceAccount: "checkout", Owner: "Deployment/checkout",
			Identity: "k8s:shop/checkout", SPIFFEID: "spiffe://cluster.local/ns/shop/sa/checkout", Source: "kubernetes"}
		got := audit.Workload{Kind: w.Kind, Namespace: w.Namespace, Pod: w.Pod, PodUID: w.PodUID, Container: w.Container,
			ContainerID: w.ContainerID, Runtime: w.Runtime, ServiceAccount: w.ServiceAccount, Owner: w.Owner,
			Identity: w.Identity, SPIFFEID: w.SPIFFEID, Source: w.Source}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("pod workload:\n got %+v\nwant %+v", got, want)
		}
		if w.Labels["app.kubernetes.io/name"] != "checkout" || w.PID == 0 || !strings.HasSuffix(w.CgroupPath, ".scope") {
			t.Errorf("pod workload labels %v, pid %d, cgroup path %q", w.Labels, w.PID, w.CgroupPath)
		}
		// The collector's filters use these fields.
		for _, f := range []store.Filter{{Namespace: "shop"}, {Workload: "Deployment/checkout"}, {Workload: "k8s:shop/checkout"}} {
			if recs := n.collector.all(t, f); len(recs) != 1 || recs[0].Workload.Pod != want.Pod {
				t.Errorf("query %+v: %d records", f, len(recs))
			}
		}
	})

	t.Run("systemd service", func(t *testing.T) {
		cg := kerneltest.NewCgroupAt(t, n.root, "system.slice/demo.service")
		w := n.curl(t, cg, "from the demo service").Workload
		if w.Kind != "systemd" || w.Unit != "demo.service" || w.Identity != "host:node-e2e/systemd/demo.service" {
			t.Fatalf("systemd workload %+v", w)
		}
	})

	t.Run("plain process", func(t *testing.T) {
		w := n.curl(t, n.client, "from a plain process").Workload
		curl, err := exec.LookPath("curl")
		if err != nil {
			t.Fatal(err)
		}
		curl, _ = filepath.EvalSymlinks(curl)
		if w.Kind != "process" || w.User != "root" || w.Exe != curl || w.Identity != "host:node-e2e/uid/root"+curl {
			t.Fatalf("process workload %+v (curl is %s)", w, curl)
		}
	})
}

// signalHandler calls fire when a record with message msg is logged.
type signalHandler struct {
	slog.Handler
	msg  string
	fire func()
}

func (h *signalHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.fire()
	}
	return h.Handler.Handle(ctx, r)
}

func (h *signalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &signalHandler{Handler: h.Handler.WithAttrs(as), msg: h.msg, fire: h.fire}
}

func (h *signalHandler) WithGroup(g string) slog.Handler {
	return &signalHandler{Handler: h.Handler.WithGroup(g), msg: h.msg, fire: h.fire}
}

// testWriter sends the in-process agent's log to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
