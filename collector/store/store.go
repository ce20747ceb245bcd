// Package store keeps the collector's audit records in Badger: time-bucketed
// keys, secondary indexes, per-agent hash chains, an RFC 6962 Merkle log with
// Ed25519-signed checkpoints, verification, queries and retention.
//
// A Store is safe for concurrent use. Ingest calls are serialised: each
// batch is committed in one synced Badger transaction that holds the
// records, their indexes, the chain heads and the Merkle nodes, so a crash
// never leaves the log and the records out of step. Batches of concurrent
// calls may share a transaction (and its sync).
package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/transparency-dev/merkle/compact"
	"golang.org/x/mod/sumdb/note"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/internal/badgerlog"
)

// MaxBatchBytes is the largest batch, as the sum of the records' encoded
// sizes, that Ingest accepts in one transaction. Badger caps a transaction
// at 15% of its memtable; with the minimum memtable (64 MiB) a batch of
// this size and its index keys fits. It is the agents' limit too
// (audit.MaxBatchBytes), so the two cannot disagree.
const MaxBatchBytes = audit.MaxBatchBytes

// Defaults for Config.
const (
	DefaultBucket          = 24 * time.Hour
	DefaultOrigin          = "promptrail collector"
	DefaultCheckpointEvery = 30 * time.Second
	DefaultMemTableMB      = 64
	DefaultBlockCacheMB    = 64
	DefaultIndexCacheMB    = 32
	// DefaultMaxClockSkew bounds how far a record's start may be from the
	// time it arrives. A week: an agent's spool may hold records through
	// a collector outage of days, and a clock a week off is a broken
	// clock whose records would land in the wrong retention bucket.
	DefaultMaxClockSkew = 7 * 24 * time.Hour

	// maintenanceEvery paces retention and value-log GC in Run: both are
	// heavy, and neither is urgent.
	maintenanceEvery = 5 * time.Minute
	// valueThreshold sends record bodies (typically 1-10 KB) to the value
	// log and keeps the LSM tree small: index scans and compactions then
	// touch keys, not bodies.
	valueThreshold = 1 << 10
)

// Config configures a Store. Only Dir is required.
type Config struct {
	// Dir holds the database (Dir/db) and, unless Signer is set, the
	// checkpoint key pair (checkpoint.key, checkpoint.pub).
	Dir    string
	Logger *slog.Logger

	// Bucket is the width of a time bucket (default 24h), at least a
	// minute and a whole number of seconds. It is fixed when the store is
	// created: Open refuses a different width for an existing store.
	Bucket time.Duration
	// Retention is how long records are kept; 0 keeps them forever. Run
	// drops whole buckets that ended before now-Retention, so a record may
	// outlive Retention by up to one Bucket.
	Retention time.Duration

	// Origin is the checkpoints' origin line (default "promptrail collector").
	Origin string
	// Signer signs checkpoints; VerifierKey is its note verifier key text
	// and is required with it. Nil Signer: LoadOrCreateSigner(Dir, Origin).
	Signer      note.Signer
	VerifierKey string
	// CheckpointEvery is how often Run signs a checkpoint (default 30s),
	// even when no record arrived, so clients see the log is alive.
	CheckpointEvery time.Duration

	// Badger's memory. MemTableMB (default 64, minimum 64) is the size of
	// each of 3 memtables: larger absorbs bigger write bursts, and Badger
	// caps a transaction at 15% of it. BlockCacheMB (default 64) caches
	// table blocks: larger speeds up index scans over old buckets.
	// IndexCacheMB (default 32) bounds the memory for table indexes and
	// bloom filters; 0 would keep them all in memory, which grows with
	// the store.
	MemTableMB, BlockCacheMB, IndexCacheMB int

	// MaxClockSkew is how far a record's start may be from the time it
	// is ingested, either way; a record further off is rejected (never
	// stored) with code clock_skew. Zero: DefaultMaxClockSkew. Negative:
	// no check.
	MaxClockSkew time.Duration

	// Registerer receives the store's metrics; nil: no metrics.
	Registerer prometheus.Registerer
}

