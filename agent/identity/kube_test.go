package identity

import (
	"context"
	"maps"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/internal/kerneltest"
)

const testNode = "node-a"

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newTestResolver returns a resolver over kube (nil for none) whose clock
// the test moves, and waits for its informer to sync.
func newTestResolver(t *testing.T, kube kubernetes.Interface) (*Resolver, *fakeClock) {
	t.Helper()
	root := kerneltest.CgroupRoot()
	if root == "" {
		t.Fatal("no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified (set PROMPTRAIL_TEST_CGROUP_ROOT)")
	}
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r, err := New(ctx, Config{CgroupRoot: root, Node: testNode, Kube: kube, PodWait: 10 * time.Second,
		DeletedGrace: time.Minute, now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	waitFor(t, "informer sync", r.Synced)
	return r, clk
}

// waitFor polls cond: informers deliver events asynchronously.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// seedCgroup makes cgroup id resolve to path without a real cgroup.
func (r *Resolver) seedCgroup(id uint64, path string) {
	r.cgroups.cache.add(id, cgroupEntry{path: path, info: ParseCgroupPath(path)})
}

func podPath(uid, containerID string) string {
	return "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" +
		strings.ReplaceAll(uid, "-", "_") + ".slice/cri-containerd-" + containerID + ".scope"
}

func hexID(c byte) string { return strings.Repeat(string(c), 64) }

func controller(kind, name string) []metav1.OwnerReference {
	yes := true
	return []metav1.OwnerReference{{Kind: kind, Name: name, Controller: &yes}}
}

func testPod(name, uid, containerID string, owners []metav1.OwnerReference) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: "shop", UID: types.UID(uid), OwnerReferences: owners,
			Labels: map[string]string{"app.kubernetes.io/name": name, "version": "v1", "pod-template-hash": "abc"},
		},
		Spec: corev1.PodSpec{NodeName: testNode, ServiceAccountName: "sa-" + name},
		Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{
			{Name: "main", ContainerID: "containerd://" + containerID},
		}},
	}
}

func TestResolvePods(t *testing.T) {
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "web-abc", Namespace: "shop",
		OwnerReferences: controller("Deployment", "web")}}
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "backup-1", Namespace: "shop",
		OwnerReferences: controller("CronJob", "backup")}}
	cases := []struct {
		pod   *corev1.Pod
		owner string
	}{
		{testPod("web-abc-x1", "00000000-0000-0000-0000-000000000001", hexID('1'), controller("ReplicaSet", "web-abc")), "Deployment/web"},
		// A Job is the owner as it is: naming its CronJob would need get
		// on jobs, which the agent's role leaves out.
		{testPod("backup-1-x2", "00000000-0000-0000-0000-000000000002", hexID('2'), controller("Job", "backup-1")), "Job/backup-1"},
		{testPod("db-0", "00000000-0000-0000-0000-000000000003", hexID('3'), controller("StatefulSet", "db")), "StatefulSet/db"},
		{testPod("agent-x4", "00000000-0000-0000-0000-000000000004", hexID('4'), controller("DaemonSet", "agent")), "DaemonSet/agent"},
		{testPod("bare", "00000000-0000-0000-0000-000000000005", hexID('5'), nil), ""},
		// The ReplicaSet is not in the API (or RBAC hides it): the owner
		// is the ReplicaSet itself.
		{testPod("lost-x6", "00000000-0000-0000-0000-000000000006", hexID('6'), controller("ReplicaSet", "lost")), "ReplicaSet/lost"},
	}
	kube := fake.NewClientset(rs, job)
	for _, tc := range cases {
		if _, err := kube.CoreV1().Pods("shop").Create(context.Background(), tc.pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	r, _ := newTestResolver(t, kube)
	for i, tc := range cases {
		t.Run(tc.pod.Name, func(t *testing.T) {
			id := uint64(1000 + i)
			cid := strings.TrimPrefix(tc.pod.Status.ContainerStatuses[0].ContainerID, "containerd://")
			r.seedCgroup(id, podPath(string(tc.pod.UID), cid))
			w := r.Resolve(context.Background(), Origin{CgroupID: id, UID: 1000, GID: 1000, Comm: "python3"})
			want := audit.Workload{
				Kind: KindPod, Source: SourceKubernetes, Identity: "k8s:shop/sa-" + tc.pod.Name,
				SPIFFEID:  "spiffe://cluster.local/ns/shop/sa/sa-" + tc.pod.Name,
				Namespace: "shop", Pod: tc.pod.Name, PodUID: string(tc.pod.UID), Container: "main",
				ContainerID: cid, Runtime: RuntimeContainerd, ServiceAccount: "sa-" + tc.pod.Name,
				Labels: map[string]string{"app.kubernetes.io/name": tc.pod.Name, "version": "v1"},
				Owner:  tc.owner, UID: 1000, GID: 1000, User: w.User, Comm: "python3",
				CgroupID: id, CgroupPath: podPath(string(tc.pod.UID), cid),
			}
			assertWorkload(t, w, want)
		})
	}
}

func assertWorkload(t *testing.T, got, want audit.Workload) {
	t.Helper()
	if !maps.Equal(got.Labels, want.Labels) {
		t.Errorf("labels: got %v, want %v", got.Labels, want.Labels)
	}
	got.Labels, want.Labels = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("workload\n got %+v\nwant %+v", got, want)
	}
}

