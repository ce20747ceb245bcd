package fakeopenai

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// DefaultCertHosts are the names every generated certificate is valid for.
var DefaultCertHosts = []string{"api.openai.com", "localhost", "127.0.0.1", "::1"}

// certAuthority is a throwaway CA that issues the fake's certificates.
type certAuthority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func newCA() (*certAuthority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "fakeopenai test CA", Organization: []string{"promptrail fakeopenai"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &certAuthority{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// issue makes a server certificate for hosts (DNS names or IP addresses).
func (ca *certAuthority) issue(hosts []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	sn, err := serial()
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// certHosts is DefaultCertHosts plus extra, without duplicates or blanks.
func certHosts(extra ...string) []string {
	out := slices.Clone(DefaultCertHosts)
	for _, h := range extra {
		if h != "" && !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

// TLSServer is a fake served over HTTPS (HTTP/2 and HTTP/1.1) for tests.
type TLSServer struct {
	*Server
	HTTP     *httptest.Server
	URL      string // "https://127.0.0.1:port"
	BaseURL  string // URL + "/v1/", for SDK base URLs
	CAPEM    []byte // the CA certificate that issued the server's certificate
	CertPool *x509.CertPool
}

// Client returns an HTTP client that trusts the fake's CA and prefers HTTP/2.
func (t *TLSServer) Client() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: t.CertPool}
	tr.ForceAttemptHTTP2 = true
	return &http.Client{Transport: tr}
}

// NewTLSServer starts the fake over TLS on addr (e.g. "127.0.0.2:443"; ""
// means "127.0.0.1:0") with HTTP/2 enabled, using a certificate issued by a
// fresh CA for DefaultCertHosts, cfg.CertHosts and the listening IP. It is
// closed by tb.Cleanup, stalled streams included.
func NewTLSServer(tb testing.TB, cfg Config, addr string) *TLSServer {
	tb.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatalf("fakeopenai: listen %s: %v", addr, err)
	}
	ip := ln.Addr().(*net.TCPAddr).IP.String()
	ca, err := newCA()
	if err != nil {
		ln.Close()
		tb.Fatalf("fakeopenai: CA: %v", err)
	}
	cert, err := ca.issue(certHosts(append([]string{ip}, cfg.CertHosts...)...))
	if err != nil {
		ln.Close()
		tb.Fatalf("fakeopenai: certificate: %v", err)
	}
	fake := New(cfg)
	ts := httptest.NewUnstartedServer(fake)
	ts.Listener.Close()
	ts.Listener = ln
	ts.EnableHTTP2 = true
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	ts.Config.ErrorLog = log.New(discard{}, "", 0)
	ts.StartTLS()
	tb.Cleanup(func() {
		fake.Close()
		ts.Close()
	})
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return &TLSServer{Server: fake, HTTP: ts, URL: ts.URL, BaseURL: ts.URL + "/v1/", CAPEM: ca.pem, CertPool: pool}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

type logfWriter func(string, ...any)

func (f logfWriter) Write(p []byte) (int, error) {
	f("%s", string(trimNewline(p)))
	return len(p), nil
}

func trimNewline(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}

// Serve runs the fake over HTTPS (HTTP/2 and HTTP/1.1) on addr until ctx
// ends, then shuts down (ending stalled streams) and returns nil. With an
// empty certFile it generates a CA and a certificate from it for
// DefaultCertHosts, cfg.CertHosts and addr's host, and writes the CA
// certificate to a temporary file whose path is logged (for curl --cacert or
// NODE_EXTRA_CA_CERTS); the file is removed when Serve returns. logf (may be
// nil) gets startup lines and, unless cfg.Logf is set, one line per request.
// Unless cfg.MaxRequests is set, only the last 1000 requests are kept.
func Serve(ctx context.Context, addr, certFile, keyFile string, cfg Config, logf func(string, ...any)) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if cfg.Logf == nil {
		cfg.Logf = logf
	}
	if cfg.MaxRequests == 0 {
		cfg.MaxRequests = 1000
	}
	var cert tls.Certificate
	var err error
	switch {
	case certFile != "" && keyFile != "":
		if cert, err = tls.LoadX509KeyPair(certFile, keyFile); err != nil {
			return fmt.Errorf("fakeopenai: %w", err)
		}
	case certFile != "" || keyFile != "":
		return errors.New("fakeopenai: give both a certificate and a key file, or neither")
	default:
		ca, err := newCA()
		if err != nil {
			return fmt.Errorf("fakeopenai: CA: %w", err)
		}
		host, _, _ := net.SplitHostPort(addr)
		if cert, err = ca.issue(certHosts(append([]string{host}, cfg.CertHosts...)...)); err != nil {
			return fmt.Errorf("fakeopenai: certificate: %w", err)
		}
		f, err := os.CreateTemp("", "fakeopenai-ca-*.pem")
		if err != nil {
			return fmt.Errorf("fakeopenai: %w", err)
		}
		defer os.Remove(f.Name())
		_, err = f.Write(ca.pem)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("fakeopenai: write CA: %w", err)
		}
		names := slices.Clone(cert.Leaf.DNSNames)
		for _, ip := range cert.Leaf.IPAddresses {
			names = append(names, ip.String())
		}
		logf("fakeopenai: CA certificate in %s (curl --cacert %[1]s, NODE_EXTRA_CA_CERTS=%[1]s); server certificate for %s",
			f.Name(), strings.Join(names, ", "))
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("fakeopenai: %w", err)
	}
	fake := New(cfg)
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	srv := &http.Server{
		Handler:           fake,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		Protocols:         &protos,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          log.New(logfWriter(logf), "", 0),
	}
	logf("fakeopenai: serving https://%s/v1/ (HTTP/2 and HTTP/1.1)", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		fake.Close()
		return fmt.Errorf("fakeopenai: %w", err)
	case <-ctx.Done():
	}
	fake.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-errc
	return nil
}
