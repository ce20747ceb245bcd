package mask

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestMarker(t *testing.T) {
	k1, k2 := testKey(), make(Key, KeySize)
	secret := []byte("sk-abcdefghijklmnopqrstuvwxyz012345")
	format := regexp.MustCompile(`^\[MASKED:[A-Za-z0-9._-]+:[0-9a-f]{8}\]$`)
	tests := []struct {
		name string
		rule string
		want string // the rule as written in the marker
	}{
		{"plain", "openai-key", "openai-key"},
		{"dots and underscores", "aws.access_key", "aws.access_key"},
		{"unsafe bytes", `a"b]c:d\e f`, "a_b_c_d_e_f"},
		{"non-ASCII", "clé", "cl__"},
		{"empty", "", "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := k1.Marker(tt.rule, secret)
			if !format.MatchString(m) {
				t.Fatalf("marker %q does not have the format [MASKED:<rule>:<8 hex>]", m)
			}
			if !strings.HasPrefix(m, "[MASKED:"+tt.want+":") {
				t.Errorf("marker %q, want rule %q", m, tt.want)
			}
			if again := k1.Marker(tt.rule, secret); again != m {
				t.Errorf("same key and secret: %q, then %q", m, again)
			}
			if other := k2.Marker(tt.rule, secret); other == m {
				t.Errorf("another key gives the same marker %q", m)
			}
			if other := k1.Marker(tt.rule, append(secret, 'x')); other == m {
				t.Errorf("another secret gives the same marker %q", m)
			}
			if fp := k1.Fingerprint(secret); !strings.HasSuffix(m, ":"+fp+"]") {
				t.Errorf("marker %q does not end in the fingerprint %s", m, fp)
			}
		})
	}
	// HMAC-SHA256 of "abc" under the key 0x00..0x1f, computed with
	// `printf abc | openssl dgst -sha256 -mac HMAC -macopt hexkey:000102...1f`.
	if fp := testKey().Fingerprint([]byte("abc")); fp != "f0133729" {
		t.Errorf("Fingerprint(abc) = %s", fp)
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	k, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(k) != KeySize {
		t.Fatalf("key of %d bytes", len(k))
	}
	path := filepath.Join(dir, KeyFile)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	again, err := LoadOrCreateKey(dir)
	if err != nil || !bytes.Equal(again, k) {
		t.Fatalf("second start: %v; same key: %v", err, bytes.Equal(again, k))
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("data dir holds %d entries, want only %s", len(entries), KeyFile)
	}
	other, err := LoadOrCreateKey(t.TempDir())
	if err != nil || bytes.Equal(other, k) {
		t.Fatalf("another dir: %v; same key: %v", err, bytes.Equal(other, k))
	}
}

func TestLoadOrCreateKeyErrors(t *testing.T) {
	tests := []struct {
		name    string
		content []byte
		mode    os.FileMode
		want    string
	}{
		{"readable by others", make([]byte, KeySize), 0o644, "group or others"},
		{"short", make([]byte, 16), 0o600, "holds 16 bytes"},
		{"long", make([]byte, 64), 0o600, "more than 32 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, KeyFile)
			if err := os.WriteFile(path, tt.content, tt.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadOrCreateKey(dir); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one that says %q", err, tt.want)
			}
		})
	}
	t.Run("not a directory", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "f")
		os.WriteFile(file, nil, 0o600)
		if _, err := LoadOrCreateKey(file); err == nil {
			t.Fatal("no error for a data dir that is a file")
		}
	})
}

func TestKeyNeverPrinted(t *testing.T) {
	k := Key(bytes.Repeat([]byte{0xab}, KeySize))
	var logged bytes.Buffer
	// Without the time, whose digits could hold "171" (0xab) by chance.
	noTime := &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}
	slog.New(slog.NewJSONHandler(&logged, noTime)).Info("x", "key", k)
	slog.New(slog.NewTextHandler(&logged, noTime)).Info("x", "key", k)
	js, _ := json.Marshal(struct{ K Key }{k})
	outs := []string{
		fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s %q %x %X %d", k, k, k, k, k, k, k, k),
		logged.String(), string(js),
	}
	for _, o := range outs {
		if strings.Contains(strings.ToLower(o), "abab") || strings.Contains(o, "171") {
			t.Errorf("key printed: %s", o)
		}
		if !strings.Contains(o, redacted) {
			t.Errorf("no %q in %s", redacted, o)
		}
	}
}
