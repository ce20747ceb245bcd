package store

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/oklog/ulid/v2"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/promptrail/promptrail/audit"
)

// ErrNotFound is returned by Get for an ID the store does not hold.
var ErrNotFound = errors.New("store: record not found")

// Proof proves that a record is leaf LeafIndex of the log whose signed
// checkpoint, of size TreeSize, is Checkpoint. The leaf hash is
// rfc6962.DefaultHasher.HashLeaf of the record's Encode() bytes.
type Proof struct {
	LeafIndex  uint64   `json:"leaf_index"`
	TreeSize   uint64   `json:"tree_size"`
	Hashes     [][]byte `json:"hashes"`
	Checkpoint []byte   `json:"checkpoint"`
}

// MarshalJSON writes Checkpoint as a string: it is note text.
func (p Proof) MarshalJSON() ([]byte, error) {
	type plain Proof
	return json.Marshal(struct {
		plain
		Checkpoint string `json:"checkpoint"`
	}{plain(p), string(p.Checkpoint)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (p *Proof) UnmarshalJSON(b []byte) error {
	type plain Proof
	var v struct {
		plain
		Checkpoint string `json:"checkpoint"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*p = Proof(v.plain)
	p.Checkpoint = []byte(v.Checkpoint)
	return nil
}

type checkpoint struct {
	size uint64
	root []byte
	note []byte
}

func newRangeFactory() *compact.RangeFactory {
	return &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
}

// loadRange restores the compact range of the committed tree.
func loadRange(txn *badger.Txn, rf *compact.RangeFactory) (*compact.Range, error) {
	size, err := getU64(txn, keyTreeSize)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return rf.NewEmptyRange(0), nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: reading tree size: %w", err)
	}
	it, err := txn.Get(keyRange)
	if err != nil {
		return nil, fmt.Errorf("store: reading compact range of a tree of %d leaves: %w", size, err)
	}
	raw, err := it.ValueCopy(nil)
	if err != nil {
		return nil, fmt.Errorf("store: reading compact range: %w", err)
	}
	if len(raw)%32 != 0 {
		return nil, fmt.Errorf("store: compact range is %d bytes, not a multiple of 32: the database is damaged", len(raw))
	}
	hashes := make([][]byte, 0, len(raw)/32)
	for i := 0; i < len(raw); i += 32 {
		hashes = append(hashes, raw[i:i+32])
	}
	rng, err := rf.NewRange(0, size, hashes)
	if err != nil {
		return nil, fmt.Errorf("store: restoring compact range: %w", err)
	}
	return rng, nil
}

// cloneRange copies r so that a batch can append to the copy and drop it
// if its transaction fails.
func cloneRange(rf *compact.RangeFactory, r *compact.Range) (*compact.Range, error) {
	hs := r.Hashes()
	cp := make([][]byte, len(hs))
	copy(cp, hs)
	return rf.NewRange(r.Begin(), r.End(), cp)
}

func rangeBytes(r *compact.Range) []byte {
	var b []byte
	for _, h := range r.Hashes() {
		b = append(b, h...)
	}
	return b
}

func rootOf(r *compact.Range) ([]byte, error) {
	if r.End() == 0 {
		return rfc6962.DefaultHasher.EmptyRoot(), nil
	}
	return r.GetRootHash(nil)
}

func (s *Store) loadCheckpoint(txn *badger.Txn) (*checkpoint, error) {
	it, err := txn.Get(keyCP)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: reading checkpoint: %w", err)
	}
	raw, err := it.ValueCopy(nil)
	if err != nil {
		return nil, fmt.Errorf("store: reading checkpoint: %w", err)
	}
	cp, _, _, err := log.ParseCheckpoint(raw, s.cfg.Origin, s.verifier)
	if err != nil {
		// A new key or origin: the next checkpoint is signed with the
		// current ones.
		s.log.Warn("stored checkpoint does not verify with the current key and origin; signing a new one", "err", err)
		return nil, nil
	}
	return &checkpoint{size: cp.Size, root: cp.Hash, note: raw}, nil
}

// treeHead returns the committed tree's size and root.
func (s *Store) treeHead() (uint64, []byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	root, err := rootOf(s.rng)
	if err != nil {
		return 0, nil, fmt.Errorf("store: computing tree root: %w", err)
	}
	return s.rng.End(), root, nil
}

// signCheckpoint signs and stores a checkpoint of the current tree.
func (s *Store) signCheckpoint(ctx context.Context) (*checkpoint, error) {
	s.cpMu.Lock()
	defer s.cpMu.Unlock()
	return s.signLocked(ctx)
}

func (s *Store) signLocked(ctx context.Context) (*checkpoint, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	size, root, err := s.treeHead()
	if err != nil {
		return nil, err
	}
	// An extension line carries the signing time, so that a checkpoint
	// signed while the log is idle still says the log was alive then, and
	// a client can tell a stale checkpoint from a fresh one.
	body := append(log.Checkpoint{Origin: s.cfg.Origin, Size: size, Hash: root}.Marshal(),
		"timestamp "+time.Now().UTC().Format(time.RFC3339Nano)+"\n"...)
	signed, err := note.Sign(&note.Note{Text: string(body)}, s.signer)
	if err != nil {
		return nil, fmt.Errorf("store: signing checkpoint: %w", err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(keyCP, signed) }); err != nil {
		return nil, fmt.Errorf("store: saving checkpoint: %w", err)
	}
	s.cp = &checkpoint{size: size, root: root, note: signed}
	s.m.checkpoints.Inc()
	return s.cp, nil
}

// checkpointCovering returns the latest checkpoint if its tree has at
// least minSize leaves, and signs a new one otherwise.
func (s *Store) checkpointCovering(ctx context.Context, minSize uint64) (*checkpoint, error) {
	s.cpMu.Lock()
	defer s.cpMu.Unlock()
	if s.cp != nil && s.cp.size >= minSize {
		return s.cp, nil
	}
	return s.signLocked(ctx)
}

// Checkpoint returns the latest signed checkpoint, as note text. It signs
// one first if there is none or the tree has grown since.
func (s *Store) Checkpoint(ctx context.Context) ([]byte, error) {
	size, _, err := s.treeHead()
	if err != nil {
		return nil, err
	}
	cp, err := s.checkpointCovering(ctx, size)
	if err != nil {
		return nil, err
	}
	return cp.note, nil
}

// VerifierKey returns the note verifier key of the checkpoints, for
// clients: note.NewVerifier parses it.
func (s *Store) VerifierKey() string { return s.vkey }

// Get returns the record with the given ID and a proof of its inclusion
// in the log, against the latest checkpoint (signed first if it does not
// cover the record yet). It returns ErrNotFound for an unknown ID.
func (s *Store) Get(ctx context.Context, id string) (*audit.Record, *Proof, error) {
	u, err := ulid.ParseStrict(id)
	if err != nil || u.String() != id {
		return nil, nil, fmt.Errorf("%w: %q is not a record ID (a ULID)", ErrNotFound, id)
	}
	bkt := s.bucketOfTime(u.Time())
	var raw []byte
	var idx uint64
	err = s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(recordKey(bkt, id))
		if err != nil {
			return err
		}
		if raw, err = it.ValueCopy(nil); err != nil {
			return err
		}
		if len(raw) < leafIdxLen {
			return fmt.Errorf("the stored value is %d bytes (run Verify)", len(raw))
		}
		idx, raw = binary.BigEndian.Uint64(raw), raw[leafIdxLen:]
		return nil
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("store: reading record %s: %w", id, err)
	}
	var rec audit.Record
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, nil, fmt.Errorf("store: decoding record %s (run Verify): %w", id, err)
	}
	cp, err := s.checkpointCovering(ctx, idx+1)
	if err != nil {
		return nil, nil, err
	}
	hashes, err := s.inclusion(idx, cp.size)
	if err != nil {
		return nil, nil, err
	}
	return &rec, &Proof{LeafIndex: idx, TreeSize: cp.size, Hashes: hashes, Checkpoint: cp.note}, nil
}

// inclusion builds the inclusion proof of leaf idx in the tree of size
// leaves from the stored nodes, which never change once written.
func (s *Store) inclusion(idx, size uint64) ([][]byte, error) {
	nodes, err := proof.Inclusion(idx, size)
	if err != nil {
		return nil, fmt.Errorf("store: inclusion proof of leaf %d: %w", idx, err)
	}
	hashes := make([][]byte, len(nodes.IDs))
	err = s.db.View(func(txn *badger.Txn) error {
		tr := newTreeReader(txn)
		defer tr.Close()
		for i, n := range nodes.IDs {
			if hashes[i], err = tr.node(n.Level, n.Index); err != nil {
				return fmt.Errorf("node %d/%d: %w", n.Level, n.Index, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: reading proof of leaf %d in tree of %d (run Verify): %w", idx, size, err)
	}
	out, err := nodes.Rehash(hashes, rfc6962.DefaultHasher.HashChildren)
	if err != nil {
		return nil, fmt.Errorf("store: inclusion proof of leaf %d: %w", idx, err)
	}
	return out, nil
}

// bucketOfTime returns the bucket of a ULID time in milliseconds.
func (s *Store) bucketOfTime(ms uint64) uint64 {
	sec := ms / 1000
	return sec - sec%s.bucket
}

func (s *Store) openSigner() error {
	if s.cfg.Signer != nil {
		v, err := note.NewVerifier(s.cfg.VerifierKey)
		if err != nil {
			return fmt.Errorf("store: Config.VerifierKey: %w", err)
		}
		if v.Name() != s.cfg.Signer.Name() || v.KeyHash() != s.cfg.Signer.KeyHash() {
			return errors.New("store: Config.VerifierKey is not the key of Config.Signer")
		}
		s.signer, s.verifier, s.vkey = s.cfg.Signer, v, s.cfg.VerifierKey
		return nil
	}
	var err error
	s.signer, s.verifier, s.vkey, err = loadOrCreateKey(s.cfg.Dir, s.cfg.Origin)
	return err
}

// LoadOrCreateSigner returns the checkpoint signer kept in dir
// (checkpoint.key, mode 0600, and checkpoint.pub), creating an Ed25519
// key pair on first use. The key's name is origin with spaces and plus
// signs replaced by dashes, as note key names allow neither.
func LoadOrCreateSigner(dir, origin string) (note.Signer, note.Verifier, error) {
	s, v, _, err := loadOrCreateKey(dir, origin)
	return s, v, err
}

func keyName(origin string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) || r == '+' {
			return '-'
		}
		return r
	}, origin)
}

func loadOrCreateKey(dir, origin string) (note.Signer, note.Verifier, string, error) {
	keyPath, pubPath := filepath.Join(dir, "checkpoint.key"), filepath.Join(dir, "checkpoint.pub")
	skey, err := os.ReadFile(keyPath)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, "", fmt.Errorf("store: creating %s: %w", dir, err)
		}
		sk, vk, err := note.GenerateKey(rand.Reader, keyName(origin))
		if err != nil {
			return nil, nil, "", fmt.Errorf("store: generating checkpoint key: %w", err)
		}
		// The public key first: a key file without its public half would
		// be refused at the next start.
		if err := writeFileAtomic(pubPath, []byte(vk+"\n"), 0o644); err != nil {
			return nil, nil, "", err
		}
		if err := writeFileAtomic(keyPath, []byte(sk+"\n"), 0o600); err != nil {
			return nil, nil, "", err
		}
		skey = []byte(sk)
	} else if err != nil {
		return nil, nil, "", fmt.Errorf("store: reading checkpoint key: %w", err)
	}
	vkey, err := os.ReadFile(pubPath)
	if err != nil {
		return nil, nil, "", fmt.Errorf("store: reading %s (restore it from a backup, or move checkpoint.key away to make a new pair): %w", pubPath, err)
	}
	signer, err := note.NewSigner(strings.TrimSpace(string(skey)))
	if err != nil {
		return nil, nil, "", fmt.Errorf("store: parsing %s: %w", keyPath, err)
	}
	vk := strings.TrimSpace(string(vkey))
	verifier, err := note.NewVerifier(vk)
	if err != nil {
		return nil, nil, "", fmt.Errorf("store: parsing %s: %w", pubPath, err)
	}
	if verifier.KeyHash() != signer.KeyHash() || verifier.Name() != signer.Name() {
		return nil, nil, "", fmt.Errorf("store: %s and %s are not one key pair", keyPath, pubPath)
	}
	return signer, verifier, vk, nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("store: writing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("store: writing %s: %w", path, err)
	}
	return nil
}
