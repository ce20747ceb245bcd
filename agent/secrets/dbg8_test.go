package secrets

import (
	"strings"
	"testing"
	"time"
)

func TestDbgAdversarial(t *testing.T) {
	e := engine(t)
	for name, text := range map[string]string{
		"begin":   strings.Repeat("-----BEGIN PRIVATE KEY-----\n", 2000),
		"beginb":  strings.Repeat("-----BEGIN RSA PRIVATE KEY-----abcd", 2000),
		"key":     strings.Repeat("key=", 15000),
		"ghp":     strings.Repeat("ghp_", 15000),
		"ey":      strings.Repeat("ey", 30000),
		"secret":  strings.Repeat("secret ", 9000),
		"kind":    strings.Repeat("kind: secret\ndata:\n  a: ", 3000),
		"auth":    strings.Repeat("Authorization: Bearer ", 3000),
		"url":     strings.Repeat("postgres://a:", 5000),
		"spaces":  strings.Repeat(" ", 64000),
		"aaaa":    strings.Repeat("a", 64000),
		"pkjson":  strings.Repeat(`"private_key": "`, 4000),
		"dataimg": strings.Repeat("data:", 12000),
	} {
		b := []byte(text)
		t0 := time.Now()
		e.Find(b)
		d1 := time.Since(t0)
		t0 = time.Now()
		e.Pending(b)
		d2 := time.Since(t0)
		t.Logf("%-8s %6d bytes Find %v Pending %v", name, len(b), d1, d2)
	}
}