func (c *Config) setDefaults() error {
	if c.Dir == "" {
		return errors.New("store: Config.Dir is required")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Bucket == 0 {
		c.Bucket = DefaultBucket
	}
	if c.Bucket < time.Minute || c.Bucket%time.Second != 0 {
		return fmt.Errorf("store: Config.Bucket %v must be at least 1m and a whole number of seconds", c.Bucket)
	}
	if c.Retention < 0 {
		return fmt.Errorf("store: Config.Retention %v is negative; use 0 to keep records forever", c.Retention)
	}
	if c.Origin == "" {
		c.Origin = DefaultOrigin
	}
	if c.MaxClockSkew == 0 {
		c.MaxClockSkew = DefaultMaxClockSkew
	}
	if c.CheckpointEvery <= 0 {
		c.CheckpointEvery = DefaultCheckpointEvery
	}
	if c.MemTableMB == 0 {
		c.MemTableMB = DefaultMemTableMB
	}
	if c.MemTableMB < DefaultMemTableMB {
		return fmt.Errorf("store: Config.MemTableMB %d is below %d: Badger caps a transaction at 15%% of the memtable and a batch of MaxBatchBytes must fit in one", c.MemTableMB, DefaultMemTableMB)
	}
	if c.BlockCacheMB <= 0 {
		c.BlockCacheMB = DefaultBlockCacheMB
	}
	if c.IndexCacheMB <= 0 {
		c.IndexCacheMB = DefaultIndexCacheMB
	}
	if c.Signer != nil && c.VerifierKey == "" {
		return errors.New("store: Config.VerifierKey is required with Config.Signer")
	}
	return nil
}

// Store is the collector's record store. Open one per directory.
type Store struct {
	cfg      Config
	log      *slog.Logger
	db       *badger.DB
	signer   note.Signer
	verifier note.Verifier
	vkey     string
	bucket   uint64 // bucket width, seconds
	rf       *compact.RangeFactory
	m        *metrics

	// qmu guards the queue of Ingest calls waiting to commit and whether
	// a commit is running (see submit).
	qmu        sync.Mutex
	queue      []*call
	committing bool

	// mu serialises commits and guards rng, which always equals the
	// committed tree.
	mu  sync.Mutex
	rng *compact.Range

	// cpMu serialises checkpoint signing and guards cp.
	cpMu sync.Mutex
	cp   *checkpoint

	// runMu orders Run's start against Close, so Close waits for every
	// Run that started.
	runMu  sync.Mutex
	closed bool
	done   chan struct{}
	// scanBudget bounds the records one text query reads (tests lower it).
	scanBudget int
	wg         sync.WaitGroup
}

var _ io.Closer = (*Store)(nil)

// Open opens or creates the store in cfg.Dir.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Store{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "collector-store"),
		bucket: uint64(cfg.Bucket / time.Second),
		rf:     newRangeFactory(),
		done:   make(chan struct{}),

		scanBudget: textScanBudget,
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s.m = m
	if err := s.openSigner(); err != nil {
		return nil, err
	}
	opts := badger.DefaultOptions(filepath.Join(cfg.Dir, "db")).
		WithLogger(badgerlog.New(cfg.Logger, "collector-store")).
		WithSyncWrites(true).
		WithMemTableSize(int64(cfg.MemTableMB) << 20).
		WithNumMemtables(3).
		WithBlockCacheSize(int64(cfg.BlockCacheMB) << 20).
		WithIndexCacheSize(int64(cfg.IndexCacheMB) << 20).
		WithValueThreshold(valueThreshold).
		// Ingest is serialised by a mutex, so Badger's conflict tracking
		// is pure overhead.
		WithDetectConflicts(false).
		WithMetricsEnabled(false).
		WithNumCompactors(2)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("store: opening database in %s (is another collector using it?): %w", opts.Dir, err)
	}
	s.db = db
	if err := s.load(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// load reads the persistent tree state and checks the bucket width.
func (s *Store) load(ctx context.Context) error {
	return s.db.Update(func(txn *badger.Txn) error {
		if err := s.checkLayout(txn); err != nil {
			return err
		}
		w, err := getU64(txn, keyBucket)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
			if err := txn.Set(keyBucket, u64(s.bucket)); err != nil {
				return fmt.Errorf("store: saving bucket width: %w", err)
			}
			if err := txn.Set(keyLayout, u64(layoutVersion)); err != nil {
				return fmt.Errorf("store: saving layout version: %w", err)
			}
		case err != nil:
			return fmt.Errorf("store: reading bucket width: %w", err)
		case w != s.bucket:
			return fmt.Errorf("store: %s was created with Bucket %v; configure that width (or a new Dir) instead of %v",
				s.cfg.Dir, time.Duration(w)*time.Second, s.cfg.Bucket)
		}
		rng, err := loadRange(txn, s.rf)
		if err != nil {
			return err
		}
		s.rng = rng
		cp, err := s.loadCheckpoint(txn)
		if err != nil {
			return err
		}
		s.cp = cp
		s.m.treeSize.Set(float64(rng.End()))
		return nil
	})
}

