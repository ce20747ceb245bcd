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

// NewUpstreamTransport returns the one transport the proxy uses upstream:
// certificates verified against the system roots plus ExtraCAs, the
// request's host name as SNI, HTTP/2 when the API offers it, and pooled
// connections.
func NewUpstreamTransport(cfg UpstreamConfig) (*http.Transport, error) {
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
	return &http.Transport{
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
	}, nil
}
