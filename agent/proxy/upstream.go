package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
)

// UpstreamConfig configures the transport to the API.
type UpstreamConfig struct {
	// ExtraCAs is a PEM file of CAs trusted besides the system roots (a
	// corporate egress proxy's, or a test upstream's). Empty: none.
	ExtraCAs string
	// Control is the dialer Control of upstream sockets (see
	// intercept.AgentSockets.Control). Nil: none.
	Control func(network, address string, c syscall.RawConn) error
	// ResponseHeaderTimeout bounds the wait for response headers. Models
	// that think long answer late. Zero: 10 minutes.
	ResponseHeaderTimeout time.Duration
}

type dialTargetKey struct{}

// withDialTarget makes the upstream dialer connect to dst instead of
// resolving the request's host: the destination the client chose.
func withDialTarget(ctx context.Context, dst netip.AddrPort) context.Context {
	return context.WithValue(ctx, dialTargetKey{}, dst)
}

// NewUpstreamTransport returns the transport the proxy uses upstream:
// certificates verified against the system roots plus ExtraCAs, the
// request's host name as SNI, HTTP/2 when the API offers it, and pooled
// connections, one pool per original destination (see Upstream).
func NewUpstreamTransport(cfg UpstreamConfig) (*Upstream, error) {
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	if cfg.ExtraCAs != "" {
		pem, err := os.ReadFile(cfg.ExtraCAs)
		if err != nil {
			return nil, fmt.Errorf("proxy: reading upstream CAs: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("proxy: no PEM certificate in %s", cfg.ExtraCAs)
		}
	}
	if cfg.ResponseHeaderTimeout == 0 {
		cfg.ResponseHeaderTimeout = 10 * time.Minute
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: cfg.Control}
	base := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dst, ok := ctx.Value(dialTargetKey{}).(netip.AddrPort); ok {
				addr = dst.String()
			}
			return dialer.DialContext(ctx, network, addr)
		},
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
	}
	return &Upstream{base: base, byDst: map[netip.AddrPort]*dstTransport{}, max: maxDestinations}, nil
}

// maxDestinations bounds the pools kept: the least recently used one
// beyond it is closed once idle. Target host names have a few addresses
// each; a CIDR target may have many.
const maxDestinations = 256

// Upstream keeps one pooled *http.Transport per original destination.
// http.Transport pools connections by the URL's host, which is the
// server name: with one transport, a connection dialled to the address
// one client chose could carry the request of another client that chose
// another address of the same name, and its record would name the wrong
// destination.
type Upstream struct {
	base  *http.Transport // requests without a kernel destination (explicit mode)
	mu    sync.Mutex
	byDst map[netip.AddrPort]*dstTransport
	max   int
	tick  uint64
}

type dstTransport struct {
	t    *http.Transport
	used uint64
}

// RoundTrip sends req over the pool of its original destination.
func (u *Upstream) RoundTrip(req *http.Request) (*http.Response, error) {
	dst, ok := req.Context().Value(dialTargetKey{}).(netip.AddrPort)
	if !ok {
		return u.base.RoundTrip(req)
	}
	return u.transport(dst).RoundTrip(req)
}

func (u *Upstream) transport(dst netip.AddrPort) *http.Transport {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.tick++
	if d, ok := u.byDst[dst]; ok {
		d.used = u.tick
		return d.t
	}
	if len(u.byDst) >= u.max {
		var oldest netip.AddrPort
		var at uint64 = ^uint64(0)
		for k, d := range u.byDst {
			if d.used < at {
				oldest, at = k, d.used
			}
		}
		// Requests in flight on it finish; its idle connections go now,
		// the rest when they are done (IdleConnTimeout).
		u.byDst[oldest].t.CloseIdleConnections()
		delete(u.byDst, oldest)
	}
	d := &dstTransport{t: u.base.Clone(), used: u.tick}
	u.byDst[dst] = d
	return d.t
}

// CloseIdleConnections closes the idle connections of every pool.
func (u *Upstream) CloseIdleConnections() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.base.CloseIdleConnections()
	for _, d := range u.byDst {
		d.t.CloseIdleConnections()
	}
}
