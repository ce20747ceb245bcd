package identity

import "strings"

// Kinds of workload, as ParseCgroupPath and Resolve report them.
const (
	KindPod       = "pod"
	KindContainer = "container"
	KindSystemd   = "systemd"
	KindSession   = "session"
	KindProcess   = "process"
)

// Container runtimes, named as Kubernetes names them in a container
// status's ID prefix (containerd://, cri-o://, docker://) plus podman.
const (
	RuntimeContainerd = "containerd"
	RuntimeCRIO       = "cri-o"
	RuntimeDocker     = "docker"
	RuntimePodman     = "podman"
)

// CgroupInfo is what a cgroup v2 path says about the workload in it.
// Fields that the path does not give are empty.
type CgroupInfo struct {
	// Kind is pod, container, systemd, session or process.
	Kind string `json:"kind,omitempty"`
	// PodUID is the pod's metadata.uid with dashes (for a static pod, the
	// config hash that its mirror pod carries in kubernetes.io/config.mirror).
	PodUID string `json:"pod_uid,omitempty"`
	// QoS is the pod's QoS class: guaranteed, burstable or besteffort.
	QoS string `json:"qos,omitempty"`
	// Driver is the kubelet's cgroup driver as the path shows it: systemd
	// or cgroupfs.
	Driver string `json:"driver,omitempty"`
	// ContainerID is the 64-hex-digit container ID, if the path reaches
	// into a container (a pod's sandbox or conmon has none).
	ContainerID string `json:"container_id,omitempty"`
	// Runtime is containerd, cri-o, docker or podman; empty where the path
	// does not tell (the kubelet's cgroupfs driver).
	Runtime string `json:"runtime,omitempty"`
	// Unit is the systemd unit: a service, or a session scope.
	Unit string `json:"unit,omitempty"`
	// UserManager is user@<uid>.service when Unit runs under a user's
	// systemd instance rather than the system's.
	UserManager string `json:"user_manager,omitempty"`
	// Slice is the innermost systemd slice above the workload.
	Slice string `json:"slice,omitempty"`
	// SessionUID is the uid from user-<uid>.slice or user@<uid>.service.
	SessionUID string `json:"session_uid,omitempty"`
	// Session is the login session number from session-<n>.scope.
	Session string `json:"session,omitempty"`
}

// ParseCgroupPath reads a cgroup v2 path (as in /proc/<pid>/cgroup, or
// relative to the cgroup mount) and finds the segments that name a pod, a
// container, a systemd unit or a login session, wherever they are: node
// images such as kind, and tests, put their own prefix in front. A pod wins
// over a container (a container runtime nested in a pod is still the pod),
// and a container over a unit (a container's own systemd is inside it).
func ParseCgroupPath(path string) CgroupInfo {
	segs := splitPath(path)
	if info, ok := parsePod(segs); ok {
		return info
	}
	if info, ok := parseContainer(segs); ok {
		return info
	}
	return parseSystemd(segs)
}

func splitPath(path string) []string {
	segs := strings.Split(path, "/")
	out := segs[:0]
	for _, s := range segs {
		if s != "" && s != "." {
			out = append(out, s)
		}
	}
	return out
}

// parsePod finds a kubelet pod cgroup: with the systemd driver a slice
// named [<prefix>-]kubepods[-<qos>]-pod<uid with _>.slice, with the
// cgroupfs driver kubepods[/<qos>]/pod<uid>.
func parsePod(segs []string) (CgroupInfo, bool) {
	for i, s := range segs {
		if uid, qos, ok := systemdPodSlice(s); ok {
			info := CgroupInfo{Kind: KindPod, PodUID: uid, QoS: qos, Driver: "systemd", Slice: s}
			if i+1 < len(segs) {
				info.ContainerID, info.Runtime = criContainer(segs[i+1], true)
			}
			return info, true
		}
		if s != "kubepods" {
			continue
		}
		j, qos := i+1, "guaranteed"
		if j < len(segs) && (segs[j] == "burstable" || segs[j] == "besteffort") {
			qos = segs[j]
			j++
		}
		if j >= len(segs) {
			continue
		}
		uid, ok := strings.CutPrefix(segs[j], "pod")
		if !ok || !validPodUID(uid) {
			continue
		}
		info := CgroupInfo{Kind: KindPod, PodUID: uid, QoS: qos, Driver: "cgroupfs"}
		if j+1 < len(segs) {
			info.ContainerID, info.Runtime = cgroupfsContainer(segs[j+1])
		}
		return info, true
	}
	return CgroupInfo{}, false
}

