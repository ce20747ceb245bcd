package tlsca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var targets = Constraints{Names: []string{"api.openai.com", "API.Anthropic.com."}}

func newCATest(t *testing.T, c Constraints) *CA {
	t.Helper()
	ca, err := LoadOrCreate(t.TempDir(), c)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestCreateThenLoadKeepsTheCA(t *testing.T) {
	dir := t.TempDir()
	a, err := LoadOrCreate(dir, targets)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	b, err := LoadOrCreate(dir, Constraints{Unconstrained: true})
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

func TestLoadDirNeverCreates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "typo")
	if _, err := LoadDir(dir); !errors.Is(err, ErrNoCA) {
		t.Fatalf("LoadDir of a directory without CA: %v, want ErrNoCA", err)
	}
	if _, err := ReadBundle(dir); !errors.Is(err, ErrNoCA) {
		t.Fatalf("ReadBundle of a directory without CA: %v, want ErrNoCA", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("reading a CA created %s", dir)
	}
}

func TestLeafVerifiesAgainstTheCAAndIsCached(t *testing.T) {
	ca := newCATest(t, targets)
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

// forge signs a leaf with the CA's key directly, as a thief of the key
// would, bypassing the checks of Leaf.
func forge(t *testing.T, ca *CA, dns []string, ips []net.IP) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "forged"}, DNSNames: dns, IPAddresses: ips,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// opensslVerify reports whether `openssl verify` accepts leaf under ca,
// with its output.
func opensslVerify(t *testing.T, ca, leaf *x509.Certificate) (bool, string) {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is needed to check what OpenSSL clients accept: %v", err)
	}
	dir := t.TempDir()
	caFile, leafFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "leaf.pem")
	os.WriteFile(caFile, pemCert(ca.Raw), 0o600)
	os.WriteFile(leafFile, pemCert(leaf.Raw), 0o600)
	out, err := exec.Command(bin, "verify", "-purpose", "sslserver", "-CAfile", caFile, leafFile).CombinedOutput()
	return err == nil, string(out)
}

func TestNameConstraintsLimitWhatAStolenKeySigns(t *testing.T) {
	ca := newCATest(t, targets)
	ext := slices.IndexFunc(ca.cert.Extensions, func(e pkix.Extension) bool { return e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 30}) })
	if ext < 0 || !ca.cert.Extensions[ext].Critical {
		t.Fatal("the CA has no critical name-constraints extension")
	}
	if got := ca.cert.PermittedDNSDomains; !slices.Equal(got, []string{"api.openai.com", "api.anthropic.com"}) {
		t.Fatalf("permitted names %q, want the targets, normalised", got)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	tests := []struct {
		name string
		dns  []string
		ips  []net.IP
		ok   bool
	}{
		{"target", []string{"api.openai.com"}, nil, true},
		{"second target", []string{"api.anthropic.com"}, nil, true},
		{"subdomain of a target", []string{"eu.api.openai.com"}, nil, true},
		{"another site", []string{"bank.example"}, nil, false},
		{"parent of a target", []string{"openai.com"}, nil, false},
		{"target as a prefix", []string{"api.openai.com.evil.example"}, nil, false},
		{"target with another site", []string{"api.openai.com", "bank.example"}, nil, false},
		{"IPv4 address", nil, []net.IP{net.ParseIP("192.0.2.1")}, false},
		{"IPv6 address", nil, []net.IP{net.ParseIP("2001:db8::1")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaf := forge(t, ca, tt.dns, tt.ips)
			_, err := leaf.Verify(x509.VerifyOptions{Roots: pool})
			if (err == nil) != tt.ok {
				t.Errorf("crypto/x509 verify: %v, want ok=%v", err, tt.ok)
			}
			if ok, out := opensslVerify(t, ca.cert, leaf); ok != tt.ok {
				t.Errorf("openssl verify ok=%v, want %v:\n%s", ok, tt.ok, out)
			}
		})
	}
}

func TestLeafOutsideTheConstraintsIsRefused(t *testing.T) {
	tests := []struct {
		name    string
		c       Constraints
		names   []string
		outside []string
	}{
		{"targets", targets, []string{"api.openai.com", "api.anthropic.com"}, nil},
		{"a target added later", targets, []string{"api.openai.com", "api.mistral.ai"}, []string{"api.mistral.ai"}},
		{"IP targets only", Constraints{Names: []string{"192.0.2.1"}}, []string{"api.openai.com"}, []string{"api.openai.com"}},
		{"no names", Constraints{}, []string{"api.openai.com", "invalid.example"}, []string{"api.openai.com", "invalid.example"}},
		{"unconstrained", Constraints{Unconstrained: true}, []string{"api.openai.com", "bank.example"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := newCATest(t, tt.c)
			outside, err := ca.Check(tt.names)
			if err != nil || !slices.Equal(outside, tt.outside) {
				t.Fatalf("Check(%q) = %q, %v; want %q", tt.names, outside, err, tt.outside)
			}
			for _, n := range tt.outside {
				if _, err := ca.Leaf(n); !errors.Is(err, ErrNotPermitted) {
					t.Errorf("Leaf(%s): %v, want ErrNotPermitted", n, err)
				}
			}
		})
	}
}

