package identity

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// rescanEvery bounds how often a cgroup id that neither the cache nor
	// /proc explains makes the whole hierarchy be walked again.
	rescanEvery = time.Second
	// maxScanDirs stops a walk of a pathological hierarchy.
	maxScanDirs = 200_000
)

// cgroupEntry is what one cgroup id resolved to. Cgroup v2 ids are never
// reused while the machine runs (a 64-bit counter), so entries never go
// stale: a cgroup that is gone keeps the path it had.
type cgroupEntry struct {
	path string // relative to the cgroup root, with a leading "/"
	info CgroupInfo
}

// cgroupIndex maps cgroup ids to paths: through /proc/<pid>/cgroup when the
// pid is still in that cgroup, otherwise by walking the hierarchy.
type cgroupIndex struct {
	root, proc string
	now        func() time.Time
	cache      *lru[uint64, cgroupEntry]

	// nsRoot finds, once, where the agent's own cgroup namespace is rooted
	// in the hierarchy: an agent in a pod usually has a cgroup namespace of
	// its own, and /proc/<pid>/cgroup then shows other processes' paths
	// relative to it ("/../../kubepods-…/cri-containerd-….scope").
	nsMount  string // a cgroup2 mount of the agent's own namespace ("" if none)
	nsMu     sync.Mutex
	nsPrefix string // the namespace root's path under root; "" until found

	scanMu   sync.Mutex
	lastScan time.Time
	scanned  map[uint64]string // inode → path, from the last walk
}

func newCgroupIndex(root, proc, nsMount string, size int, now func() time.Time) *cgroupIndex {
	return &cgroupIndex{root: root, proc: proc, nsMount: nsMount, now: now, cache: newLRU[uint64, cgroupEntry](size)}
}

// rebase turns a path relative to the agent's cgroup namespace into one
// relative to root; ok is false when it cannot (the namespace root is not
// under root, or could not be found).
func (c *cgroupIndex) rebase(path string) (string, bool) {
	if !strings.HasPrefix(path, "/..") {
		return path, true
	}
	c.nsMu.Lock()
	if c.nsPrefix == "" {
		// Until found: the walk that finds it is rate-limited like any.
		c.nsPrefix = c.findNamespaceRoot()
	}
	prefix := c.nsPrefix
	c.nsMu.Unlock()
	if prefix == "" {
		return "", false
	}
	p := filepath.Clean(prefix + "/" + path)
	return p, p != "/.." && !strings.HasPrefix(p, "/../")
}

// findNamespaceRoot returns the path under root of the directory that
// nsMount shows as its root: the same directory, so the same inode.
func (c *cgroupIndex) findNamespaceRoot() string {
	if c.nsMount == "" {
		return ""
	}
	ino, err := inode(c.nsMount)
	if err != nil {
		return ""
	}
	if p, ok := c.fromScan(ino); ok {
		return p
	}
	return ""
}

// lookup returns the cgroup with the given id, using pid's cgroup as the
// first guess; ok is false when the cgroup cannot be found (gone before
// anyone looked, or outside the root).
func (c *cgroupIndex) lookup(id uint64, pid uint32) (cgroupEntry, bool) {
	if e, ok := c.cache.get(id); ok {
		return e, true
	}
	path, ok := "", false
	if pid != 0 {
		path, ok = c.fromProc(id, pid)
	}
	if !ok && id != 0 {
		path, ok = c.fromScan(id)
	}
	if !ok {
		return cgroupEntry{}, false
	}
	e := cgroupEntry{path: path, info: ParseCgroupPath(path)}
	c.cache.add(id, e)
	return e, true
}

// fromProc checks that pid is (still) in cgroup id: the pid may have moved
// or been reused since the kernel reported it.
func (c *cgroupIndex) fromProc(id uint64, pid uint32) (path string, ok bool) {
	path, err := procCgroupPath(filepath.Join(c.proc, strconv.FormatUint(uint64(pid), 10), "cgroup"))
	if err != nil {
		return "", false
	}
	if path, ok = c.rebase(path); !ok {
		return "", false
	}
	ino, err := inode(filepath.Join(c.root, path))
	if err != nil || ino != id {
		return "", false
	}
	return path, true
}

// procCgroupPath returns the cgroup v2 path from a /proc/<pid>/cgroup file:
// the line "0::<path>". The path is relative to the reader's cgroup
// namespace (see cgroupIndex.rebase).
func procCgroupPath(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("0::")); ok {
			return string(rest), nil
		}
	}
	return "", fmt.Errorf("%s has no cgroup v2 line (0::/path): is the host on cgroup v1 only?", file)
}

func inode(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// fromScan walks the hierarchy for the directory whose inode is id. One
// walk records every directory, so a burst of misses costs one walk; and
// an id no walk finds costs at most one walk per rescanEvery.
func (c *cgroupIndex) fromScan(id uint64) (string, bool) {
	c.scanMu.Lock()
	defer c.scanMu.Unlock()
	if p, ok := c.scanned[id]; ok {
		return p, true
	}
	now := c.now()
	if !c.lastScan.IsZero() && now.Sub(c.lastScan) < rescanEvery {
		return "", false
	}
	c.lastScan = now
	c.scanned = c.walk()
	p, ok := c.scanned[id]
	return p, ok
}

func (c *cgroupIndex) walk() map[uint64]string {
	found := make(map[uint64]string, len(c.scanned))
	errStop := errors.New("too many cgroups")
	// Errors on single directories (removed while walking) are skipped:
	// the walk is a best effort and the next miss walks again.
	_ = filepath.WalkDir(c.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if len(found) >= maxScanDirs {
			return errStop
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		rel, err := filepath.Rel(c.root, p)
		if err != nil {
			return nil
		}
		found[st.Ino] = filepath.Clean("/" + rel)
		return nil
	})
	return found
}