func TestResolvePodLifecycle(t *testing.T) {
	ctx := context.Background()
	uid, cid := "00000000-0000-0000-0000-0000000000aa", hexID('a')
	pod := testPod("web-1", uid, cid, controller("StatefulSet", "web"))
	kube := fake.NewClientset(pod)
	r, clk := newTestResolver(t, kube)
	r.seedCgroup(42, podPath(uid, cid))
	o := Origin{CgroupID: 42, Comm: "curl"}

	if w := r.Resolve(ctx, o); w.Labels["version"] != "v1" || w.Source != SourceKubernetes {
		t.Fatalf("before update: %+v", w)
	}

	// The records must not share the informer's or each other's maps.
	w := r.Resolve(ctx, o)
	w.Labels["version"] = "mutated"
	if w := r.Resolve(ctx, o); w.Labels["version"] != "v1" {
		t.Fatalf("a caller's change to Labels reached the resolver: %v", w.Labels)
	}

	updated := pod.DeepCopy()
	updated.Labels["version"] = "v2"
	if _, err := kube.CoreV1().Pods("shop").Update(ctx, updated, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new labels", func() bool { return r.Resolve(ctx, o).Labels["version"] == "v2" })

	if err := kube.CoreV1().Pods("shop").Delete(ctx, "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the informer to drop the pod", func() bool {
		objs, _ := r.pods.informer.GetIndexer().ByIndex(podUIDIndex, uid)
		return len(objs) == 0
	})
	waitFor(t, "the tombstone", func() bool {
		r.pods.mu.Lock()
		defer r.pods.mu.Unlock()
		_, ok := r.pods.tombstones[uid]
		return ok
	})
	clk.advance(time.Minute - time.Second)
	if w := r.Resolve(ctx, o); w.Source != SourceKubernetes || w.Pod != "web-1" || w.Labels["version"] != "v2" {
		t.Fatalf("deleted pod within the grace period: %+v", w)
	}

	clk.advance(2 * time.Second)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	w = r.Resolve(short, o)
	want := audit.Workload{Kind: KindPod, Source: SourceCgroup, Identity: "k8s-pod:" + uid, PodUID: uid,
		ContainerID: cid, Runtime: RuntimeContainerd, Comm: "curl", User: w.User, CgroupID: 42, CgroupPath: podPath(uid, cid)}
	assertWorkload(t, w, want)
}

func TestResolveWaitsForNewPod(t *testing.T) {
	cases := []struct {
		name string
		// create adds the pod, or its container, while Resolve waits.
		create func(ctx context.Context, kube *fake.Clientset, pod *corev1.Pod) error
		before *corev1.Pod
	}{
		{
			name: "pod",
			create: func(ctx context.Context, kube *fake.Clientset, pod *corev1.Pod) error {
				_, err := kube.CoreV1().Pods("shop").Create(ctx, pod, metav1.CreateOptions{})
				return err
			},
		},
		{
			name:   "container status",
			before: testPod("new", "00000000-0000-0000-0000-0000000000bb", "", nil),
			create: func(ctx context.Context, kube *fake.Clientset, pod *corev1.Pod) error {
				_, err := kube.CoreV1().Pods("shop").UpdateStatus(ctx, pod, metav1.UpdateOptions{})
				return err
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			uid, cid := "00000000-0000-0000-0000-0000000000bb", hexID('b')
			kube := fake.NewClientset()
			if tc.before != nil {
				tc.before.Status.ContainerStatuses = nil
				if _, err := kube.CoreV1().Pods("shop").Create(ctx, tc.before, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			r, _ := newTestResolver(t, kube)
			r.seedCgroup(7, podPath(uid, cid))
			done := make(chan audit.Workload, 1)
			go func() { done <- r.Resolve(ctx, Origin{CgroupID: 7, Comm: "app"}) }()
			waitFor(t, "Resolve to wait", func() bool { return r.pods.waiting.Load() == 1 })
			if err := tc.create(ctx, kube, testPod("new", uid, cid, nil)); err != nil {
				t.Fatal(err)
			}
			w := <-done
			if w.Source != SourceKubernetes || w.Pod != "new" || w.Container != "main" {
				t.Fatalf("got %+v, want pod new, container main from the API", w)
			}
		})
	}
}

func TestResolveStaticPod(t *testing.T) {
	hash, cid := "5f4dcc3b5aa765d61d8327deb882cf99", hexID('c')
	mirror := testPod("etcd-node-a", "00000000-0000-0000-0000-0000000000cc", cid, controller("Node", testNode))
	mirror.Annotations = map[string]string{mirrorAnnotation: hash}
	r, _ := newTestResolver(t, fake.NewClientset(mirror))
	r.seedCgroup(9, podPath(hash, cid))
	w := r.Resolve(context.Background(), Origin{CgroupID: 9})
	if w.Pod != "etcd-node-a" || w.Owner != "Node/"+testNode || w.Container != "main" {
		t.Fatalf("static pod: %+v", w)
	}
}

func TestResolveWithoutAPI(t *testing.T) {
	uid, cid := "00000000-0000-0000-0000-0000000000dd", hexID('d')
	cases := []struct {
		name string
		path string
		want audit.Workload
	}{
		{"systemd driver", podPath(uid, cid), audit.Workload{Kind: KindPod, Source: SourceCgroup,
			Identity: "k8s-pod:" + uid, PodUID: uid, ContainerID: cid, Runtime: RuntimeContainerd}},
		{"cgroupfs driver", "/kubepods/besteffort/pod" + uid + "/" + cid, audit.Workload{Kind: KindPod,
			Source: SourceCgroup, Identity: "k8s-pod:" + uid, PodUID: uid, ContainerID: cid}},
		{"sandbox", "/kubepods/pod" + uid, audit.Workload{Kind: KindPod, Source: SourceCgroup,
			Identity: "k8s-pod:" + uid, PodUID: uid}},
		{"docker", "/system.slice/docker-" + cid + ".scope", audit.Workload{Kind: KindContainer,
			Source: SourceProcess, Identity: "host:" + testNode + "/uid/nobody-or-number/curl",
			ContainerID: cid, Runtime: RuntimeDocker}},
		{"user service", "/user.slice/user-1000.slice/user@1000.service/app.slice/sync.service",
			audit.Workload{Kind: KindSystemd, Source: SourceCgroup, Unit: "sync.service",
				Identity: "host:" + testNode + "/systemd/user@1000.service/sync.service"}},
		{"session", "/user.slice/user-1000.slice/session-4.scope", audit.Workload{Kind: KindSession,
			Source: SourceProcess, Unit: "session-4.scope", Identity: "host:" + testNode + "/uid/nobody-or-number/curl"}},
	}
	r, _ := newTestResolver(t, nil)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := uint64(2000 + i)
			r.seedCgroup(id, tc.path)
			// A pid that does not exist: no /proc facts, identity from comm.
			w := r.Resolve(context.Background(), Origin{CgroupID: id, PID: 1 << 30, UID: 4242, Comm: "curl"})
			want := tc.want
			want.PID, want.UID, want.Comm, want.User, want.CgroupID, want.CgroupPath = 1<<30, 4242, "curl", w.User, id, tc.path
			want.Identity = strings.Replace(want.Identity, "nobody-or-number", w.User, 1)
			assertWorkload(t, w, want)
			if w.User != "4242" {
				t.Errorf("user of an unknown uid: got %q, want the number", w.User)
			}
		})
	}
}
