package spool

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/internal/kerneltest"
)

// TestFullDiskIsAFullSpool fills a small tmpfs for real: Badger writes
// through sparse memory-mapped files, and without the free-space checks
// the agent died of SIGBUS here, on the write and again at every start.
func TestFullDiskIsAFullSpool(t *testing.T) {
	kerneltest.RequirePrivileges(t)
	ctx := context.Background()
	dir := filepath.Join(kerneltest.Tmpfs(t, 192<<20), "spool")
	s := openSpool(t, Config{Dir: dir, OpenRetry: 20 * time.Millisecond})

	// Exchanges under way while the disk fills.
	inflight, orphan := newRecord(100), newRecord(100)
	for _, r := range []*audit.Record{inflight, orphan} {
		if err := s.Begin(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// Records of 1 MiB until the reserve stops them: refused as a full
	// spool, never a crash.
	var sealed int
	for ; ; sealed++ {
		r := newRecord(1 << 20)
		err := s.Begin(ctx, r)
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatalf("Begin %d: %v, want nil or ErrFull", sealed, err)
		}
		if err := s.Finish(ctx, r); err != nil {
			t.Fatalf("Finish %d: %v", sealed, err)
		}
		if sealed > 200 {
			t.Fatal("192 MiB took more than 200 records of 1 MiB")
		}
	}
	if sealed == 0 {
		t.Fatal("the first record was refused: the reserve leaves no room on a 192 MiB disk")
	}
	// Within the reserve, the exchange already begun can still end.
	if err := s.Finish(ctx, inflight); err != nil {
		t.Errorf("Finish inside the reserve: %v", err)
	}
	// On a disk full to the last block, it cannot; once there is room,
	// its pending copy is sealed, marked incomplete, without a restart.
	filler := kerneltest.FillDisk(t, filepath.Dir(dir))
	if err := s.Finish(ctx, orphan); !errors.Is(err, ErrFull) {
		t.Fatalf("Finish on a full disk: %v, want ErrFull", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	s.sealOrphans()
	if st := s.Stats(); st.Pending != 0 || st.Queued != sealed+2 {
		t.Fatalf("Stats after sealing the orphan = %+v, want nothing pending and %d queued", st, sealed+2)
	}
	if recs := drain(t, s); !recs[len(recs)-1].Incomplete || recs[len(recs)-1].ID != orphan.ID || recs[len(recs)-1].Error != orphanError {
		t.Errorf("last record %+v; want the orphan, incomplete, saying why", recs[len(recs)-1])
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Something else fills the disk; the agent restarts on it.
	filler = kerneltest.FillDisk(t, filepath.Dir(dir))
	s = openSpool(t, Config{Dir: dir, OpenRetry: 20 * time.Millisecond})
	if err := s.Begin(ctx, newRecord(10)); !errors.Is(err, ErrFull) {
		t.Fatalf("Begin on a full disk: %v, want ErrFull", err)
	}
	if got, err := s.Next(ctx, 10, 1<<20); err != nil || len(got) != 0 {
		t.Errorf("Next on a full disk: %d entries, %v; want none and no error", len(got), err)
	}

	// Space returns: the spool opens, what it held is there, records flow.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("the spool did not open within 30s of space returning")
	}
	if st := s.Stats(); st.Queued != sealed+2 {
		t.Errorf("Stats after space returned = %+v, want %d queued", st, sealed+2)
	}
	// The collector takes them all: the disk space they held comes back.
	if err := s.Ack(ctx, uint64(sealed+2)); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Bytes != 0 {
		t.Errorf("Stats after everything was acknowledged = %+v, want no bytes", st)
	}
	for i := range sealed {
		if err := s.Begin(ctx, newRecord(1<<20)); err != nil {
			t.Fatalf("Begin %d of %d after the collector emptied the spool: %v", i, sealed, err)
		}
	}
	r := newRecord(10)
	beginFinish(t, s, r)
	if r.Seq != uint64(sealed+3) || r.PrevHash == "" {
		t.Errorf("the next record has seq %d, want %d", r.Seq, sealed+3)
	}
}

func TestAReclaimCutShortKeepsTheChain(t *testing.T) {
	dir := t.TempDir()
	// What reclaim leaves when the agent dies between dropping Badger's
	// files and writing the head back.
	if err := writeSynced(filepath.Join(dir, headFile), []byte(`{"seq":41,"hash":"abc"}`)); err != nil {
		t.Fatal(err)
	}
	s := openSpool(t, Config{Dir: dir})
	r := newRecord(10)
	beginFinish(t, s, r)
	if r.Seq != 42 || r.PrevHash != "abc" {
		t.Errorf("first record after the cut-short reclaim: seq %d prev %q, want 42 after abc", r.Seq, r.PrevHash)
	}
}