func systemdPodSlice(s string) (uid, qos string, ok bool) {
	name, ok := strings.CutSuffix(s, ".slice")
	if !ok {
		return "", "", false
	}
	// A UID has no "-pod" in it: with dashes turned into underscores it is
	// hex digits and underscores only.
	i := strings.LastIndex(name, "-pod")
	if i < 0 {
		return "", "", false
	}
	prefix, raw := name[:i], name[i+len("-pod"):]
	switch {
	case isKubepods(prefix, ""):
		qos = "guaranteed"
	case isKubepods(prefix, "-burstable"):
		qos = "burstable"
	case isKubepods(prefix, "-besteffort"):
		qos = "besteffort"
	default:
		return "", "", false
	}
	if strings.Contains(raw, "-") {
		return "", "", false
	}
	uid = strings.ReplaceAll(raw, "_", "-")
	if !validPodUID(uid) {
		return "", "", false
	}
	return uid, qos, true
}

// isKubepods reports whether prefix is kubepods<qos>, possibly after a
// parent slice's name as systemd nests them (kubelet-kubepods-burstable
// on kind nodes with --cgroup-root=/kubelet).
func isKubepods(prefix, qos string) bool {
	base, ok := strings.CutSuffix(prefix, "kubepods"+qos)
	return ok && (base == "" || strings.HasSuffix(base, "-"))
}

// validPodUID accepts a UUID in lowercase (API pods) or 32 lowercase hex
// digits (static pods, whose UID is the kubelet's hash of their manifest).
func validPodUID(uid string) bool {
	switch len(uid) {
	case 32:
		return isLowerHex(uid)
	case 36:
		for i := 0; i < len(uid); i++ {
			c := uid[i]
			if i == 8 || i == 13 || i == 18 || i == 23 {
				if c != '-' {
					return false
				}
			} else if !isLowerHexByte(c) {
				return false
			}
		}
		return true
	}
	return false
}

// criContainer recognises the scope a CRI runtime creates for a container
// under the systemd driver. crio-conmon-<id>.scope is CRI-O's monitor
// process, not the container: it does not match.
func criContainer(s string, scope bool) (id, runtime string) {
	name := s
	if scope {
		var ok bool
		if name, ok = strings.CutSuffix(s, ".scope"); !ok {
			return "", ""
		}
	}
	for _, p := range [...]struct{ prefix, runtime string }{
		{"cri-containerd-", RuntimeContainerd},
		{"crio-", RuntimeCRIO},
		{"docker-", RuntimeDocker},
	} {
		if id, ok := strings.CutPrefix(name, p.prefix); ok && isContainerID(id) {
			return id, p.runtime
		}
	}
	return "", ""
}

// cgroupfsContainer recognises a container under the kubelet's cgroupfs
// driver: containerd and dockershim name it by the bare ID, which does not
// tell the runtime (the API's container status does); CRI-O prefixes it.
func cgroupfsContainer(s string) (id, runtime string) {
	if isContainerID(s) {
		return s, ""
	}
	return criContainer(s, false)
}

