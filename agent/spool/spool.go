// Package spool keeps the agent's audit records durably on the node, in
// Badger, until the collector has acknowledged them.
//
// A record goes through two states. Begin stores it as pending, synced to
// disk, before the request goes upstream, so that no prompt leaves the node
// unrecorded. Finish seals it into the agent's hash chain (audit.Record.Seal)
// and queues it for shipping, replacing the pending copy in the same
// transaction. Next and Ack are the shipper's side: read the oldest sealed
// records, delete them once the collector has them. A crash between Begin and
// Finish leaves the pending record behind; Open seals it, marked incomplete.
//
// Key layout (one Badger DB, keys told apart by prefix; no key is a prefix
// of a key of another kind):
//
//	p/<record id>        pending record: its JSON, unsealed
//	q/<seq, 8 bytes BE>  sealed record: audit.Record.Encode bytes; big-endian
//	                     so that key order is seq order
//	h                    chain head: JSON {"seq":…,"hash":…} of the last
//	                     sealed record, written in the same transaction
//	r/<seq, 8 bytes BE>  a sealed record the collector refused for good:
//	                     JSON {"seq","id","code","reason","time","record"}, kept (and
//	                     counted in the spool's bytes) until an operator
//	                     deals with it, never sent again
package spool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/promptrail/promptrail/internal/badgerlog"
)

// ErrFull is returned by Begin when the record would take the spool over
// its size limit, or its filesystem under the reserve of free space (and
// by Finish when the disk is fuller still). What happens to the request
// then is the caller's policy.
var ErrFull = errors.New("spool: full")

// ErrClosed is returned by calls made after Close.
var ErrClosed = errors.New("spool: closed")

// DefaultMaxBytes is the size limit used when Config.MaxBytes is 0.
const DefaultMaxBytes int64 = 1 << 30

// Badger tuning. The spool holds a stream of small, short-lived records on
// a node that runs workloads, so memory is kept small rather than reads
// fast: records are read once, in key order, soon after being written.
const (
	// Two 16 MiB memtables bound write buffering at 32 MiB (Badger's
	// defaults: five of 64 MiB). A batch of one transaction may be up to 15%
	// of a memtable, 2.4 MiB, which maxGroupBytes stays under.
	memTableSize = 16 << 20
	numMemtables = 2
	// Reads hit recent data, mostly still in memtables; a small block
	// cache (default 256 MiB) is enough for the rest.
	blockCacheSize = 8 << 20
	indexCacheSize = 4 << 20
	// Values up to 128 KiB (nearly every record) stay in the LSM tree: a
	// record acknowledged before its memtable is flushed then costs one WAL
	// write and nothing more. Larger ones go to the value log, so that a
	// few huge prompts do not fill the memtables.
	valueThreshold = 128 << 10
	// Smaller value log files (default 1 GiB) let value log GC give space
	// back in smaller steps, as records are deleted all the time, and keep
	// what a mapped file may still claim of the disk small (see disk.go).
	valueLogFileSize = 16 << 20
	// Badger refuses one compactor; two suit a node with few cores to spare.
	numCompactors = 2

	gcInterval     = time.Minute
	gcDiscardRatio = 0.5

	defaultOpenRetry = 5 * time.Second
)

// Config configures a Spool.
type Config struct {
	// Dir holds the Badger files. Required.
	Dir string
	// AgentID is written into every record whose AgentID is empty when it
	// is sealed. Required.
	AgentID string
	// MaxBytes limits the size of the records held, pending and sealed.
	// 0: DefaultMaxBytes.
	MaxBytes int64
	// ReserveBytes is the free space kept on the spool's filesystem: Begin
	// refuses a record (ErrFull) that would leave less, Finish one that
	// would leave less than half of it, so Badger never writes into a
	// mapped page the disk cannot hold. 0: DefaultReserveBytes; at least
	// MinReserveBytes.
	ReserveBytes int64
	// OpenRetry is how often Open, having found the disk too full to open
	// Badger safely, tries again in the background; meanwhile the spool
	// is full. 0: 5s.
	OpenRetry time.Duration
	// Logger receives the spool's and Badger's logs. Nil: slog.Default().
	Logger *slog.Logger
	// Registerer receives the spool's metrics. Nil: no metrics.
	Registerer prometheus.Registerer
}

