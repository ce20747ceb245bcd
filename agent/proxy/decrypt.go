package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/promptrail/promptrail/agent/intercept"
	"github.com/promptrail/promptrail/agent/mask"
	"github.com/promptrail/promptrail/agent/policy"
	"github.com/promptrail/promptrail/agent/recorder"
	"github.com/promptrail/promptrail/agent/tlsca"
	"github.com/promptrail/promptrail/audit"
)

// DecryptConfig configures the TLS-terminating path.
type DecryptConfig struct {
	// CA mints the certificates that clients see. Required.
	CA *tlsca.CA
	// Recorder records every exchange. Required.
	Recorder *recorder.Recorder
	// Upstream is the transport to the API (see NewUpstreamTransport).
	// Required.
	Upstream http.RoundTripper
	// MaxRequestBody is the largest request body forwarded; larger ones
	// are answered 413 and recorded. Zero: 32 MiB.
	MaxRequestBody int64
	// UpstreamIdleTimeout cancels a response that sends nothing for this
	// long (a stalled stream). Zero: 5 minutes.
	UpstreamIdleTimeout time.Duration
	// HandshakeTimeout bounds the client's TLS handshake and request
	// headers. Zero: 10s.
	HandshakeTimeout time.Duration
	// Masker replaces secrets in requests before they go upstream and in
	// responses before they reach the client. Nil: no masking.
	Masker *mask.Masker
	// MaxMaskedBody is the largest non-stream response masked as JSON on
	// its decoded strings; larger ones are masked as text. Zero: 16 MiB.
	MaxMaskedBody int64
	// Identify resolves the workload behind a connection's origin. It is
	// started when the connection arrives, so it runs while the client
	// handshakes; a request waits for it at most IdentifyWait, and a
	// record whose identity arrives later gets it before it is finished.
	// Nil: records carry the process facts the kernel gave.
	Identify func(ctx context.Context, o intercept.Origin) audit.Workload
	// IdentifyWait bounds how long a request waits for Identify. Zero:
	// 100ms.
	IdentifyWait time.Duration
	// PassUnspooled lets a request go upstream, its record flagged
	// unspooled, when its record could not be spooled (spool full, disk
	// failing). False (the default): such requests are answered 503 and
	// nothing goes out unrecorded.
	PassUnspooled bool
	// OnSpoolFailure, if set, is called for each request whose record
	// could not be spooled, with whether it went upstream anyway.
	OnSpoolFailure func(passed bool)
	// MaxInflightBytes bounds, over all connections, the bytes buffered
	// for bodies in flight: request bodies and the response bodies masked
	// whole, each charged three times (the body, its masked copy, the text
	// the record parses out of it). An eighth is kept for small bodies. A
	// request that cannot get its bytes within InflightWait is answered
	// 503 and recorded. Zero: 256 MiB.
	MaxInflightBytes int64
	// InflightWait is how long a request waits for buffer space. Zero: 2s.
	InflightWait time.Duration
	// BodyReadTimeout bounds the time to read a request body, from its
	// headers to its end; a slower one is answered 408 and recorded.
	// Zero: 30s.
	BodyReadTimeout time.Duration
	// MaskTimeout bounds the search for secrets in one body (text built
	// of keyword bait makes it expensive); a request over it is answered
	// 413, a response 502, both recorded, and neither is passed on. Zero:
	// 2s.
	MaskTimeout time.Duration
	// OnBudgetHit, if set, is called with the error code of each exchange
	// refused because a budget was hit (promptrail_memory_budget,
	// promptrail_body_timeout, promptrail_mask_budget).
	OnBudgetHit func(code string)
	// Policy decides, per request, whether it may go upstream (after
	// masking, before its record is spooled). Nil: every request that
	// passes masking goes.
	Policy *policy.Current
	// Approvals is where a request a rule holds is put to a person. Nil:
	// such requests are refused (503 promptrail_approval_unavailable).
	Approvals Approvals
	// ApprovalWait bounds how long a held request waits for a decision
	// before the client is answered 403 promptrail_approval_pending.
	// Zero: DefaultApprovalWait.
	ApprovalWait time.Duration
	// ApprovalKeepAlive is how often a streamed request held for approval
	// gets an SSE comment while it waits. Zero: DefaultApprovalKeepAlive.
	ApprovalKeepAlive time.Duration
	// Node names this node for the policy's workload.node.
	Node   string
	Logger *slog.Logger
}