// parseContainer finds a container outside Kubernetes. The innermost one
// wins: with Docker in Docker it is the inner container that made the call.
func parseContainer(segs []string) (CgroupInfo, bool) {
	var info CgroupInfo
	found := false
	for i, s := range segs {
		id, runtime := plainContainer(s)
		if id == "" && i > 0 && segs[i-1] == "docker" && isContainerID(s) {
			id, runtime = s, RuntimeDocker
		}
		if id != "" {
			info = CgroupInfo{Kind: KindContainer, ContainerID: id, Runtime: runtime, Slice: lastSlice(segs[:i])}
			found = true
		}
	}
	return info, found
}

func plainContainer(s string) (id, runtime string) {
	name, scope := strings.CutSuffix(s, ".scope")
	// Podman's cgroupfs manager names it libpod-<id> under libpod_parent;
	// with systemd it is a scope. libpod-conmon-<id> is the monitor.
	if id, ok := strings.CutPrefix(name, "libpod-"); ok && isContainerID(id) {
		return id, RuntimePodman
	}
	if !scope {
		return "", ""
	}
	// nerdctl asks for <slice>:nerdctl:<id>, which runc's systemd driver
	// makes into the scope nerdctl-<id>.scope.
	if id, ok := strings.CutPrefix(name, "nerdctl-"); ok && isContainerID(id) {
		return id, RuntimeContainerd
	}
	return criContainer(s, true)
}

// parseSystemd finds a service, a user's service under their user manager,
// a login session scope, or systemd's own init.scope. Services end with the
// first .service below the user manager, so a service's own sub-cgroups
// (delegated subtrees) stay the service.
func parseSystemd(segs []string) CgroupInfo {
	var userManager, sessionUID string
	umAt := 0
	for i, s := range segs {
		if uid, ok := cutAffixes(s, "user-", ".slice"); ok && isDecimal(uid) {
			sessionUID = uid
			continue
		}
		if uid, ok := cutAffixes(s, "user@", ".service"); ok && isDecimal(uid) {
			userManager, sessionUID, umAt = s, uid, i
			continue
		}
		if strings.HasSuffix(s, ".service") && validUnitName(s) {
			return CgroupInfo{Kind: KindSystemd, Unit: s, UserManager: userManager,
				SessionUID: sessionUID, Slice: lastSlice(segs[:i])}
		}
		if n, ok := cutAffixes(s, "session-", ".scope"); ok && userManager == "" && validUnitName(s) && n != "" {
			return CgroupInfo{Kind: KindSession, Unit: s, Session: n,
				SessionUID: sessionUID, Slice: lastSlice(segs[:i])}
		}
		if s == "init.scope" && userManager == "" {
			return CgroupInfo{Kind: KindSystemd, Unit: s, Slice: lastSlice(segs[:i])}
		}
	}
	if userManager != "" {
		return CgroupInfo{Kind: KindSystemd, Unit: userManager, SessionUID: sessionUID,
			Slice: lastSlice(segs[:umAt])}
	}
	return CgroupInfo{Kind: KindProcess, SessionUID: sessionUID}
}

func lastSlice(segs []string) string {
	for i := len(segs) - 1; i >= 0; i-- {
		if strings.HasSuffix(segs[i], ".slice") && validUnitName(segs[i]) {
			return segs[i]
		}
	}
	return ""
}

func cutAffixes(s, prefix, suffix string) (string, bool) {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, suffix)
}

// validUnitName checks the characters systemd allows in unit names
// (anything else it escapes as \xNN), so junk in a path never becomes an
// identity.
func validUnitName(s string) bool {
	if len(s) > 255 {
		return false
	}
	dot := strings.LastIndexByte(s, '.')
	if dot <= 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == ':' || c == '-' || c == '_' || c == '.' || c == '@' || c == '\\':
		default:
			return false
		}
	}
	return true
}

func isContainerID(s string) bool { return len(s) == 64 && isLowerHex(s) }

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isLowerHexByte(s[i]) {
			return false
		}
	}
	return s != ""
}

func isLowerHexByte(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' }

func isDecimal(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != "" && len(s) <= 10
}
