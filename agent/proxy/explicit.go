package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/elazarl/goproxy"
)

// ServeExplicit runs an HTTPS_PROXY-style proxy on ln until ctx is done,
// for hosts where the eBPF programs cannot be used. CONNECT to a target
// host is decrypted and recorded exactly as a redirected connection is;
// CONNECT elsewhere is tunnelled untouched, and plain-HTTP requests are
// forwarded. goproxy handles the proxy protocol; decrypted connections go
// to the same HTTP/1.1+HTTP/2 server as transparent ones.
func (s *Server) ServeExplicit(ctx context.Context, ln net.Listener) error {
	p := goproxy.NewProxyHttpServer()
	p.Logger = slogPrintf{s.cfg.Logger}
	dialer := &net.Dialer{Timeout: s.cfg.DialTimeout, Control: s.cfg.Control}
	p.ConnectDial = dialer.Dial
	p.Tr = &http.Transport{DialContext: dialer.DialContext, Proxy: nil, IdleConnTimeout: 90 * time.Second}
	p.OnRequest().HandleConnectFunc(func(host string, pctx *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) {
		name, _, err := net.SplitHostPort(host)
		if err != nil {
			name = host
		}
		client, _ := netip.ParseAddrPort(pctx.Req.RemoteAddr)
		if s.decrypt == nil || !s.cfg.DecryptName(name) {
			s.cfg.Logger.Info("explicit proxy: tunnel", "client", client.String(), "host", host)
			return goproxy.OkConnect, host
		}
		return &goproxy.ConnectAction{Action: goproxy.ConnectHijack, Hijack: func(_ *http.Request, c net.Conn, _ *goproxy.ProxyCtx) {
			if _, err := c.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
				c.Close()
				return
			}
			s.cfg.Logger.Info("explicit proxy: connection decrypted", "client", client.String(), "host", host)
			s.decrypt.serve(c, &connInfo{mode: "explicit", client: client, sni: name})
		}}, host
	})
	srv := &http.Server{Handler: p, ReadHeaderTimeout: s.cfg.HelloTimeout, ErrorLog: slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelDebug)}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("proxy: explicit proxy: %w", err)
	}
	return nil
}

// slogPrintf adapts goproxy's Printf logger to slog (debug level: goproxy
// is chatty and we log the events that matter ourselves).
type slogPrintf struct{ l *slog.Logger }

func (s slogPrintf) Printf(format string, v ...any) { s.l.Debug(fmt.Sprintf(format, v...)) }
