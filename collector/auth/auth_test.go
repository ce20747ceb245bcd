package auth

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

const tokensFile = `# promptrail collector tokens
agent node-a aaaaaaaaaaaaaaaaaaaa
agent *      bbbbbbbbbbbbbbbbbbbb
reader ops   cccccccccccccccccccc
admin root   dddddddddddddddddddd
`

func TestTokens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte(tokensFile), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := LoadTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		header      string
		err         error
		name        string
		read        bool
		ingestNodeA bool
		ingestNodeB bool
	}{
		{"", ErrNoCredentials, "", false, false, false},
		{"Basic xyz", ErrNoCredentials, "", false, false, false},
		{"Bearer nope-nope-nope-nope", ErrBadToken, "", false, false, false},
		{"Bearer aaaaaaaaaaaaaaaaaaaa", nil, "node-a", false, true, false},
		{"bearer bbbbbbbbbbbbbbbbbbbb", nil, "*", false, true, true},
		{"Bearer cccccccccccccccccccc", nil, "ops", true, false, false},
		{"Bearer dddddddddddddddddddd", nil, "root", true, true, true},
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", "/", nil)
		if c.header != "" {
			r.Header.Set("Authorization", c.header)
		}
		p, err := tok.Authenticate(context.Background(), r)
		if !errors.Is(err, c.err) {
			t.Errorf("%q: err %v, want %v", c.header, err, c.err)
			continue
		}
		if err != nil {
			continue
		}
		if p.Name != c.name || p.Can(RoleReader) != c.read || p.MayIngestFor("node-a") != c.ingestNodeA || p.MayIngestFor("node-b") != c.ingestNodeB {
			t.Errorf("%q: principal %+v: name/read/ingest(a)/ingest(b) = %s %v %v %v, want %s %v %v %v", c.header, p,
				p.Name, p.Can(RoleReader), p.MayIngestFor("node-a"), p.MayIngestFor("node-b"), c.name, c.read, c.ingestNodeA, c.ingestNodeB)
		}
	}
}

func TestParseTokensRejectsBadFiles(t *testing.T) {
	for name, content := range map[string]string{
		"empty":        "# nothing\n",
		"short token":  "agent a short\n",
		"bad role":     "root a aaaaaaaaaaaaaaaaaaaa\n",
		"fields":       "agent aaaaaaaaaaaaaaaaaaaa\n",
		"twice listed": "agent a aaaaaaaaaaaaaaaaaaaa\nreader b aaaaaaaaaaaaaaaaaaaa\n",
	} {
		if _, err := ParseTokens([]byte(content)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestNewTokenIsUsable(t *testing.T) {
	a, b := NewToken(), NewToken()
	if a == b || len(a) < 40 {
		t.Fatalf("tokens %q %q", a, b)
	}
	if _, err := ParseTokens([]byte("agent * " + a + "\n")); err != nil {
		t.Fatal(err)
	}
}

func TestFileTokensFollowTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	write := func(content string, mod time.Time) {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
	auth := func(f *FileTokens, tok string) error {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		_, err := f.Authenticate(context.Background(), r)
		return err
	}
	start := time.Now().Add(-time.Hour)
	write("reader old oooooooooooooooooooo\n", start)
	f, err := OpenTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := auth(f, "oooooooooooooooooooo"); err != nil {
		t.Fatal(err)
	}
	// Rotated: the new token works, the old one is revoked.
	write("reader new nnnnnnnnnnnnnnnnnnnn\n", start.Add(time.Minute))
	if changed, err := f.Reload(); !changed || err != nil {
		t.Fatalf("Reload after a change: %v %v", changed, err)
	}
	if auth(f, "nnnnnnnnnnnnnnnnnnnn") != nil || !errors.Is(auth(f, "oooooooooooooooooooo"), ErrBadToken) {
		t.Fatal("the rotated file is not in force")
	}
	// A broken file keeps the tokens in force.
	write("reader broken\n", start.Add(2*time.Minute))
	if _, err := f.Reload(); err == nil {
		t.Fatal("a broken tokens file reloaded")
	}
	if auth(f, "nnnnnnnnnnnnnnnnnnnn") != nil {
		t.Fatal("a broken tokens file revoked the tokens in force")
	}
	if changed, _ := f.Reload(); changed {
		t.Fatal("Reload of an unchanged file reported a change")
	}
}
