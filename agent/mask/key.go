package mask

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

// KeyFile is the name of the key file in the agent's data directory.
const KeyFile = "mask.key"

// KeySize is the length of a Key in bytes.
const KeySize = 32

// Key is the per-deployment HMAC key that fingerprints secrets. Its value is
// never printed: every fmt verb, slog and the text and JSON encoders show
// "[redacted]" instead.
type Key []byte

const redacted = "[redacted]"

// LoadOrCreateKey reads the key from the file KeyFile in dir, or creates the
// file there (32 random bytes, mode 0600) if it does not exist. A key file
// that group or others can access, or that is not KeySize bytes long, is an
// error. Nodes that should give the same fingerprints share one key file.
func LoadOrCreateKey(dir string) (Key, error) {
	path := filepath.Join(dir, KeyFile)
	k, err := readKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("mask: creating %s: %w", dir, err)
	}
	if err := createKey(dir, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, err
	}
	return readKey(path)
}

func readKey(path string) (Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("mask: reading key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("mask: reading key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("mask: key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("mask: key file %s has mode %#o; it must not be accessible to group or others (chmod 600)", path, perm)
	}
	k, err := io.ReadAll(io.LimitReader(f, KeySize+1))
	if err != nil {
		return nil, fmt.Errorf("mask: reading key: %w", err)
	}
	if len(k) > KeySize {
		return nil, fmt.Errorf("mask: key file %s holds more than %d bytes", path, KeySize)
	}
	if len(k) < KeySize {
		return nil, fmt.Errorf("mask: key file %s holds %d bytes, want %d", path, len(k), KeySize)
	}
	return Key(k), nil
}

// createKey writes a new key to a temporary file and links it into place, so
// that the key file is never seen half written and a key that another
// process created meanwhile is kept (the error then wraps fs.ErrExist).
func createKey(dir, path string) (err error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return fmt.Errorf("mask: generating key: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+KeyFile+".*")
	if err != nil {
		return fmt.Errorf("mask: creating key: %w", err)
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("mask: creating key: %w", err)
	}
	_, err = f.Write(k)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("mask: writing key: %w", err)
	}
	if err := os.Link(f.Name(), path); err != nil {
		return fmt.Errorf("mask: creating key: %w", err)
	}
	return nil
}

// Marker is the text that replaces secret, found by rule ruleID:
// "[MASKED:<rule-id>:<fingerprint>]". The rule ID is written with every
// byte other than ASCII letters, digits, '.', '_' and '-' replaced by '_'
// (so that the marker needs no escaping in JSON and cannot be cut short).
func (k Key) Marker(ruleID string, secret []byte) string {
	return "[MASKED:" + markerRule(ruleID) + ":" + k.Fingerprint(secret) + "]"
}

// Fingerprint is the 8 hex digits of HMAC-SHA256(k, secret) that a marker
// and a Finding carry.
func (k Key) Fingerprint(secret []byte) string {
	h := hmac.New(sha256.New, k)
	h.Write(secret)
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:4])
}

func markerRule(id string) string {
	if id == "" {
		return "unknown"
	}
	for i := 0; i < len(id); i++ {
		if !ruleByte(id[i]) {
			b := []byte(id)
			for j := i; j < len(b); j++ {
				if !ruleByte(b[j]) {
					b[j] = '_'
				}
			}
			return string(b)
		}
	}
	return id
}

func ruleByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '-'
}

// String returns "[redacted]".
func (Key) String() string { return redacted }

// GoString returns "[redacted]".
func (Key) GoString() string { return redacted }

// Format writes "[redacted]" for every verb.
func (Key) Format(f fmt.State, _ rune) { io.WriteString(f, redacted) }

// MarshalText returns "[redacted]", so that no encoder records the key.
func (Key) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LogValue returns "[redacted]".
func (Key) LogValue() slog.Value { return slog.StringValue(redacted) }
