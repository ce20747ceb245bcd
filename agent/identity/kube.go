package identity

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

const (
	podUIDIndex = "uid"
	// mirrorAnnotation holds, on a static pod's mirror, the UID the kubelet
	// gave the static pod itself, which is the one in the cgroup path.
	mirrorAnnotation = "kubernetes.io/config.mirror"
	// ownerTTL and ownerFailTTL bound how long a ReplicaSet's
	// controller is remembered, and how long a failed lookup is not retried.
	ownerTTL     = 10 * time.Minute
	ownerFailTTL = time.Minute
	// unknownTTL is how long Resolve stops waiting for a pod (or a pod's
	// container) that did not show up in time: a workload the API never
	// shows would otherwise make every one of its connections wait.
	unknownTTL = time.Minute
)

// podStore is the node's pods, as a pod informer sees them, plus pods
// deleted less than DeletedGrace ago.
type podStore struct {
	kube     kubernetes.Interface
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
	cancel   context.CancelFunc
	log      *slog.Logger
	now      func() time.Time
	grace    time.Duration
	wait     time.Duration

	mu         sync.Mutex
	changed    chan struct{} // closed and replaced on every add or update
	tombstones map[string]tombstone

	owners  *lru[string, ownerEntry]
	unknown *lru[string, time.Time]
	// waiting counts Resolve calls waiting for a pod or a container.
	waiting atomic.Int32
}

type tombstone struct {
	pod     *corev1.Pod
	expires time.Time
}

type ownerEntry struct {
	owner   string
	expires time.Time
}

func startPodStore(ctx context.Context, cfg Config) (*podStore, error) {
	s := &podStore{
		kube:       cfg.Kube,
		log:        cfg.Logger,
		now:        cfg.now,
		grace:      cfg.DeletedGrace,
		wait:       cfg.PodWait,
		changed:    make(chan struct{}),
		tombstones: make(map[string]tombstone),
		owners:     newLRU[string, ownerEntry](cfg.CacheSize),
		unknown:    newLRU[string, time.Time](cfg.CacheSize),
	}
	node := fields.OneTermEqualSelector("spec.nodeName", cfg.Node).String()
	s.factory = informers.NewSharedInformerFactoryWithOptions(cfg.Kube, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = node }),
		informers.WithTransform(dropManagedFields))
	s.informer = s.factory.Core().V1().Pods().Informer()
	if err := s.informer.AddIndexers(cache.Indexers{podUIDIndex: podUIDs}); err != nil {
		return nil, fmt.Errorf("adding the pod UID index: %w", err)
	}
	_, err := s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.notify() },
		UpdateFunc: func(any, any) { s.notify() },
		DeleteFunc: s.deleted,
	})
	if err != nil {
		return nil, fmt.Errorf("watching pods: %w", err)
	}
	ctx, s.cancel = context.WithCancel(ctx)
	s.factory.StartWithContext(ctx)
	return s, nil
}

func (s *podStore) close() {
	s.cancel()
	s.factory.Shutdown()
}

// dropManagedFields keeps the cache small: a DaemonSet on every node
// holds every pod of the node, and managed fields are often half of one.
func dropManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

func podUIDs(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, nil
	}
	keys := []string{string(pod.UID)}
	if m := pod.Annotations[mirrorAnnotation]; m != "" && m != string(pod.UID) {
		keys = append(keys, m)
	}
	return keys, nil
}

func (s *podStore) notify() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

func (s *podStore) changes() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// deleted keeps the pod resolvable for the grace period: connections, and
// the records of them, outlive pods.
func (s *podStore) deleted(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	keys, _ := podUIDs(pod)
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, t := range s.tombstones {
		if !now.Before(t.expires) {
			delete(s.tombstones, k)
		}
	}
	for _, k := range keys {
		s.tombstones[k] = tombstone{pod: pod, expires: now.Add(s.grace)}
	}
}

func (s *podStore) synced() bool { return s.informer.HasSynced() }

