package spool

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"
)

// Why free space is checked before writing: Badger writes its write-ahead
// log (*.mem) and value log (*.vlog) through memory-mapped files that it
// creates sparse, twice the size they grow to. When the filesystem has no
// block left for a page Badger writes into, the kernel answers the write
// with SIGBUS, which kills the agent, and again at every start, as the
// replayed log is flushed. So the spool writes only while the free space,
// less what Badger's mapped files may still claim (their debt), keeps a
// reserve, and treats a full disk as a full spool.

// DefaultReserveBytes is the free space kept on the spool's filesystem
// when Config.ReserveBytes is 0: Begin refuses records below it, as if
// the spool were full.
const DefaultReserveBytes int64 = 64 << 20

// MinReserveBytes is the smallest Config.ReserveBytes: Finish may use half
// the reserve, and what is left must hold the tables Badger writes when it
// flushes its memtables (at Close, or after a crash at Open).
const MinReserveBytes int64 = 2 * flushBytes

// flushBytes is what flushing every memtable may write: one table each.
const flushBytes = numMemtables * memTableSize

// Caps on what Badger writes into one mapped file before it moves to the
// next: a memtable's log is full at memTableSize, a value log file at
// valueLogFileSize; each may overshoot by one transaction.
const (
	walCap  = memTableSize + 2<<20
	vlogCap = valueLogFileSize + 8<<20
)

// room returns the bytes free on dir's filesystem for unprivileged
// writers, less the debt of Badger's mapped files in dir.
func room(dir string) (int64, error) {
	r, _, err := usage(dir)
	return r, err
}

// usage is room, and the disk space the files in dir take.
func usage(dir string) (room, used int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("spool: free space of %s: %w", dir, err)
	}
	free := int64(st.Bavail) * st.Bsize
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, fmt.Errorf("spool: listing %s: %w", dir, err)
	}
	var debt int64
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile: no debt
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			continue
		}
		used += st.Blocks * 512
		var limit int64
		switch filepath.Ext(e.Name()) {
		case ".mem":
			limit = walCap
		case ".vlog":
			limit = vlogCap
		default:
			continue
		}
		if d := min(info.Size(), limit) - st.Blocks*512; d > 0 {
			debt += d
		}
	}
	return free - debt, used, nil
}

// isNoSpace reports whether err says the disk is full.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// spaceError is the error of a write refused for want of disk space.
func (s *Spool) spaceError(what string, avail, need, keep int64) error {
	s.metrics.diskFull.Inc()
	return fmt.Errorf("spool: %s refused: %d bytes free on the spool's disk (%s), %d needed and %d kept in reserve: %w",
		what, max(avail, 0), s.cfg.Dir, need, keep, ErrFull)
}

// checkRoom returns an error wrapping ErrFull unless writing need bytes
// leaves keep bytes free.
func (s *Spool) checkRoom(what string, need, keep int64) error {
	avail, err := room(s.cfg.Dir)
	if err != nil {
		return err
	}
	if avail-need < keep {
		return s.spaceError(what, avail, need, keep)
	}
	return nil
}

// ackSlack is what an Ack or Reject transaction may write: deletion
// markers and a moved record.
const ackSlack = 2 << 20

// maxReclaimRejected bounds the rejected records reclaim carries over in
// memory; with more, it leaves the files as they are.
const maxReclaimRejected = 64 << 20

// headFile keeps the chain head on disk while reclaim empties Badger, so
// that a crash in between does not start a new chain.
const headFile = "chain-head.json"

// reclaimIfEmpty gives the disk space of acknowledged records back when
// the spool holds nothing to send and its disk is short of the reserve.
// Badger returns the space of deleted values only after compactions have
// counted them, and compactions follow writes, which a full spool no
// longer makes: left alone, a spool that filled its disk would stay full
// after the collector took everything. An empty queue has nothing to
// lose, so its files are dropped and the chain head (and any rejected
// records) written anew. The caller holds no lock.
func (s *Spool) reclaimIfEmpty() {
	if s.Stats().Queued != 0 {
		return
	}
	// Only when the disk is short and the spool's files are much of the
	// reason: an emptied spool takes a few MiB, and dropping it again
	// after every batch would give nothing back.
	if r, used, err := usage(s.cfg.Dir); err != nil || r >= 2*s.reserve || used < s.reserve/2 {
		return
	}
	s.closeMu.Lock() // waits for Begins and Finishes in flight
	defer s.closeMu.Unlock()
	if s.closed || s.db == nil {
		return
	}
	s.pendMu.Lock()
	pending := len(s.pending)
	s.pendMu.Unlock()
	if pending != 0 || s.sealed.Load() != s.acked.Load() {
		return // an exchange is under way; the next Ack looks again
	}
	if err := s.reclaim(); err != nil {
		s.log.Error("spool could not give back the disk space of acknowledged records", "dir", s.cfg.Dir, "err", err)
	}
}

// reclaim empties Badger and writes back the chain head and the rejected
// records. The caller holds closeMu for writing; the queue is empty and
// nothing is pending.
func (s *Spool) reclaim() error {
	type kv struct{ k, v []byte }
	var keep []kv
	size := 0
	err := s.db.View(func(txn *badger.Txn) error {
		return eachRejected(txn, func(k, v []byte) error {
			if size += len(v); size > maxReclaimRejected {
				return fmt.Errorf("over %d bytes of rejected records; remove them to free the disk", maxReclaimRejected)
			}
			keep = append(keep, kv{bytes.Clone(k), bytes.Clone(v)})
			return nil
		})
	})
	if err != nil {
		return err
	}
	headVal, err := json.Marshal(s.head)
	if err != nil {
		return err
	}
	hf := filepath.Join(s.cfg.Dir, headFile)
	if err := writeSynced(hf, headVal); err != nil {
		return fmt.Errorf("saving the chain head aside: %w", err)
	}
	before, _ := room(s.cfg.Dir)
	if err := s.db.DropAll(); err != nil {
		return fmt.Errorf("dropping Badger's files: %w", err)
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	if err := wb.Set(headKey, headVal); err != nil {
		return err
	}
	for _, e := range keep {
		if err := wb.Set(e.k, e.v); err != nil {
			return err
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("writing the chain head back (it is kept in %s): %w", hf, err)
	}
	os.Remove(hf)
	s.bytes.Store(int64(size))
	after, _ := room(s.cfg.Dir)
	s.log.Info("spool emptied by the collector; gave its disk space back", "dir", s.cfg.Dir,
		"freed_bytes", after-before, "rejected_kept", len(keep))
	return nil
}

// loadHeadFile reads the chain head reclaim saved, if a crash left it.
func loadHeadFile(dir string) (chainHead, bool, error) {
	var h chainHead
	b, err := os.ReadFile(filepath.Join(dir, headFile))
	if errors.Is(err, os.ErrNotExist) {
		return h, false, nil
	} else if err != nil {
		return h, false, err
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return h, false, fmt.Errorf("%s: %w", headFile, err)
	}
	return h, true, nil
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return errors.Join(f.Sync(), f.Close())
}