func TestLoadRejectsNonCA(t *testing.T) {
	ca := newCATest(t, targets)
	leaf, _ := ca.Leaf("api.openai.com")
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

// trusts reports whether a client trusting bundle accepts a leaf of ca.
func trusts(t *testing.T, bundle []byte, ca *CA) bool {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		t.Fatal("bundle holds no certificate")
	}
	leaf, err := ca.Leaf("api.openai.com")
	if err != nil {
		t.Fatal(err)
	}
	_, err = leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "api.openai.com", Roots: pool})
	return err == nil
}

func TestRotationKeepsClientsWorking(t *testing.T) {
	dir := t.TempDir()
	if created, err := Init(dir, targets); err != nil || !created {
		t.Fatalf("Init = %v, %v", created, err)
	}
	first, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := ReadBundle(dir)
	if err := RetireOld(dir); err == nil {
		t.Error("retired with no rotation under way")
	}
	if err := ActivateRotation(dir); err == nil {
		t.Error("activated with nothing prepared")
	}

	// 1. prepare: the agent still signs with the first CA; the bundle
	// that clients are given now holds both.
	wider := Constraints{Names: []string{"api.openai.com", "api.mistral.ai"}}
	if err := PrepareRotation(dir, wider); err != nil {
		t.Fatal(err)
	}
	if err := PrepareRotation(dir, wider); err == nil {
		t.Error("a second rotation was prepared over the first")
	}
	overlap, err := ReadBundle(dir)
	if err != nil || overlap.Next == nil || !overlap.Current.Equal(before.Current) {
		t.Fatalf("bundle after prepare: %+v, %v; want the current CA and the next", overlap, err)
	}
	still, _ := LoadDir(dir)
	if !still.Certificate().Equal(first.Certificate()) {
		t.Fatal("prepare changed the CA that signs")
	}
	clients := overlap.PEM()
	if !trusts(t, clients, first) {
		t.Fatal("the overlap bundle does not trust the current CA")
	}

	// 2. activate: the next CA signs; clients holding the overlap bundle
	// trust it, and the old certificate stays in the bundle.
	if err := ActivateRotation(dir); err != nil {
		t.Fatal(err)
	}
	second, err := LoadDir(dir)
	if err != nil || !second.Certificate().Equal(overlap.Next) {
		t.Fatalf("after activate the CA is not the prepared one (%v)", err)
	}
	if !slices.Equal(second.Certificate().PermittedDNSDomains, []string{"api.openai.com", "api.mistral.ai"}) {
		t.Errorf("new CA permits %q", second.Certificate().PermittedDNSDomains)
	}
	if !trusts(t, clients, second) {
		t.Fatal("clients with the overlap bundle reject the new CA")
	}
	if fi, err := os.Stat(filepath.Join(dir, KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("new CA key: %v, %v; want mode 0600", fi, err)
	}
	after, _ := ReadBundle(dir)
	if after.Next != nil || after.Old == nil || !after.Old.Equal(first.Certificate()) {
		t.Fatalf("bundle after activate: %+v; want the new CA and the old one", after)
	}
	if err := PrepareRotation(dir, wider); err == nil {
		t.Error("a rotation was prepared before the last one was retired")
	}

	// 3. retire: the old certificate leaves the bundle.
	if err := RetireOld(dir); err != nil {
		t.Fatal(err)
	}
	final, _ := ReadBundle(dir)
	if final.Old != nil || final.Next != nil || strings.Count(string(final.PEM()), "BEGIN CERTIFICATE") != 1 {
		t.Fatalf("bundle after retire: %s", final.PEM())
	}
	if trusts(t, final.PEM(), first) {
		t.Error("the final bundle still trusts the retired CA")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != CertFile && e.Name() != KeyFile {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

func TestActivateCompletesAfterACrash(t *testing.T) {
	dir := t.TempDir()
	if _, err := Init(dir, targets); err != nil {
		t.Fatal(err)
	}
	first, _ := ReadBundle(dir)
	if err := PrepareRotation(dir, targets); err != nil {
		t.Fatal(err)
	}
	next, _ := ReadBundle(dir)
	// The crash came after the certificate was moved, before the key was.
	os.WriteFile(filepath.Join(dir, OldCertFile), pemCert(first.Current.Raw), 0o644)
	if err := os.Rename(filepath.Join(dir, NextCertFile), filepath.Join(dir, CertFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDir(dir); err == nil {
		t.Fatal("a half-activated CA loaded: the certificate and key do not match")
	}
	if err := ActivateRotation(dir); err != nil {
		t.Fatal(err)
	}
	ca, err := LoadDir(dir)
	if err != nil || !ca.Certificate().Equal(next.Next) {
		t.Fatalf("after completing, the CA is not the prepared one (%v)", err)
	}
	b, _ := ReadBundle(dir)
	if b.Old == nil || !b.Old.Equal(first.Current) {
		t.Error("the old certificate was lost")
	}
}
