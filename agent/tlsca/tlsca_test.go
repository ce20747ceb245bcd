package tlsca

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCreateThenLoadKeepsTheCA(t *testing.T) {
	dir := t.TempDir()
	a, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	b, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if string(a.CertPEM()) != string(b.CertPEM()) {
		t.Fatal("second start made a new CA")
	}
	if a.Certificate().PublicKeyAlgorithm != x509.ECDSA || !a.Certificate().IsCA {
		t.Fatalf("CA is %v, CA=%v; want an ECDSA CA", a.Certificate().PublicKeyAlgorithm, a.Certificate().IsCA)
	}
}

func TestLeafVerifiesAgainstTheCAAndIsCached(t *testing.T) {
	ca, err := LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Leaf("api.openai.com")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Certificate())
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "api.openai.com", Roots: pool}); err != nil {
		t.Fatalf("leaf does not verify: %v", err)
	}
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "other.example", Roots: pool}); err == nil {
		t.Fatal("leaf verifies for another name")
	}
	if d := leaf.Leaf.NotAfter.Sub(time.Now()); d > 25*time.Hour {
		t.Errorf("leaf lives %v, want short-lived", d)
	}
	again, _ := ca.Leaf("api.openai.com")
	if again != leaf {
		t.Error("leaf was not cached")
	}
	ca.now = func() time.Time { return time.Now().Add(23 * time.Hour) }
	renewed, _ := ca.Leaf("api.openai.com")
	if renewed == leaf {
		t.Error("a leaf near its end was served from the cache")
	}
	if _, err := ca.GetCertificate(&tls.ClientHelloInfo{}); err == nil {
		t.Error("a leaf without a server name was issued")
	}
}

func TestLoadRejectsNonCA(t *testing.T) {
	ca, err := LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := ca.Leaf("x.example")
	dir := t.TempDir()
	certPEM := pemCert(leaf.Certificate[0])
	keyPEM := pemKey(t, leaf.PrivateKey)
	os.WriteFile(filepath.Join(dir, "c"), certPEM, 0o600)
	os.WriteFile(filepath.Join(dir, "k"), keyPEM, 0o600)
	if _, err := Load(filepath.Join(dir, "c"), filepath.Join(dir, "k")); err == nil {
		t.Fatal("a leaf certificate was accepted as CA")
	}
	if _, err := Load(filepath.Join(dir, "missing"), filepath.Join(dir, "k")); err == nil {
		t.Fatal("a missing file was accepted")
	}
}
