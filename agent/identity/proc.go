package identity

import (
	"bytes"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"
	"unicode/utf8"
)

const (
	// procTTL is how long facts read from /proc/<pid> are trusted. A pid
	// reused within it by a program with another comm is caught by the
	// cache key; one with the same comm is not, which is the price of not
	// reading /proc on every connection.
	procTTL = 10 * time.Second
	// maxCmdline bounds the command line kept in a record.
	maxCmdline = 1024
)

type procKey struct {
	pid  uint32
	comm string
}

type procFacts struct {
	exe, cmdline string
	read         time.Time
}

// procFacts returns exe and command line of pid, from the cache if read
// less than procTTL ago.
func (r *Resolver) procFacts(o Origin) procFacts {
	if o.PID == 0 {
		return procFacts{}
	}
	k := procKey{o.PID, o.Comm}
	now := r.cfg.now()
	if f, ok := r.procs.get(k); ok && now.Sub(f.read) < procTTL {
		return f
	}
	dir := filepath.Join(r.cfg.ProcRoot, strconv.FormatUint(uint64(o.PID), 10))
	f := procFacts{read: now}
	// Reading another user's exe link needs CAP_SYS_PTRACE; without it
	// the record falls back to comm.
	f.exe, _ = os.Readlink(filepath.Join(dir, "exe"))
	f.cmdline = readCmdline(filepath.Join(dir, "cmdline"))
	r.procs.add(k, f)
	return f
}

// readCmdline reads at most maxCmdline bytes of a NUL-separated command
// line and joins the arguments with spaces; a cut one ends in "…" after
// the last whole argument.
func readCmdline(file string) string {
	fh, err := os.Open(file)
	if err != nil {
		return ""
	}
	defer fh.Close()
	buf := make([]byte, maxCmdline+1)
	n, _ := io.ReadFull(fh, buf)
	buf = buf[:n]
	cut, dropped := n > maxCmdline, false
	if cut {
		buf = buf[:maxCmdline]
		// Drop the argument that the cut falls into: a part of a secret
		// passed as an argument is no longer a match for the masking
		// rules, so it must not be kept. The first argument (the program)
		// is kept, cut, when it alone is too long.
		if i := bytes.LastIndexByte(buf, 0); i > 0 {
			buf, dropped = buf[:i+1], true
		}
		// Do not leave half a character before the ellipsis.
		for i := 0; i < utf8.UTFMax-1 && len(buf) > 0; i++ {
			if r, size := utf8.DecodeLastRune(buf); r != utf8.RuneError || size != 1 {
				break
			}
			buf = buf[:len(buf)-1]
		}
	}
	buf = bytes.TrimRight(buf, "\x00")
	s := string(bytes.ReplaceAll(buf, []byte{0}, []byte{' '}))
	switch {
	case dropped:
		s += " …"
	case cut:
		s += "…"
	}
	return s
}

// userName returns the login name of uid in the agent's user database, or
// the number when it has none (containers bring their own /etc/passwd).
func (r *Resolver) userName(uid uint32) string {
	if name, ok := r.users.get(uid); ok {
		return name
	}
	id := strconv.FormatUint(uint64(uid), 10)
	name := id
	if u, err := user.LookupId(id); err == nil && u.Username != "" {
		name = u.Username
	}
	r.users.add(uid, name)
	return name
}