// connInfo is what the proxy knows about a decrypted connection.
type connInfo struct {
	mode   string // "transparent" or "explicit"
	client netip.AddrPort
	sni    string
	origin *intercept.Origin // nil in explicit mode
	// peer is, in explicit mode, the local process found behind the
	// client's socket (Config.PeerOrigin): who, but no destination.
	peer  *intercept.Origin
	ident *identity // nil when nothing resolves identities
}

// identity is the workload resolution of a connection, in flight or done.
type identity struct {
	done chan struct{}
	w    audit.Workload
}

// identifyTimeout bounds one resolution, which may wait for the
// Kubernetes API to learn a pod that just started.
const identifyTimeout = 5 * time.Second

// startIdentify resolves o in the background.
func startIdentify(f func(context.Context, intercept.Origin) audit.Workload, o intercept.Origin) *identity {
	id := &identity{done: make(chan struct{})}
	go func() {
		defer close(id.done)
		ctx, cancel := context.WithTimeout(context.Background(), identifyTimeout)
		defer cancel()
		id.w = f(ctx, o)
	}()
	return id
}

type connInfoKey struct{}

// decrypter serves HTTP/1.1 and HTTP/2 on decrypted connections. Both
// modes hand it connections: one http.Server does the TLS handshake, ALPN
// and HTTP for all of them. goproxy is not used here because its MITM
// serves HTTP/1.1 only, and clients such as the Go SDK offer h2.
type decrypter struct {
	cfg   DecryptConfig
	tls   *tls.Config
	srv   *http.Server
	ln    *chanListener
	rp    *httputil.ReverseProxy
	conns sync.Map // *tls.Conn → *connInfo
	done  chan struct{}
	mem   *memBudget
}

