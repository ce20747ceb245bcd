package identity

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseCgroupPath(t *testing.T) {
	b, err := os.ReadFile("testdata/cgroup_paths.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Name string     `json:"name"`
		Path string     `json:"path"`
		Want CgroupInfo `json:"want"`
	}
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatalf("testdata/cgroup_paths.json: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			got := ParseCgroupPath(tc.Path)
			if got != tc.Want {
				t.Errorf("ParseCgroupPath(%q)\n got %+v\nwant %+v", tc.Path, got, tc.Want)
			}
			checkInvariants(t, tc.Path, got)
		})
	}
}

func FuzzParseCgroupPath(f *testing.F) {
	f.Add("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b2c3d_4e5f_6071_8293_a4b5c6d7e8f9.slice")
	f.Add("/system.slice/docker-3f1a9c0e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a19.scope")
	f.Add("/user.slice/user-1000.slice/session-3.scope")
	f.Fuzz(func(t *testing.T, path string) {
		got := ParseCgroupPath(path)
		checkInvariants(t, path, got)
		// Meaning comes from the segments, not from where they start: a
		// neutral prefix, as a test's or a node image's, changes nothing.
		if prefixed := ParseCgroupPath("/promptrail-test-1/" + path); prefixed != got {
			t.Errorf("prefix changed the result for %q:\n%+v\n%+v", path, got, prefixed)
		}
	})
}

func checkInvariants(t *testing.T, path string, got CgroupInfo) {
	t.Helper()
	switch got.Kind {
	case KindPod:
		if !validPodUID(got.PodUID) || got.QoS == "" || got.Driver == "" {
			t.Errorf("%q: pod without a valid UID, QoS or driver: %+v", path, got)
		}
	case KindContainer:
		if got.ContainerID == "" || got.Runtime == "" {
			t.Errorf("%q: container without ID or runtime: %+v", path, got)
		}
	case KindSystemd, KindSession:
		if got.Unit == "" || !validUnitName(got.Unit) {
			t.Errorf("%q: unit kind with unit %q", path, got.Unit)
		}
	case KindProcess:
		if got.PodUID != "" || got.ContainerID != "" || got.Unit != "" {
			t.Errorf("%q: process with workload fields: %+v", path, got)
		}
	default:
		t.Errorf("%q: unknown kind %q", path, got.Kind)
	}
	if got.ContainerID != "" && !isContainerID(got.ContainerID) {
		t.Errorf("%q: container ID %q is not 64 lowercase hex digits", path, got.ContainerID)
	}
	if got.PodUID != "" && !strings.Contains(path, got.PodUID) &&
		!strings.Contains(path, strings.ReplaceAll(got.PodUID, "-", "_")) {
		t.Errorf("%q: pod UID %q is not from the path", path, got.PodUID)
	}
	for _, s := range []string{got.ContainerID, got.Unit, got.Slice, got.UserManager, got.Session, got.SessionUID} {
		if !strings.Contains(path, s) || !utf8.ValidString(s) {
			t.Errorf("%q: %q is not from the path", path, s)
		}
	}
}
