package kerneltest

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// Tmpfs mounts a tmpfs of size bytes on a fresh temporary directory and
// returns it; the test's cleanup unmounts it. The unmount is lazy, so a
// process that still holds a file there (an agent that left its spool
// open on a full disk) does not make the cleanup fail. It needs root:
// call RequirePrivileges first.
func Tmpfs(tb testing.TB, size int64) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "promptrail-tmpfs-")
	if err != nil {
		tb.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		os.Remove(dir)
		tb.Fatalf("mounting a tmpfs of %d bytes on %s: %v", size, dir, err)
	}
	tb.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			tb.Errorf("unmounting the tmpfs on %s: %v", dir, err)
		}
		os.Remove(dir)
	})
	return dir
}

// FillDisk writes a file in dir until the filesystem is full and returns
// its path; removing it gives the space back.
func FillDisk(tb testing.TB, dir string) string {
	tb.Helper()
	f, err := os.CreateTemp(dir, "filler-")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			// Full, as wanted (a short write returns the error too).
			return f.Name()
		}
	}
}
