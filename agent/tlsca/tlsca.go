// Package tlsca is the agent's certificate authority: a node CA (ECDSA
// P-256) that clients trust, and short-lived leaf certificates minted from
// it, one per server name, for the connections the agent decrypts.
//
// A new CA is name-constrained (RFC 5280, critical) to the target host
// names, so that its key, if stolen, signs nothing else that a client
// accepts. The CA's files live in the agent's data directory (store.go),
// which also holds a rotation under way: the next CA, trusted by clients
// before the agent signs with it, and the old one, trusted until it is
// retired.
package tlsca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 24 * time.Hour
	// A cached leaf is replaced once less than this is left of it.
	leafRenewBefore = 2 * time.Hour
	// Clocks of clients may run behind the node's.
	backdate = time.Hour
	// noName is what a CA for no target name permits: the reserved
	// top-level domain "invalid" (RFC 6761, section 6.4), which no client
	// ever asks for.
	noName = "invalid"
)

// ErrNotPermitted is returned for a leaf that the CA's name constraints do
// not allow: clients would reject it, so it is not served.
var ErrNotPermitted = errors.New("outside the CA's name constraints")

// Constraints say what a new CA may sign.
type Constraints struct {
	// Names are the DNS names that leaves may carry, each with its
	// subdomains (a critical name-constraints extension; IP addresses are
	// all excluded, and URIs and e-mail addresses limited to "invalid").
	// Empty: only the reserved name "invalid", so the CA signs nothing a
	// client accepts; the proxy decrypts by server name only, so targets
	// given as IP addresses or prefixes need no leaves.
	Names []string
	// Unconstrained creates a CA without name constraints, which signs any
	// name: for clients that reject a critical name-constraints extension,
	// at the price that a stolen key impersonates every site to them.
	Unconstrained bool
	// Node names the node in the new CA's subject, so that a trust store
	// (or an operator reading one) tells the CAs of a cluster's nodes
	// apart. Empty: the host name, which in a pod of the host's network
	// can differ from the node name (cloud providers), hence the field.
	Node string
}

// CA mints leaf certificates. It is safe for concurrent use.
type CA struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
	roots   *x509.CertPool // the CA alone, to check each leaf as clients will
	now     func() time.Time

	mu     sync.Mutex
	leaves map[string]*tls.Certificate
}

// Load reads a CA certificate and its private key (PEM; PKCS#8, SEC 1 or
// PKCS#1), for clusters that distribute one CA to every node.
func Load(certPath, keyPath string) (*CA, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("tlsca: reading CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("tlsca: reading CA key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tlsca: CA certificate %s and key %s: %w", certPath, keyPath, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("tlsca: parsing CA certificate: %w", err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("tlsca: %s is not a CA certificate (needs basic constraints CA:true and keyCertSign)", certPath)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("tlsca: CA key cannot sign")
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return &CA{cert: cert, key: signer, certPEM: pemCert(cert.Raw), roots: roots, now: time.Now,
		leaves: map[string]*tls.Certificate{}}, nil
}

func newCA(now time.Time, c Constraints) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsca: generating CA key: %w", err)
	}
	host := c.Node
	if host == "" {
		host, _ = os.Hostname()
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		// The date tells a CA from the one it replaces in trust stores.
		Subject: pkix.Name{Organization: []string{"promptrail"},
			CommonName: fmt.Sprintf("promptrail node CA %s %s", host, now.UTC().Format("2006-01-02"))},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	if !c.Unconstrained {
		constrain(tmpl, c.Names)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsca: creating CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsca: encoding CA key: %w", err)
	}
	return pemCert(der), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// constrain limits what tmpl may sign to names and their subdomains.
func constrain(tmpl *x509.Certificate, names []string) {
	permitted := []string{}
	for _, n := range names {
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		if n != "" && net.ParseIP(n) == nil && !slices.Contains(permitted, n) {
			permitted = append(permitted, n)
		}
	}
	if len(permitted) == 0 {
		permitted = []string{noName}
	}
	// RFC 5280 section 4.2.1.10: conforming CAs MUST mark it critical, so
	// a client that cannot enforce it rejects the CA rather than trusting
	// it for every name.
	tmpl.PermittedDNSDomainsCritical = true
	tmpl.PermittedDNSDomains = permitted
	tmpl.ExcludedIPRanges = []*net.IPNet{
		{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)},
	}
	tmpl.PermittedURIDomains = []string{noName}
	tmpl.PermittedEmailAddresses = []string{noName}
}

// CertPEM returns the CA certificate that clients must trust.
func (c *CA) CertPEM() []byte { return c.certPEM }

// Certificate returns the CA certificate.
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// Check mints (and caches) a leaf for each name and returns the names the
// CA may not sign: clients would reject their leaves.
func (c *CA) Check(names []string) (outside []string, err error) {
	for _, n := range names {
		_, err := c.Leaf(n)
		if errors.Is(err, ErrNotPermitted) {
			outside = append(outside, n)
			continue
		}
		if err != nil {
			return nil, err
		}
	}
	return outside, nil
}

// Leaf returns a certificate for serverName signed by the CA, from the
// cache while it has more than leafRenewBefore left. A leaf that the CA's
// name constraints do not allow is an error wrapping ErrNotPermitted.
func (c *CA) Leaf(serverName string) (*tls.Certificate, error) {
	if serverName == "" {
		return nil, errors.New("tlsca: no server name to issue a certificate for")
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if l, ok := c.leaves[serverName]; ok && l.Leaf.NotAfter.Sub(now) > leafRenewBefore {
		return l, nil
	}
	l, err := c.mint(serverName, now)
	if err != nil {
		return nil, err
	}
	c.leaves[serverName] = l
	return l, nil
}

func (c *CA) mint(serverName string, now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tlsca: generating key for %s: %w", serverName, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{"promptrail"}, CommonName: serverName},
		DNSNames:     []string{serverName},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		return nil, fmt.Errorf("tlsca: issuing certificate for %s: %w", serverName, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	// Verified as a client will, so that a leaf clients reject is an error
	// here, naming the reason, rather than a failed handshake there.
	_, err = leaf.Verify(x509.VerifyOptions{DNSName: serverName, Roots: c.roots, CurrentTime: now})
	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) && invalid.Reason == x509.CANotAuthorizedForThisName {
		return nil, fmt.Errorf("tlsca: %s: %w (the CA permits %s)", serverName, ErrNotPermitted, strings.Join(c.cert.PermittedDNSDomains, ", "))
	}
	if err != nil {
		return nil, fmt.Errorf("tlsca: the leaf for %s does not verify against the CA: %w", serverName, err)
	}
	return &tls.Certificate{Certificate: [][]byte{der, c.cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// GetCertificate serves tls.Config.GetCertificate: a leaf for the SNI.
func (c *CA) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.Leaf(hello.ServerName)
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
