// Package proxy accepts the connections that the eBPF programs redirect to
// the agent (and, in explicit mode, HTTPS_PROXY clients), finds where each
// one was going and who made it, and peeks at its TLS ClientHello. When the
// server name is a target, it terminates TLS with a certificate from the
// node CA, speaks HTTP/1.1 or HTTP/2 as the client chose, records every
// exchange and forwards it to the original destination over verified TLS.
// Everything else (other names on a shared address, no SNI, not TLS) is
// spliced to the original destination byte for byte.
package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/promptrail/promptrail/agent/intercept"
)

// Origins finds the origin of a redirected connection by its client
// address; *intercept.Interceptor implements it.
type Origins interface {
	Origin(client netip.AddrPort) (intercept.Origin, error)
}

// Config configures a Server.
type Config struct {
	// Listeners accept the redirected connections (see Listen). Required;
	// Serve closes them.
	Listeners []net.Listener
	// Origins resolves client addresses to origins. Required.
	Origins Origins
	// Mark is the SO_MARK put on upstream sockets, so that the programs do
	// not redirect the proxy's own connections back to it. Zero: none (only
	// for tests without programs attached).
	Mark uint32
	// DialTimeout bounds the connect to the original destination. Zero: 10s.
	DialTimeout time.Duration
	// Logger gets one line per connection. Nil: slog.Default().
	Logger *slog.Logger
	// Decrypt enables TLS termination for server names that DecryptName
	// accepts. Nil: every connection is spliced.
	Decrypt *DecryptConfig
	// DecryptName reports whether a ClientHello's server name is a target.
	DecryptName func(serverName string) bool
	// HelloTimeout bounds the wait for a client's first bytes. Zero: 10s.
	HelloTimeout time.Duration
	// MaxConnsPerWorkload caps the concurrent redirected connections of
	// one client cgroup; connections over it are closed at once (and
	// logged). Zero: 256.
	MaxConnsPerWorkload int
	// OnConnCap, if set, is called for each connection closed because its
	// workload's cap was reached.
	OnConnCap func()
}