func newDecrypter(cfg DecryptConfig) (*decrypter, error) {
	if cfg.CA == nil || cfg.Recorder == nil || cfg.Upstream == nil {
		return nil, errors.New("proxy: decryption needs a CA, a recorder and an upstream transport")
	}
	if cfg.MaxRequestBody == 0 {
		cfg.MaxRequestBody = 32 << 20
	}
	if cfg.UpstreamIdleTimeout == 0 {
		cfg.UpstreamIdleTimeout = 5 * time.Minute
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.IdentifyWait == 0 {
		cfg.IdentifyWait = 100 * time.Millisecond
	}
	if cfg.MaxMaskedBody == 0 {
		cfg.MaxMaskedBody = 16 << 20
	}
	if cfg.MaxInflightBytes == 0 {
		cfg.MaxInflightBytes = defaultMaxInflightBytes
	}
	if cfg.InflightWait == 0 {
		cfg.InflightWait = defaultInflightWait
	}
	if cfg.BodyReadTimeout == 0 {
		cfg.BodyReadTimeout = defaultBodyReadTimeout
	}
	if cfg.MaskTimeout == 0 {
		cfg.MaskTimeout = defaultMaskTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := &decrypter{cfg: cfg, ln: newChanListener(), done: make(chan struct{}),
		mem: newMemBudget(cfg.MaxInflightBytes, cfg.InflightWait)}
	d.tls = &tls.Config{
		GetCertificate: cfg.CA.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
		MinVersion:     tls.VersionTLS12,
	}
	d.rp = &httputil.ReverseProxy{
		Rewrite:        rewrite,
		Transport:      cfg.Upstream,
		FlushInterval:  -1, // every write reaches the client at once: streams stay live
		BufferPool:     newBufferPool(),
		ModifyResponse: d.modifyResponse,
		ErrorHandler:   d.upstreamError,
		ErrorLog:       slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	d.srv = &http.Server{
		Handler:           http.HandlerFunc(d.serveHTTP),
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if info, ok := d.conns.Load(c); ok {
				return context.WithValue(ctx, connInfoKey{}, info)
			}
			return ctx
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateClosed || st == http.StateHijacked {
				d.conns.Delete(c)
			}
		},
	}
	go func() {
		defer close(d.done)
		d.srv.Serve(d.ln)
	}()
	return d, nil
}

// serve takes over a client connection whose ClientHello names a target.
func (d *decrypter) serve(c net.Conn, info *connInfo) {
	tc := tls.Server(c, d.tls)
	d.conns.Store(tc, info)
	if !d.ln.push(tc) {
		d.conns.Delete(tc)
		c.Close()
	}
}

func (d *decrypter) close() {
	d.srv.Close()
	<-d.done
}

type exchangeKey struct{}

type exchangeCtx struct {
	ex     *recorder.Exchange
	cancel context.CancelFunc
	info   *connInfo
	mem    *memHold // released when the exchange's handler returns
}

// serveHTTP reads the request body (bounded in size, buffer space and
// time), masks it (bounded in time), starts its record and forwards it.
func (d *decrypter) serveHTTP(w http.ResponseWriter, r *http.Request) {
	info, _ := r.Context().Value(connInfoKey{}).(*connInfo)
	if info == nil {
		writeAPIError(w, http.StatusMisdirectedRequest, "promptrail_no_connection", "promptrail: request on an unknown connection")
		return
	}
	mem := d.mem.hold()
	defer mem.release()
	q := d.readAndMask(w, r, mem)
	who, late := d.workload(info)
	who, wfs := d.maskWorkload(who)
	conn := d.connection(r, info)
	ex := d.cfg.Recorder.Begin(r, q.recorded, q.size, conn, who)
	var pol *policy.Policy
	if d.cfg.Policy != nil {
		// One policy for the whole request, even if a reload lands now;
		// nil while none is known (a collector's not fetched yet).
		pol = d.cfg.Policy.Policy()
	}
	if pol != nil {
		ex.Decided(pol.Version(), "", "")
	}
	if late != nil {
		ex.FillWorkloadLater(func() (audit.Workload, bool) {
			w, ok := late()
			w, _ = d.maskWorkload(w)
			return w, ok
		})
	}
	ex.AddFindings(append(q.findings, wfs...)...)
	if d.refused(w, ex, info, q) {
		return
	}
	if pol != nil {
		var stop bool
		stop, w = d.decide(w, r, ex, pol, q, who, conn)
		if hs, ok := w.(*heldStream); ok {
			defer hs.finish()
		}
		if stop {
			return
		}
	}
	if !d.spool(w, r, ex) {
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	ctx = context.WithValue(ctx, exchangeKey{}, &exchangeCtx{ex: ex, cancel: cancel, info: info, mem: mem})
	if info.origin != nil {
		ctx = withDialTarget(ctx, info.origin.Dst)
	}
	out := r.WithContext(ctx)
	out.Body = io.NopCloser(bytes.NewReader(q.body))
	out.ContentLength = int64(len(q.body))
	d.rp.ServeHTTP(w, out)
}

// spool puts the request's record on durable record before anything goes
// upstream. It reports whether the request may go on; if not, it has
// answered the client.
func (d *decrypter) spool(w http.ResponseWriter, r *http.Request, ex *recorder.Exchange) bool {
	err := d.spooled(r.Context(), ex, d.cfg.Logger, "request")
	if err == nil {
		return true
	}
	ex.Reject(http.StatusServiceUnavailable, "audit spool: "+err.Error())
	w.Header().Set("Retry-After", "10")
	writeAPIError(w, http.StatusServiceUnavailable, "promptrail_spool_unavailable",
		"promptrail: the audit spool on this node is full or failing, and requests that cannot be recorded are refused; nothing was sent")
	return false
}

// spooled spools ex's record before anything of it goes upstream and
// applies --spool-full when that fails: nil means it may go on (its record
// flagged unspooled if the spool failed and PassUnspooled is set); an
// error means it must be refused, which the caller records and answers.
// what ("request", "connection") names it in the log.
func (d *decrypter) spooled(ctx context.Context, ex *recorder.Exchange, log *slog.Logger, what string) error {
	err := ex.Spool(ctx)
	if err == nil {
		return nil
	}
	if d.cfg.OnSpoolFailure != nil {
		d.cfg.OnSpoolFailure(d.cfg.PassUnspooled)
	}
	if d.cfg.PassUnspooled {
		log.Warn(what+" passed without a spooled record (--spool-full=pass)", "id", ex.ID(), "err", err)
		ex.MarkUnspooled(err)
		return nil
	}
	log.Error(what+" refused: its record could not be spooled", "id", ex.ID(), "err", err)
	return err
}

// rewrite sends the request to the name the client asked for; the dialer
// connects to the original destination the kernel recorded.
func rewrite(pr *httputil.ProxyRequest) {
	ec, _ := pr.In.Context().Value(exchangeKey{}).(*exchangeCtx)
	port := "443"
	if ec != nil && ec.info.origin != nil {
		port = strconv.Itoa(int(ec.info.origin.Dst.Port()))
	} else if _, p, err := net.SplitHostPort(pr.In.Host); err == nil {
		port = p
	}
	host := pr.In.Host
	if ec != nil && ec.info.sni != "" {
		host = ec.info.sni
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	pr.Out.URL.Scheme = "https"
	pr.Out.URL.Host = net.JoinHostPort(host, port)
	pr.Out.Host = pr.In.Host
	// The transport asks for gzip itself and decompresses, so the recorder
	// (and the masker) see plain text and the client gets a valid response.
	pr.Out.Header.Del("Accept-Encoding")
}

func (d *decrypter) modifyResponse(resp *http.Response) error {
	ec, ok := resp.Request.Context().Value(exchangeKey{}).(*exchangeCtx)
	if !ok {
		return nil
	}
	if err := decodeResponse(resp); err != nil {
		return err
	}
	if d.cfg.Masker != nil {
		if err := maskResponse(d.cfg.Masker, resp, ec.ex.Endpoint(), wholeBudget{limit: d.cfg.MaxMaskedBody, mem: ec.mem, maskTimeout: d.cfg.MaskTimeout}); err != nil {
			return err
		}
	}
	ec.ex.Observe(resp, d.cfg.UpstreamIdleTimeout, ec.cancel)
	return nil
}

// upstreamError answers a failed round trip in the API's error shape and
// records it: 504 for timeouts, 502 otherwise.
func (d *decrypter) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	status, code := http.StatusBadGateway, "promptrail_upstream_unreachable"
	msg := "promptrail: the upstream API could not be reached: " + err.Error()
	var (
		ne net.Error
		be *budgetError
	)
	switch {
	case errors.As(err, &be):
		status, code, msg = be.status, be.code, be.msg
		d.budgetHit(be.code)
	case errors.As(err, &ne) && ne.Timeout():
		status, code = http.StatusGatewayTimeout, "promptrail_upstream_timeout"
	}
	if ec, ok := r.Context().Value(exchangeKey{}).(*exchangeCtx); ok {
		ec.ex.Fail(status, fmt.Errorf("upstream: %w", err))
	}
	if r.Context().Err() != nil {
		return // the client is gone; nobody to answer
	}
	d.cfg.Logger.Warn("upstream request failed", "host", r.Host, "path", r.URL.Path, "err", err)
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeAPIError(w, status, code, msg)
}

func (d *decrypter) connection(r *http.Request, info *connInfo) audit.Connection {
	c := audit.Connection{Mode: info.mode, Client: info.client.String(), SNI: info.sni}
	if info.origin != nil {
		c.OrigDst = info.origin.Dst.String()
	}
	if r.TLS != nil {
		c.ALPN = r.TLS.NegotiatedProtocol
		c.TLSVersion = tls.VersionName(r.TLS.Version)
	}
	return c
}

// workload is who made the request: the resolved identity if it arrives
// within IdentifyWait, else the kernel's process facts and a function
// that yields the identity once it has arrived.
func (d *decrypter) workload(info *connInfo) (audit.Workload, func() (audit.Workload, bool)) {
	o := info.origin
	if o == nil {
		o = info.peer
	}
	if o == nil {
		return audit.Workload{Kind: "unknown"}, nil
	}
	base := audit.Workload{Kind: "process", PID: o.TGID, UID: o.UID, GID: o.GID, Comm: o.Comm, CgroupID: o.CgroupID}
	id := info.ident
	if id == nil {
		return base, nil
	}
	t := time.NewTimer(d.cfg.IdentifyWait)
	defer t.Stop()
	select {
	case <-id.done:
		return id.w, nil
	case <-t.C:
	}
	d.cfg.Logger.Debug("workload identity not resolved in time; the record gets it later", "cgroup_id", o.CgroupID, "pid", o.TGID)
	return base, func() (audit.Workload, bool) {
		select {
		case <-id.done:
			return id.w, true
		default:
			return audit.Workload{}, false
		}
	}
}

// maskWorkload masks the command line of the process behind a request
// before it is recorded: secrets are passed as arguments (curl -H
// "Authorization: Bearer ...", --password=...).
func (d *decrypter) maskWorkload(w audit.Workload) (audit.Workload, []audit.Finding) {
	if d.cfg.Masker == nil || w.Cmdline == "" {
		return w, nil
	}
	masked, fs := d.cfg.Masker.Text("workload", "cmdline", []byte(w.Cmdline))
	w.Cmdline = string(masked)
	return w, auditFindings(fs)
}

// writeAPIError answers in the OpenAI API's error shape, so SDKs surface
// the message instead of a parse error.
func writeAPIError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":{"message":%q,"type":"promptrail_error","param":null,"code":%q}}`+"\n", msg, code)
}

// bufferPool recycles the copy buffers of the reverse proxy, which would
// otherwise allocate (and zero) 32 KiB per response.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(s []byte) { b.p.Put(&s) }

// chanListener hands connections to http.Server.Serve.
type chanListener struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{} }
