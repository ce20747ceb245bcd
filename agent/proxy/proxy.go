// Package proxy accepts the connections that the eBPF programs redirect to
// the agent (and, in explicit mode, HTTPS_PROXY clients), finds where each
// one was going and who made it, and reads its whole TLS ClientHello. When
// the server name is a target, it terminates TLS with a certificate from
// the node CA, speaks HTTP/1.1 or HTTP/2 as the client chose, records every
// exchange and forwards it to the original destination over verified TLS.
// A connection with another server name or none (or not TLS) is spliced to
// the original destination byte for byte or refused, as Config.Undecrypted
// decides, and either way leaves a connection record. A hello that cannot
// be read in full (slow, oversized, malformed) is refused and recorded:
// nothing reaches a target address unrecorded.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/promptrail/promptrail/agent/intercept"
	"github.com/promptrail/promptrail/agent/recorder"
	"github.com/promptrail/promptrail/audit"
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
	// Control is the dialer Control of upstream sockets:
	// intercept.AgentSockets.Control, so that the programs do not redirect
	// the proxy's own connections back to it. Nil: none (only for tests
	// without programs attached).
	Control func(network, address string, c syscall.RawConn) error
	// DialTimeout bounds the connect to the original destination. Zero: 10s.
	DialTimeout time.Duration
	// Logger gets one line per connection. Nil: slog.Default().
	Logger *slog.Logger
	// Decrypt enables TLS termination for server names that DecryptName
	// accepts. Nil: every connection is spliced.
	Decrypt *DecryptConfig
	// DecryptName reports whether a ClientHello's server name is a target.
	DecryptName func(serverName string) bool
	// HelloTimeout bounds the wait for a client's whole ClientHello. Zero:
	// 10s.
	HelloTimeout time.Duration
	// PeerOrigin, if set, finds the local process behind an explicit-proxy
	// client's connection (client and server as the proxy sees them), so
	// that its records name a workload; the kernel gives no origin there.
	PeerOrigin func(client, server netip.AddrPort) (intercept.Origin, error)
	// Undecrypted decides whether a connection that is not decrypted is
	// spliced (true) or refused: class is ClassOtherSNI (a server name
	// that is not a target), ClassNoSNI (a hello without one) or
	// ClassNotTLS. Nil: every such connection is spliced.
	Undecrypted func(dst netip.AddrPort, class string) (splice bool)
	// MaxConnsPerWorkload caps the concurrent redirected connections of
	// one client cgroup; connections over it are closed at once (and
	// logged). Zero: 256.
	MaxConnsPerWorkload int
	// OnConnRefused, if set, is called for each connection closed because
	// its workload's cap was reached ("promptrail_conn_cap") or because it
	// made connection records faster than ConnectionRecordRate
	// ("promptrail_connection_record_rate").
	OnConnRefused func(code string)
	// ConnectionRecordRate bounds the connection records (of connections
	// that are not decrypted) one client cgroup makes per second, with a
	// burst of four seconds' worth; over it a connection is refused
	// without a record. Zero: 20.
	ConnectionRecordRate float64
}

// Classes of connections that are not decrypted.
const (
	ClassOtherSNI = "other-sni"
	ClassNoSNI    = "no-sni"
	ClassNotTLS   = "not-tls"
	ruleBadHello  = "bad-hello"
	ruleSpool     = "spool"
)