// Server is the redirect target of the eBPF programs.
type Server struct {
	cfg       Config
	listeners []net.Listener
	dialer    net.Dialer
	decrypt   *decrypter
	perCgroup *connLimiter

	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// Listen opens a listener on each address. Open them before the programs
// are attached, so that no redirected connect finds the port closed.
func Listen(addrs []netip.AddrPort) ([]net.Listener, error) {
	var lns []net.Listener
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a.String())
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("proxy: listening on %s: %w", a, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// New returns a Server for cfg; Serve runs it.
func New(cfg Config) (*Server, error) {
	if len(cfg.Listeners) == 0 {
		return nil, errors.New("proxy: no listener")
	}
	if cfg.Origins == nil {
		return nil, errors.New("proxy: no origin lookup")
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HelloTimeout == 0 {
		cfg.HelloTimeout = 10 * time.Second
	}
	if cfg.MaxConnsPerWorkload == 0 {
		cfg.MaxConnsPerWorkload = defaultMaxConnsPerWorkload
	}
	s := &Server{cfg: cfg, listeners: cfg.Listeners, conns: map[net.Conn]struct{}{},
		perCgroup: newConnLimiter(cfg.MaxConnsPerWorkload)}
	s.dialer = net.Dialer{Timeout: cfg.DialTimeout, Control: intercept.MarkControl(cfg.Mark)}
	if cfg.Decrypt != nil {
		if cfg.DecryptName == nil {
			return nil, errors.New("proxy: decryption needs DecryptName")
		}
		dc := *cfg.Decrypt
		if dc.Logger == nil {
			dc.Logger = cfg.Logger
		}
		d, err := newDecrypter(dc)
		if err != nil {
			return nil, err
		}
		s.decrypt = d
	}
	return s, nil
}

// Addrs returns the addresses the server listens on (useful with port 0).
func (s *Server) Addrs() []netip.AddrPort {
	out := make([]netip.AddrPort, len(s.listeners))
	for i, ln := range s.listeners {
		out[i] = ln.Addr().(*net.TCPAddr).AddrPort()
	}
	return out
}

// Serve accepts connections until ctx is done, then closes the listeners
// and the connections in flight and returns once every handler is done.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, len(s.listeners))
	for _, ln := range s.listeners {
		go func() { errc <- s.accept(ctx, ln) }()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	s.closeListeners()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	if s.decrypt != nil {
		s.decrypt.close()
	}
	s.wg.Wait()
	return err
}

func (s *Server) accept(ctx context.Context, ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// EMFILE and the like: back off rather than spin or exit.
			s.cfg.Logger.Error("accept failed", "listen", ln.Addr().String(), "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		s.track(c, true)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.track(c, false)
			s.handle(ctx, c.(*net.TCPConn))
		}()
	}
}

func (s *Server) track(c net.Conn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
}

func (s *Server) closeListeners() {
	for _, ln := range s.listeners {
		ln.Close()
	}
}

// handle decides, from the ClientHello, whether to decrypt a redirected
// connection or splice it, and logs one line about it when it ends.
func (s *Server) handle(ctx context.Context, c *net.TCPConn) {
	start := time.Now()
	client := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	o, err := s.cfg.Origins.Origin(client)
	if err != nil {
		s.cfg.Logger.Warn("connection refused: no origin", "client", client.String(), "err", err)
		c.Close()
		return
	}
	log := s.cfg.Logger.With(originAttrs(client, o)...)
	release := s.admit(o, log)
	if release == nil {
		c.Close()
		return
	}
	defer func() { release() }() // unless a decrypted connection took it over
	br := bufio.NewReaderSize(c, peekBufferSize)
	c.SetReadDeadline(time.Now().Add(s.cfg.HelloTimeout))
	hello, herr := peekClientHello(br)
	c.SetReadDeadline(time.Time{})
	pc := &peekedConn{TCPConn: c, br: br}
	if herr != nil && !errors.Is(herr, errNotTLS) && br.Buffered() == 0 {
		log.Warn("connection closed: no ClientHello", "err", herr, "duration_ms", msSince(start))
		c.Close()
		return
	}
	if herr == nil && s.decrypt != nil && s.cfg.DecryptName(hello.ServerName) {
		log.Info("connection decrypted", "sni", hello.ServerName, "alpn_offered", hello.ALPN)
		// Resolved while the client handshakes; spliced connections,
		// which are not recorded, never pay for it.
		var ident *identity
		if s.decrypt.cfg.Identify != nil {
			ident = startIdentify(s.decrypt.cfg.Identify, o)
		}
		s.decrypt.serve(releaseOnClose(pc, release), &connInfo{mode: "transparent", client: client, sni: hello.ServerName, origin: &o, ident: ident})
		release = func() {}
		return
	}
	defer c.Close()
	reason := "server name is not a target"
	switch {
	case herr != nil:
		reason = herr.Error()
	case s.decrypt == nil:
		reason = "decryption off"
	}
	up, err := s.dialer.DialContext(ctx, "tcp", o.Dst.String())
	if err != nil {
		log.Warn("connection failed: original destination unreachable", "err", err,
			"duration_ms", msSince(start))
		return
	}
	defer up.Close()
	sent, received, err := splice(pc, up.(*net.TCPConn))
	attrs := []any{"sni", hello.ServerName, "splice_reason", reason, "bytes_sent", sent, "bytes_received", received, "duration_ms", msSince(start)}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	log.Info("connection", attrs...)
}

// OriginAttrs are the log attributes that describe a connection's origin.
func originAttrs(client netip.AddrPort, o intercept.Origin) []any {
	return []any{
		"client", client.String(), "orig_dst", o.Dst.String(), "pid", o.TGID, "tid", o.PID,
		"uid", o.UID, "gid", o.GID, "comm", o.Comm, "cgroup_id", o.CgroupID, "netns_cookie", o.NetnsCookie,
	}
}

// splice copies both ways until both sides are done, passing half-closes
// on. Between two TCP sockets io.Copy uses splice(2): no copy to user space.
func splice(client *peekedConn, upstream *net.TCPConn) (sent, received int64, err error) {
	type result struct {
		n   int64
		err error
	}
	upc := make(chan result, 1)
	go func() {
		n, err := io.Copy(upstream, client)
		if err != nil {
			// A broken side ends the exchange: unblock the other copy.
			client.Close()
			upstream.Close()
		} else {
			upstream.CloseWrite()
		}
		upc <- result{n, err}
	}()
	received, derr := client.ReadFrom(upstream)
	if derr != nil {
		client.Close()
		upstream.Close()
	} else {
		client.CloseWrite()
	}
	r := <-upc
	return r.n, received, errors.Join(ignoreClosed(r.err), ignoreClosed(derr))
}

func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func msSince(t time.Time) float64 {
	return float64(time.Since(t).Microseconds()) / 1000
}