// Stats describes what the spool holds.
type Stats struct {
	// Pending counts records begun and not finished.
	Pending int
	// Queued counts sealed records not yet acknowledged.
	Queued int
	// Bytes is the size of the records held, pending and queued.
	Bytes int64
	// Oldest is the Start of the oldest queued record; zero if none.
	Oldest time.Time
	// Rejected counts records the collector refused for good, kept aside.
	Rejected int
}

// OldestAge is how long the oldest queued record has waited since its
// exchange started, in seconds; 0 when nothing is queued.
func (st Stats) OldestAge(now time.Time) float64 {
	if st.Oldest.IsZero() {
		return 0
	}
	return now.Sub(st.Oldest).Seconds()
}

// Entry is a sealed record as Next returns it.
type Entry struct {
	Seq   uint64
	ID    string
	Start time.Time
	// Data is the record's Encode bytes: sealed JSON, ready to send.
	Data []byte
}

// Spool is a durable store of audit records. Its methods are safe for
// concurrent use.
type Spool struct {
	// db is nil until Badger is open: Open leaves it nil when the disk
	// is full, and openLoop sets it, holding closeMu, once there is room.
	db      *badger.DB
	cfg     Config
	log     *slog.Logger
	agentID string
	max     int64
	reserve int64
	// started says that the committer and GC loops run (db is open).
	started  bool
	waitDone chan struct{} // closed when openLoop ends; nil if none

	// closeMu is held for reading by every call while it uses the DB, and
	// for writing by Close, so that Close waits for calls in flight.
	closeMu sync.RWMutex
	closed  bool

	writeCh       chan *writeReq
	committerDone chan struct{}
	gcStop        chan struct{}
	gcDone        chan struct{}
	ready         chan struct{}

	// head is the last committed chain link; only the committer (and Open,
	// before the committer starts) touches it.
	head chainHead
	// sealed mirrors head.Seq for readers; acked is the highest seq
	// deleted by Ack. Queued records are acked+1 … sealed.
	sealed atomic.Uint64
	acked  atomic.Uint64
	bytes  atomic.Int64
	// rejected counts the r/ keys.
	rejected atomic.Int64

	pendMu  sync.Mutex
	pending map[string]int // id → size of its p/ value
	// orphans are pending records whose Finish a full disk refused: no
	// one will finish them, so sealOrphans seals their pending copies,
	// marked incomplete, once there is room.
	orphans map[string]bool

	ackMu sync.Mutex // serialises Acks

	oldestMu sync.Mutex
	oldest   struct {
		seq   uint64
		start time.Time
	}

	metrics *metrics
}

