package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"

	"github.com/promptrail/promptrail/audit"
)

// ServeExplicit runs an HTTPS_PROXY-style proxy on ln until ctx is done,
// for hosts where the eBPF programs cannot be used. It is not a general
// forward proxy: CONNECT to a target host is decrypted and recorded
// exactly as a redirected connection is; CONNECT anywhere else and every
// plain-HTTP request are refused with 403 and recorded, so the agent's
// unintercepted sockets never carry a workload's traffic elsewhere.
func (s *Server) ServeExplicit(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           http.HandlerFunc(s.explicit),
		ReadHeaderTimeout: s.cfg.HelloTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelDebug),
	}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("proxy: explicit proxy: %w", err)
	}
	return nil
}

func (s *Server) explicit(w http.ResponseWriter, r *http.Request) {
	client, _ := netip.ParseAddrPort(r.RemoteAddr)
	log := s.cfg.Logger.With("client", client.String(), "method", r.Method, "host", r.Host)
	name := r.Host
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		name = h
	}
	name = normalizeServerName(name)
	info := &connInfo{mode: "explicit", client: client, sni: name}
	if s.cfg.PeerOrigin != nil {
		la, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		server := netip.AddrPort{}
		if la != nil {
			server, _ = netip.ParseAddrPort(la.String())
		}
		if o, err := s.cfg.PeerOrigin(client, server); err == nil {
			info.peer = &o
			log = log.With("pid", o.TGID, "comm", o.Comm, "cgroup_id", o.CgroupID)
			if s.decrypt != nil && s.decrypt.cfg.Identify != nil {
				info.ident = startIdentify(s.decrypt.cfg.Identify, o)
			}
		} else {
			log.Debug("explicit proxy: client process not found", "err", err)
		}
	}
	target := r.Method == http.MethodConnect && s.decrypt != nil && validHostName(name) && s.cfg.DecryptName(name)
	if !target {
		why := "explicit proxy: only CONNECT to a target host is allowed"
		if s.decrypt != nil {
			conn := audit.Connection{Mode: "explicit", Client: client.String(), OrigDst: r.Host}
			s.beginConnection(info, conn).Refuse("not-a-target", why+"; "+r.Method+" "+r.RequestURI)
		}
		log.Warn("explicit proxy: refused", "reason", why)
		writeAPIError(w, http.StatusForbidden, "promptrail_not_a_target", "promptrail: "+why)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeAPIError(w, http.StatusHTTPVersionNotSupported, "promptrail_bad_request", "promptrail: CONNECT needs HTTP/1.1")
		return
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		log.Warn("explicit proxy: hijack failed", "err", err)
		return
	}
	if brw.Reader.Buffered() > 0 {
		// A client that sent its hello before our 200 would have those
		// bytes stuck in the server's buffer; refuse rather than lose them.
		log.Warn("explicit proxy: refused a client that did not wait for the CONNECT answer")
		c.Close()
		return
	}
	if _, err := c.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		c.Close()
		return
	}
	log.Info("explicit proxy: connection decrypted")
	s.decrypt.serve(c, info)
}