// Server is the redirect target of the eBPF programs.
type Server struct {
	cfg       Config
	listeners []net.Listener
	dialer    net.Dialer
	decrypt   *decrypter
	perCgroup *connLimiter
	records   *recordLimiter

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
	if cfg.ConnectionRecordRate == 0 {
		cfg.ConnectionRecordRate = defaultConnectionRecordRate
	}
	s := &Server{cfg: cfg, listeners: cfg.Listeners, conns: map[net.Conn]struct{}{},
		perCgroup: newConnLimiter(cfg.MaxConnsPerWorkload),
		records:   newRecordLimiter(cfg.ConnectionRecordRate, max(1, int(4*cfg.ConnectionRecordRate)))}
	s.dialer = net.Dialer{Timeout: cfg.DialTimeout, Control: cfg.Control}
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
// connection, splice it or refuse it, and logs one line about it.
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
	c.SetReadDeadline(time.Now().Add(s.cfg.HelloTimeout))
	raw, hello, herr := readClientHello(c)
	c.SetReadDeadline(time.Time{})
	if len(raw) == 0 {
		log.Info("connection closed before sending anything", "err", herr, "duration_ms", msSince(start))
		c.Close()
		return
	}
	info := &connInfo{mode: "transparent", client: client, sni: hello.ServerName, origin: &o}
	if s.decrypt != nil && s.decrypt.cfg.Identify != nil {
		// Resolved while the client handshakes (or the splice runs).
		info.ident = startIdentify(s.decrypt.cfg.Identify, o)
	}
	v := s.verdict(o.Dst, raw, hello, herr)
	if v.action == actionDecrypt {
		log.Info("connection decrypted", "sni", hello.RawServerName, "alpn_offered", hello.ALPN)
		s.decrypt.serve(releaseOnClose(&helloConn{TCPConn: c, pending: raw}, release), info)
		release = func() {}
		return
	}
	defer c.Close()
	if !s.records.allow(o.CgroupID) {
		if s.cfg.OnConnRefused != nil {
			s.cfg.OnConnRefused("promptrail_connection_record_rate")
		}
		log.Debug("connection refused without a record: the workload makes connection records too fast",
			"rule", v.rule, "records_per_second", s.cfg.ConnectionRecordRate)
		return
	}
	conn := audit.Connection{Mode: info.mode, Client: client.String(), OrigDst: o.Dst.String(),
		SNI: hello.RawServerName, ALPNOffered: hello.ALPN}
	ex := s.beginConnection(info, conn)
	attrs := []any{"sni", hello.RawServerName, "rule", v.rule, "reason", v.why, "hello_bytes", len(raw)}
	if v.action == actionRefuse {
		ex.Refuse(v.rule, v.why)
		log.Warn("connection refused", append(attrs, "duration_ms", msSince(start))...)
		return
	}
	ex.Spliced(v.rule, v.why)
	if !s.spoolConnection(ctx, ex, log) {
		return
	}
	up, err := s.dialer.DialContext(ctx, "tcp", o.Dst.String())
	if err != nil {
		ex.SpliceDone(0, 0, fmt.Errorf("original destination unreachable: %w", err))
		log.Warn("connection failed: original destination unreachable", append(attrs, "err", err, "duration_ms", msSince(start))...)
		return
	}
	defer up.Close()
	sent, received, err := splice(&helloConn{TCPConn: c, pending: raw}, up.(*net.TCPConn))
	ex.SpliceDone(sent, received, err)
	attrs = append(attrs, "bytes_sent", sent, "bytes_received", received, "duration_ms", msSince(start))
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	log.Info("connection", append(attrs, "action", "splice")...)
}

type action int

const (
	actionRefuse action = iota
	actionSplice
	actionDecrypt
)

// verdict is what happens to a connection, and why.
type verdict struct {
	action
	rule, why string
}

// verdict decides from the hello: a target name is decrypted if the TLS
// server can take the hello; what cannot be read is refused; the rest is
// spliced or refused as Config.Undecrypted says.
func (s *Server) verdict(dst netip.AddrPort, raw []byte, hello clientHello, herr error) verdict {
	class := ClassOtherSNI
	switch {
	case herr != nil && !errors.Is(herr, errNotTLS):
		return verdict{actionRefuse, ruleBadHello, "unreadable ClientHello: " + herr.Error()}
	case herr != nil:
		class = ClassNotTLS
	case hello.ServerName == "":
		class = ClassNoSNI
	case s.decrypt != nil && s.cfg.DecryptName(hello.ServerName):
		if err := stdlibAccepts(raw); err != nil {
			return verdict{actionRefuse, ruleBadHello, fmt.Sprintf("ClientHello for target %q: %v", hello.RawServerName, err)}
		}
		return verdict{action: actionDecrypt}
	}
	why := map[string]string{
		ClassOtherSNI: "server name is not a target",
		ClassNoSNI:    "ClientHello without a server name",
		ClassNotTLS:   "not TLS",
	}[class]
	if s.decrypt == nil {
		why += " (decryption off)"
	}
	if s.cfg.Undecrypted != nil && !s.cfg.Undecrypted(dst, class) {
		return verdict{actionRefuse, class, why + "; refused by the setting for this target"}
	}
	return verdict{actionSplice, class, why}
}

// beginConnection starts the record of a connection that is not
// decrypted; without decryption there is no recorder, and the record is
// a no-op.
func (s *Server) beginConnection(info *connInfo, conn audit.Connection) *recorder.Exchange {
	if s.decrypt == nil {
		return nil
	}
	who, late := s.decrypt.workload(info)
	ex := s.decrypt.cfg.Recorder.BeginConnection(conn, who)
	if late != nil {
		ex.FillWorkloadLater(late)
	}
	return ex
}

// spoolConnection puts a spliced connection's record on durable record
// before any byte goes upstream, as for a request; it reports whether the
// splice may go on, and has refused it if not.
func (s *Server) spoolConnection(ctx context.Context, ex *recorder.Exchange, log *slog.Logger) bool {
	if ex == nil {
		return true
	}
	if err := s.decrypt.spooled(ctx, ex, log, "connection"); err != nil {
		ex.Refuse(ruleSpool, "audit spool: "+err.Error())
		return false
	}
	return true
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
func splice(client *helloConn, upstream *net.TCPConn) (sent, received int64, err error) {
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