// chainHead is the value of key h.
type chainHead struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// Open opens (creating if needed) the spool in cfg.Dir. Records left
// pending by a crash are sealed as incomplete before Open returns.
func Open(ctx context.Context, cfg Config) (*Spool, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("spool: not opened: %w", err)
	}
	if cfg.Dir == "" {
		return nil, errors.New("spool: Config.Dir is required: the directory for the spool's files")
	}
	if cfg.AgentID == "" {
		return nil, errors.New("spool: Config.AgentID is required: it names the agent in every record")
	}
	if cfg.MaxBytes < 0 {
		return nil, fmt.Errorf("spool: Config.MaxBytes is %d; want 0 (default %d) or a positive size", cfg.MaxBytes, DefaultMaxBytes)
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("component", "spool")

	if cfg.ReserveBytes == 0 {
		cfg.ReserveBytes = DefaultReserveBytes
	}
	if cfg.ReserveBytes < MinReserveBytes {
		return nil, fmt.Errorf("spool: Config.ReserveBytes %d is below %d: the reserve must hold what Badger writes when it flushes its memtables", cfg.ReserveBytes, MinReserveBytes)
	}
	if cfg.OpenRetry <= 0 {
		cfg.OpenRetry = defaultOpenRetry
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: creating %s: %w", cfg.Dir, err)
	}
	s := &Spool{
		cfg:           cfg,
		log:           log,
		agentID:       cfg.AgentID,
		max:           cfg.MaxBytes,
		reserve:       cfg.ReserveBytes,
		writeCh:       make(chan *writeReq, 1024),
		committerDone: make(chan struct{}),
		gcStop:        make(chan struct{}),
		gcDone:        make(chan struct{}),
		ready:         make(chan struct{}, 1),
		pending:       make(map[string]int),
		orphans:       make(map[string]bool),
	}
	s.metrics = newMetrics(s)
	if cfg.Registerer != nil {
		if err := s.metrics.register(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	r, err := room(cfg.Dir)
	if err != nil {
		s.metrics.unregister()
		return nil, err
	}
	if r < flushBytes {
		// Opening Badger replays its log and flushes it into tables:
		// on a full disk, a SIGBUS. Start full instead, and open once
		// there is room.
		log.Error("spool's disk is full: starting with the spool full (new requests follow --spool-full) until space returns",
			"dir", cfg.Dir, "free_bytes", max(r, 0), "needed_bytes", flushBytes)
		s.waitDone = make(chan struct{})
		go s.openLoop()
		return s, nil
	}
	if err := s.openDB(); err != nil {
		s.metrics.unregister()
		return nil, err
	}
	return s, nil
}

// openDB opens Badger, loads the spool's state, seals what a crash left
// pending and starts the committer. The caller holds closeMu or is Open.
func (s *Spool) openDB() error {
	db, err := badger.Open(badgerOptions(s.cfg))
	if err != nil {
		return fmt.Errorf("spool: opening Badger in %s (is another agent using this directory?): %w", s.cfg.Dir, err)
	}
	s.db = db
	if err := s.load(); err != nil {
		s.db = nil
		return errors.Join(err, db.Close())
	}
	if err := s.recover(); err != nil {
		s.db = nil
		return errors.Join(err, db.Close())
	}
	if n := s.rejected.Load(); n > 0 {
		// Every start says so again, until an operator has dealt with them.
		s.log.Warn("records the collector refused for good are kept aside in the spool; the collector's chain shows them as gaps",
			"records", n, "dir", s.cfg.Dir)
	}
	s.started = true
	go s.commitLoop()
	go s.gcLoop()
	return nil
}

// openLoop opens the spool once its disk has room again.
func (s *Spool) openLoop() {
	defer close(s.waitDone)
	t := time.NewTicker(s.cfg.OpenRetry)
	defer t.Stop()
	for {
		select {
		case <-s.gcStop:
			return
		case <-t.C:
		}
		if r, err := room(s.cfg.Dir); err != nil || r < flushBytes {
			continue
		}
		s.closeMu.Lock()
		if s.closed {
			s.closeMu.Unlock()
			return
		}
		err := s.openDB()
		s.closeMu.Unlock()
		if err != nil {
			s.log.Error("spool not opened although its disk has room again; retrying", "err", err)
			continue
		}
		s.log.Info("spool's disk has room again; the spool is open", "dir", s.cfg.Dir)
		s.notify()
		return
	}
}

func badgerOptions(cfg Config) badger.Options {
	return badger.DefaultOptions(cfg.Dir).
		WithLogger(badgerlog.New(cfg.Logger, "spool")).
		// A record must be on disk before its request goes upstream. Badger
		// (v4.9.6) syncs its write-ahead log once per transaction even when
		// it writes concurrent transactions together, so the committer puts
		// concurrent Begins and Finishes in one transaction: one sync per
		// group, not per record.
		WithSyncWrites(true).
		WithMemTableSize(memTableSize).
		WithNumMemtables(numMemtables).
		WithBlockCacheSize(blockCacheSize).
		WithIndexCacheSize(indexCacheSize).
		WithValueThreshold(valueThreshold).
		WithValueLogFileSize(valueLogFileSize).
		WithNumCompactors(numCompactors).
		// Badger's metrics are process-wide expvars; ours are per spool.
		WithMetricsEnabled(false).
		// Sealed keys have one writer (the committer) and pending keys are
		// unique per record: there is no conflict to detect.
		WithDetectConflicts(false)
}

// Ready returns a channel that receives a value when records were sealed.
// Signals coalesce: one value may stand for many records.
func (s *Spool) Ready() <-chan struct{} { return s.ready }

func (s *Spool) notify() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Stats returns what the spool holds now.
func (s *Spool) Stats() Stats {
	s.pendMu.Lock()
	pending := len(s.pending)
	s.pendMu.Unlock()
	// acked first: sealed only grows and never falls below acked.
	acked := s.acked.Load()
	sealed := s.sealed.Load()
	return Stats{
		Pending:  pending,
		Queued:   int(sealed - acked),
		Bytes:    s.bytes.Load(),
		Oldest:   s.oldestStart(acked+1, sealed),
		Rejected: int(s.rejected.Load()),
	}
}

// oldestStart returns the Start of queued record first, reading it once
// and remembering it until Ack moves past it.
func (s *Spool) oldestStart(first, last uint64) time.Time {
	if first > last {
		return time.Time{}
	}
	s.oldestMu.Lock()
	defer s.oldestMu.Unlock()
	if s.oldest.seq == first {
		return s.oldest.start
	}
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed || s.db == nil {
		return time.Time{}
	}
	var start time.Time
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(queueKey(first))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			_, start, err = entryMeta(v)
			return err
		})
	})
	if err != nil {
		// Acked meanwhile, or unreadable: Next will report the latter.
		return time.Time{}
	}
	s.oldest.seq, s.oldest.start = first, start
	return start
}

