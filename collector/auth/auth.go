// Package auth decides who may call the collector. Today callers present
// a bearer token from a tokens file; the Authenticator interface is where
// OIDC will plug in.
package auth

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/promptrail/promptrail/internal/every"
)

// Role is what a principal may do.
type Role string

const (
	// RoleAgent may ingest records.
	RoleAgent Role = "agent"
	// RoleReader may query, export and verify.
	RoleReader Role = "reader"
	// RoleApprover may list, show, approve and deny approval requests.
	RoleApprover Role = "approver"
	// RoleAdmin may do all of the above.
	RoleAdmin Role = "admin"
)

// Principal is an authenticated caller.
type Principal struct {
	// Name names the caller in logs. For an agent token it is the agent ID
	// the token may ingest for, or "*" for any agent.
	Name string
	Role Role
}

// Can reports whether p may act in role want.
func (p Principal) Can(want Role) bool {
	return p.Role == want || p.Role == RoleAdmin
}

// MayIngestFor reports whether p may ingest records of agentID.
func (p Principal) MayIngestFor(agentID string) bool {
	if !p.Can(RoleAgent) {
		return false
	}
	return p.Role == RoleAdmin || p.Name == "*" || p.Name == agentID
}

// Errors of Authenticate; the API answers 401 for both.
var (
	ErrNoCredentials = errors.New("no bearer token: send Authorization: Bearer <token>")
	ErrBadToken      = errors.New("unknown bearer token")
)

// Authenticator identifies the caller of a request.
type Authenticator interface {
	Authenticate(ctx context.Context, r *http.Request) (Principal, error)
}

// Tokens authenticates bearer tokens listed in a file. It keeps only the
// tokens' SHA-256 digests in memory.
type Tokens struct {
	byDigest map[[sha256.Size]byte]Principal
}

// LoadTokens reads a tokens file: one token per line as
//
//	<role> <name> <token>
//
// where role is agent, reader, approver or admin; name is the agent ID an agent token
// may ingest for ("*": any) or a label for the others. Blank lines and
// lines starting with # are ignored.
func LoadTokens(path string) (*Tokens, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: reading tokens file: %w", err)
	}
	t, err := ParseTokens(b)
	if err != nil {
		return nil, fmt.Errorf("auth: %s: %w", path, err)
	}
	return t, nil
}

// ParseTokens parses the content of a tokens file (see LoadTokens).
func ParseTokens(b []byte) (*Tokens, error) {
	t := &Tokens{byDigest: map[[sha256.Size]byte]Principal{}}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("line %d: want <role> <name> <token>", n)
		}
		role := Role(f[0])
		switch role {
		case RoleAgent, RoleReader, RoleApprover, RoleAdmin:
		default:
			return nil, fmt.Errorf("line %d: role %q: want agent, reader, approver or admin", n, f[0])
		}
		if len(f[2]) < 16 {
			return nil, fmt.Errorf("line %d: token shorter than 16 characters", n)
		}
		d := sha256.Sum256([]byte(f[2]))
		if _, dup := t.byDigest[d]; dup {
			return nil, fmt.Errorf("line %d: token listed twice", n)
		}
		t.byDigest[d] = Principal{Name: f[1], Role: role}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(t.byDigest) == 0 {
		return nil, errors.New("no tokens")
	}
	return t, nil
}

// Authenticate implements Authenticator.
func (t *Tokens) Authenticate(_ context.Context, r *http.Request) (Principal, error) {
	tok, ok := Bearer(r)
	if !ok {
		return Principal{}, ErrNoCredentials
	}
	// Comparing digests of equal length in constant time keeps the
	// comparison from leaking how much of a guessed token was right.
	d := sha256.Sum256([]byte(tok))
	for k, p := range t.byDigest {
		if subtle.ConstantTimeCompare(k[:], d[:]) == 1 {
			return p, nil
		}
	}
	return Principal{}, ErrBadToken
}

// Bearer returns the bearer token of r.
func Bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const prefix = "bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return "", false
	}
	return strings.TrimSpace(h[len(prefix):]), true
}

// NewToken returns a fresh random token (256 bits, base64url).
func NewToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// ReadTokenFile reads a client's token file: the token, surrounding
// whitespace ignored.
func ReadTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	return tok, nil
}

// FileTokens is a Tokens that follows its file: Reload reads it again, so
// that tokens can be added or revoked without restarting the collector.
// A file that no longer parses leaves the tokens in force as they were.
type FileTokens struct {
	path string
	cur  atomic.Pointer[Tokens]
	mod  atomic.Int64 // modification time (ns) of the file last loaded
}

// OpenTokens loads the tokens file at path (see LoadTokens).
func OpenTokens(path string) (*FileTokens, error) {
	f := &FileTokens{path: path}
	if _, err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Reload reads the file again if it changed since the last load, and
// reports whether it did.
func (f *FileTokens) Reload() (bool, error) {
	st, err := os.Stat(f.path)
	if err != nil {
		return false, fmt.Errorf("auth: tokens file: %w", err)
	}
	if f.cur.Load() != nil && st.ModTime().UnixNano() == f.mod.Load() {
		return false, nil
	}
	t, err := LoadTokens(f.path)
	if err != nil {
		return false, err
	}
	f.cur.Store(t)
	f.mod.Store(st.ModTime().UnixNano())
	return true, nil
}

// Watch reloads the file every interval until ctx is done, logging what
// happened.
func (f *FileTokens) Watch(ctx context.Context, interval time.Duration, log *slog.Logger) {
	every.Run(ctx, interval, func(context.Context) {
		changed, err := f.Reload()
		switch {
		case err != nil:
			log.Error("tokens file not reloaded; the tokens loaded before stay in force", "file", f.path, "err", err)
		case changed:
			log.Info("tokens file reloaded", "file", f.path, "tokens", f.cur.Load().Len())
		}
	})
}

// Authenticate implements Authenticator with the tokens loaded last.
func (f *FileTokens) Authenticate(ctx context.Context, r *http.Request) (Principal, error) {
	return f.cur.Load().Authenticate(ctx, r)
}

// Len returns the number of tokens.
func (t *Tokens) Len() int { return len(t.byDigest) }