// lookup finds a pod by UID (or a static pod's mirror by its hash) among
// live pods, then among recently deleted ones.
func (s *podStore) lookup(uid string) (*corev1.Pod, bool) {
	objs, err := s.informer.GetIndexer().ByIndex(podUIDIndex, uid)
	if err == nil {
		for _, o := range objs {
			if pod, ok := o.(*corev1.Pod); ok {
				return pod, true
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tombstones[uid]
	if !ok {
		return nil, false
	}
	if !s.now().Before(t.expires) {
		delete(s.tombstones, uid)
		return nil, false
	}
	return t.pod, true
}

// find returns the pod with uid and, if containerID is not empty, the
// status of that container. It waits, bounded by ctx and the configured
// wait, for a pod the informer has not seen yet and for a container the
// kubelet has not reported yet: the first connection of a new container
// often comes before either.
func (s *podStore) find(ctx context.Context, uid, containerID string) (*corev1.Pod, containerMatch, bool) {
	key := uid + "/" + containerID
	pod, c, ok := s.get(uid, containerID)
	if ok && (containerID == "" || c.name != "") {
		return pod, c, true
	}
	if until, gaveUp := s.unknown.get(key); gaveUp && s.now().Before(until) {
		return pod, c, ok
	}
	timer := time.NewTimer(s.wait)
	defer timer.Stop()
	s.waiting.Add(1)
	defer s.waiting.Add(-1)
	for {
		// Take the channel before looking, so that a change between the
		// look and the wait is not missed.
		ch := s.changes()
		pod, c, ok = s.get(uid, containerID)
		if ok && (containerID == "" || c.name != "") {
			return pod, c, true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			s.unknown.add(key, s.now().Add(unknownTTL))
			return pod, c, ok
		case <-timer.C:
			s.unknown.add(key, s.now().Add(unknownTTL))
			return pod, c, ok
		}
	}
}

func (s *podStore) get(uid, containerID string) (*corev1.Pod, containerMatch, bool) {
	pod, ok := s.lookup(uid)
	if !ok {
		return nil, containerMatch{}, false
	}
	if containerID == "" {
		return pod, containerMatch{}, true
	}
	return pod, matchContainer(pod, containerID), true
}

type containerMatch struct{ name, runtime string }

// matchContainer finds the container by ID in the pod's status, including
// the previous instance of a restarted container, whose connections may
// be recorded after the restart.
func matchContainer(pod *corev1.Pod, id string) containerMatch {
	for _, list := range [...][]corev1.ContainerStatus{
		pod.Status.ContainerStatuses,
		pod.Status.InitContainerStatuses,
		pod.Status.EphemeralContainerStatuses,
	} {
		for _, cs := range list {
			if rt, ok := sameContainer(cs.ContainerID, id); ok {
				return containerMatch{name: cs.Name, runtime: rt}
			}
			if t := cs.LastTerminationState.Terminated; t != nil {
				if rt, ok := sameContainer(t.ContainerID, id); ok {
					return containerMatch{name: cs.Name, runtime: rt}
				}
			}
		}
	}
	return containerMatch{}
}

// sameContainer compares a status's <runtime>://<id> with a bare ID.
func sameContainer(statusID, id string) (runtime string, ok bool) {
	rt, cid, found := strings.Cut(statusID, "://")
	if !found || cid != id {
		return "", false
	}
	return rt, true
}

// owner names the pod's controller, following a ReplicaSet to its
// Deployment, the name people know. It needs get on replicasets; without
// it the ReplicaSet itself is the owner. A Job is recorded as the Job:
// following it to a CronJob would need get on jobs, which the agent's
// role does not grant (least privilege: pods and ReplicaSets only).
func (s *podStore) owner(ctx context.Context, pod *corev1.Pod) string {
	ref := metav1.GetControllerOf(pod)
	if ref == nil {
		return ""
	}
	own := ref.Kind + "/" + ref.Name
	if ref.Kind != "ReplicaSet" {
		return own
	}
	key := pod.Namespace + "/" + own
	now := s.now()
	if e, ok := s.owners.get(key); ok && now.Before(e.expires) {
		return e.owner
	}
	parent, err := s.replicaSetOwner(ctx, pod.Namespace, ref.Name)
	if err != nil {
		s.log.Warn("cannot look up the owner of a pod's controller; recording the controller itself",
			"controller", key, "err", err)
		s.owners.add(key, ownerEntry{owner: own, expires: now.Add(ownerFailTTL)})
		return own
	}
	if parent != nil && parent.Kind == "Deployment" {
		own = parent.Kind + "/" + parent.Name
	}
	s.owners.add(key, ownerEntry{owner: own, expires: now.Add(ownerTTL)})
	return own
}

func (s *podStore) replicaSetOwner(ctx context.Context, ns, name string) (*metav1.OwnerReference, error) {
	rs, err := s.kube.AppsV1().ReplicaSets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("getting ReplicaSet %s/%s (does the agent's role grant get on replicasets?): %w", ns, name, err)
	}
	return metav1.GetControllerOf(rs), nil
}

// labels copies the configured labels of the pod: the record must not
// share the informer's map.
func labels(pod *corev1.Pod, keys []string) map[string]string {
	var out map[string]string
	for _, k := range keys {
		if v, ok := pod.Labels[k]; ok {
			if out == nil {
				out = make(map[string]string, len(keys))
			}
			out[k] = v
		}
	}
	return out
}