// Close stops the spool: it waits for calls in flight, commits queued
// Finish calls, stops background work and closes the DB.
func (s *Spool) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	s.closeMu.Unlock()

	close(s.writeCh)
	close(s.gcStop)
	if s.waitDone != nil {
		<-s.waitDone
	}
	s.metrics.unregister()
	if !s.started {
		return nil
	}
	<-s.committerDone
	<-s.gcDone
	if r, err := room(s.cfg.Dir); err == nil && r < flushBytes {
		// Closing flushes the memtables into new tables, which on a
		// full disk is a SIGBUS. Every record is synced in the log,
		// which the next start replays: leave it to the process's exit.
		s.log.Error("spool's disk is full: not closing Badger (its log holds every record, replayed at the next start)",
			"dir", s.cfg.Dir, "free_bytes", max(r, 0), "needed_bytes", flushBytes)
		return nil
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("spool: closing Badger in %s: %w", s.cfg.Dir, err)
	}
	return nil
}

// gcLoop reclaims value log space taken by deleted records.
func (s *Spool) gcLoop() {
	defer close(s.gcDone)
	t := time.NewTicker(gcInterval)
	defer t.Stop()
	for {
		select {
		case <-s.gcStop:
			return
		case <-t.C:
		}
		s.sealOrphans()
		// Each successful run rewrites one file (writing what is live
		// of it first): repeat while it pays and the disk has room.
		for {
			if r, err := room(s.cfg.Dir); err != nil || r < s.reserve/2+vlogCap {
				break
			}
			err := s.db.RunValueLogGC(gcDiscardRatio)
			if err == nil {
				continue
			}
			if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
				s.log.Warn("spool value log GC failed; disk space of deleted records is not reclaimed", "err", err)
			}
			break
		}
	}
}