// checkLayout refuses a store written with another key layout: reading
// one as this layout would return wrong answers, not errors. A store
// without m/bucket is new; one with it but no m/layout predates versions.
func (s *Store) checkLayout(txn *badger.Txn) error {
	v, err := getU64(txn, keyLayout)
	if errors.Is(err, badger.ErrKeyNotFound) {
		if _, err := txn.Get(keyBucket); errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		} else if err != nil {
			return fmt.Errorf("store: reading bucket width: %w", err)
		}
		v = 1
	} else if err != nil {
		return fmt.Errorf("store: reading layout version: %w", err)
	}
	if v != layoutVersion {
		return fmt.Errorf("store: %s holds a store of key layout %d, this collector reads layout %d; use a new Dir (or the collector version that wrote it)",
			s.cfg.Dir, v, layoutVersion)
	}
	return nil
}

// Close stops Run, waits for it, and closes the database, which flushes
// pending writes. It returns the first error.
func (s *Store) Close() error {
	s.runMu.Lock()
	if s.closed {
		s.runMu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	s.runMu.Unlock()
	s.wg.Wait()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: closing database: %w", err)
	}
	return nil
}

// Run signs a checkpoint every CheckpointEvery, and applies retention and
// collects the value log every few minutes, until ctx is done or the
// store is closed. It returns nil then; maintenance errors are logged,
// not returned, so one failed pass does not stop the next.
func (s *Store) Run(ctx context.Context) error {
	s.runMu.Lock()
	if s.closed {
		s.runMu.Unlock()
		return errors.New("store: Run called on a closed store")
	}
	s.wg.Add(1)
	s.runMu.Unlock()
	defer s.wg.Done()
	s.maintain(ctx)
	cpTick := time.NewTicker(s.cfg.CheckpointEvery)
	defer cpTick.Stop()
	mTick := time.NewTicker(maintenanceEvery)
	defer mTick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.done:
			return nil
		case <-cpTick.C:
			if _, err := s.signCheckpoint(ctx); err != nil {
				s.log.Error("signing checkpoint", "err", err)
			}
		case <-mTick.C:
			s.maintain(ctx)
		}
	}
}

func (s *Store) maintain(ctx context.Context) {
	if n, err := s.ApplyRetention(ctx, time.Now()); err != nil {
		s.log.Error("applying retention", "err", err)
	} else if n > 0 {
		s.log.Info("dropped expired buckets", "buckets", n)
	}
	// RunValueLogGC rewrites at most one file per call; loop until it
	// finds nothing worth rewriting.
	for ctx.Err() == nil {
		if err := s.db.RunValueLogGC(0.5); err != nil {
			if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
				s.log.Error("value log GC", "err", err)
			}
			return
		}
	}
}

func getU64(txn *badger.Txn, key []byte) (uint64, error) {
	it, err := txn.Get(key)
	if err != nil {
		return 0, err
	}
	var v uint64
	err = it.Value(func(b []byte) error {
		if len(b) != 8 {
			return fmt.Errorf("store: key %q holds %d bytes, want 8", key, len(b))
		}
		v = binary.BigEndian.Uint64(b)
		return nil
	})
	return v, err
}

// metrics are the store's own; records stored and duplicates are counted
// by the collector's API, the one way records come in.
type metrics struct {
	issues      *prometheus.CounterVec
	batches     prometheus.Histogram
	treeSize    prometheus.Gauge
	checkpoints prometheus.Counter
}

// newMetrics creates the metrics and registers them when r is not nil;
// unregistered metrics work the same and cost little.
func newMetrics(r prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		issues: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "promptrail", Subsystem: "store", Name: "chain_issues_total",
			Help: "Chain issues found by Ingest, by kind (gap, fork, restart, conflict).",
		}, []string{"kind"}),
		batches: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "promptrail", Subsystem: "store", Name: "ingest_seconds",
			Help:    "Time to store one batch, synced.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		treeSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "promptrail", Subsystem: "store", Name: "tree_size",
			Help: "Leaves in the Merkle log.",
		}),
		checkpoints: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "promptrail", Subsystem: "store", Name: "checkpoints_signed_total",
			Help: "Checkpoints signed.",
		}),
	}
	if r == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.issues, m.batches, m.treeSize, m.checkpoints} {
		if err := r.Register(c); err != nil {
			return nil, fmt.Errorf("store: registering metrics (is another Store using this Registerer?): %w", err)
		}
	}
	return m, nil
}
