// Package agent runs promptrail's node agent: it attaches the interception
// programs (agent/intercept), keeps their target set current
// (agent/targets) and serves the redirected connections (agent/proxy).
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/promptrail/promptrail/agent/intercept"
	"github.com/promptrail/promptrail/agent/policy"
	"github.com/promptrail/promptrail/agent/proxy"
	"github.com/promptrail/promptrail/agent/recorder"
	"github.com/promptrail/promptrail/agent/targets"
)

// DefaultTarget is what the agent intercepts when nothing else is said.
const DefaultTarget = "api.openai.com:443"

const defaultResolvConf = "/etc/resolv.conf"

// Config configures Run. Zero values take the documented defaults.
type Config struct {
	// DataDir holds the agent's state. Required; created if missing.
	DataDir string
	// Targets are host[:port] entries (port 443 if absent); a host may be
	// a name, resolved and watched in DNS answers, or an IP literal. Empty:
	// DefaultTarget.
	Targets []string
	// OtherSNI and NoSNI say what happens to a connection to a target
	// address that is not decrypted because its ClientHello names another
	// server, or none (or it is not TLS): entries "splice", "refuse" or
	// "TARGET=splice|refuse" (TARGET a host name, IP or CIDR). Either way
	// it is recorded. Defaults: DefaultOtherSNI, DefaultNoSNI.
	OtherSNI, NoSNI []string
	// HelloTimeout bounds the wait for a connection's whole ClientHello;
	// one that takes longer is refused and recorded. Zero: 10s.
	HelloTimeout time.Duration
	// TargetCIDRs are prefixes whose addresses are targets on the ports of
	// Targets.
	TargetCIDRs []string
	// CgroupRoot is the cgroup v2 directory whose processes are
	// intercepted. Empty: intercept.DefaultCgroupRoot. A directory that
	// is not in a cgroup v2 hierarchy but whose unified/ is (a hybrid
	// host's /sys/fs/cgroup) stands for that: intercept.ResolveCgroupRoot.
	CgroupRoot string
	// ProxyListen are the proxy's addresses. Loopback addresses serve the
	// host's network namespace; the first non-loopback address of each
	// family is where pods are redirected. Empty: 127.0.0.1:15001 and
	// [::1]:15001, which serve the host only.
	ProxyListen []string
	// FailMode, PinPath, Mark and HeartbeatTimeout: see intercept.Config.
	FailMode         intercept.FailMode
	PinPath          string
	Mark             uint32
	HeartbeatTimeout time.Duration
	// CaptureDNS learns target addresses from DNS answers that workloads
	// receive.
	CaptureDNS bool
	// DNSResolvConf is the resolver configuration used to resolve target
	// names; its nameservers are also the sources whose DNS answers
	// CaptureDNS learns from. Empty: /etc/resolv.conf.
	DNSResolvConf string
	// DNSServers are resolvers besides DNSResolvConf's nameservers whose
	// answers CaptureDNS learns from: the cluster DNS service, a node-local
	// cache. Answers from any other source are ignored.
	DNSServers []string
	// CACert and CAKey are the CA that signs the certificates clients see.
	// Empty: a node CA created in DataDir on first start, name-constrained
	// to the host names of Targets.
	CACert, CAKey string
	// CAUnconstrained creates the node CA without name constraints (for
	// clients that reject them; a stolen key then signs for any site), and
	// silences the warning about a CA that has none.
	CAUnconstrained bool
	// UpstreamCA is a PEM file of CAs trusted upstream besides the system's.
	UpstreamCA string
	// ExplicitProxyListen is an ip:port for HTTPS_PROXY clients. Empty: off.
	ExplicitProxyListen string
	// MaxBody bounds the bytes of each body kept in a record. Zero: 1 MiB.
	MaxBody int
	// MaxRequestBody is the largest request forwarded. Zero: 32 MiB.
	MaxRequestBody int64
	// UpstreamIdleTimeout cancels a response that stalls this long. Zero: 5m.
	UpstreamIdleTimeout time.Duration
	// MaxInflightBytes, BodyReadTimeout and MaskTimeout: see
	// proxy.DecryptConfig (zero: 256 MiB, 30s, 2s).
	MaxInflightBytes int64
	BodyReadTimeout  time.Duration
	MaskTimeout      time.Duration
	// MaxConnsPerWorkload: see proxy.Config (zero: 256).
	MaxConnsPerWorkload int
	// ConnectionRecordRate: see proxy.Config (zero: 20 per second).
	ConnectionRecordRate float64
	// Node names this node in records. Empty: the host name.
	Node string
	// Mask configures secret masking (on unless Mask.Disabled).
	Mask MaskConfig
	// Policy is a policy file (see agent/policy) deciding per request
	// allow, mask, block or require_approval; it is reloaded when it changes. Empty: no
	// policy, every request that passes masking goes.
	Policy string
	// PolicyFromCollector fetches the policy from Collector instead
	// (conditional GET), keeping the last verified copy in DataDir for a
	// start while the collector is away.
	PolicyFromCollector bool
	// ApprovalWait bounds how long a request a policy rule holds for
	// approval waits for a decision (at Collector). Zero: 25s.
	ApprovalWait time.Duration
	// Collector is the base URL of the collector that records are shipped
	// to. Empty: records stay in the spool (a warning says so).
	Collector string
	// TokenFile holds the bearer token presented to the collector.
	TokenFile string
	// SpoolMaxBytes bounds the spool in DataDir/spool. Zero: 1 GiB.
	SpoolMaxBytes int64
	// SpoolReserveBytes is the free space kept on the spool's disk; below
	// it the spool is full. Zero: spool.DefaultReserveBytes (64 MiB).
	SpoolReserveBytes int64
	// SpoolFull is what happens to a request whose record cannot be
	// spooled (spool full or failing): SpoolFullReject (the default) or
	// SpoolFullPass.
	SpoolFull string
	// ShipInterval is how long a partial batch waits for more records.
	// Zero: 1s.
	ShipInterval time.Duration
	// MetricsListen is where /metrics and /healthz are served. Empty: off.
	MetricsListen string
	// Kube resolves pods through the Kubernetes API (in-cluster
	// configuration; a pod informer restricted to Node). Off: identity
	// comes from cgroup paths and /proc only.
	Kube bool
	// KubeClient, if set, is the API client (tests use a fake clientset);
	// it implies Kube.
	KubeClient kubernetes.Interface
	// TrustDomain is the SPIFFE trust domain of pod identities. Empty:
	// cluster.local.
	TrustDomain string
	// IdentityLabels are the pod labels copied into records. Empty:
	// identity.DefaultLabels().
	IdentityLabels []string
	// Logger is the agent's logger. Nil: slog.Default().
	Logger *slog.Logger
}

// Run runs the agent until ctx is done or a part of it fails.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger
	plan, listen, node, err := cfg.prepare()
	if err != nil {
		return err
	}
	dnsServers, err := parseAddrs("DNS server", cfg.DNSServers)
	if err != nil {
		return err
	}
	pipe, err := startPipeline(ctx, cfg, node, log)
	if err != nil {
		return err
	}
	defer pipe.stop()
	ident, err := newIdentity(ctx, cfg, node, log)
	if err != nil {
		return err
	}
	defer ident.Close()
	// The registry of the agent's own sockets comes first: every dialer of
	// the agent (proxy, upstream, resolver) registers its sockets in it.
	socks, err := intercept.NewAgentSockets(cfg.Mark)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	defer socks.Close()
	decrypt, err := decryption(cfg, node, pipe, socks, log)
	if err != nil {
		return err
	}
	decrypt.Identify = identify(ident)
	switch {
	case cfg.Policy != "" && cfg.PolicyFromCollector:
		return errors.New("agent: --policy and --policy-from-collector: choose one")
	case cfg.Policy != "":
		if decrypt.Policy, err = openPolicy(ctx, cfg.Policy, log); err != nil {
			return err
		}
	case cfg.PolicyFromCollector:
		if cfg.Collector == "" {
			return errors.New("agent: --policy-from-collector needs --collector")
		}
		ps := newPolicySync(cfg.Collector, cfg.TokenFile, cfg.DataDir, log)
		if err := ps.start(ctx); err != nil {
			return err
		}
		go ps.run(ctx)
		decrypt.Policy = ps.cur
	}
	if cfg.Collector != "" {
		decrypt.Approvals = newCollectorApprovals(cfg.Collector, cfg.TokenFile, node)
	}
	decrypt.ApprovalWait = cfg.ApprovalWait
	var explicit net.Listener
	if cfg.ExplicitProxyListen != "" {
		if explicit, err = net.Listen("tcp", cfg.ExplicitProxyListen); err != nil {
			return fmt.Errorf("agent: explicit proxy: %w", err)
		}
		defer explicit.Close()
	}
	lns, err := proxy.Listen(listen.all)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	var origins lateOrigins
	srv, err := proxy.New(proxy.Config{Listeners: lns, Origins: &origins, Control: socks.Control, Logger: log,
		Decrypt: decrypt, DecryptName: plan.isHost, Undecrypted: plan.undecrypted.splice, HelloTimeout: cfg.HelloTimeout,
		MaxConnsPerWorkload: cfg.MaxConnsPerWorkload, OnConnRefused: pipe.onBudgetHit,
		ConnectionRecordRate: cfg.ConnectionRecordRate,
		PeerOrigin:           peerOrigin(ident)})
	if err != nil {
		closeAll(lns)
		return err
	}
	in, err := intercept.Attach(intercept.Config{
		CgroupRoot: cfg.CgroupRoot, PinPath: cfg.PinPath, FailMode: cfg.FailMode,
		HostProxy4: listen.host4, HostProxy6: listen.host6, NodeProxy4: listen.node4, NodeProxy6: listen.node6,
		Ports: plan.ports, Sockets: socks, HeartbeatTimeout: cfg.HeartbeatTimeout, CaptureDNS: cfg.CaptureDNS,
		Logger: log,
	})
	if err != nil {
		closeAll(lns)
		return fmt.Errorf("agent: %w", err)
	}
	origins.in = in
	untrustedDNS := prometheus.NewCounter(prometheus.CounterOpts{Name: "promptrail_agent_dns_answers_untrusted_total",
		Help: "Captured DNS answers ignored because they came from no trusted resolver (--resolv-conf's nameservers, --dns-server), or claimed one but arrived over loopback."})
	if err := errors.Join(in.RegisterMetrics(pipe.reg), pipe.reg.Register(untrustedDNS)); err != nil {
		in.Close()
		closeAll(lns)
		return fmt.Errorf("agent: %w", err)
	}
	resolver := targets.NewDNSResolver(cfg.DNSResolvConf, socks.Control)
	sources := targets.NewDNSSources(cfg.DNSResolvConf, dnsServers)
	set, err := targets.New(targets.Config{Hosts: plan.hosts, CIDRs: plan.cidrs, Resolver: resolver,
		DNSSources: sources, Logger: log}, in)
	if err != nil {
		in.Close()
		closeAll(lns)
		return fmt.Errorf("agent: %w", err)
	}
	plan.undecrypted.set = set // before Serve: host rules see the set from the first connection
	set.ApplyNow()             // configured CIDRs and IPs are intercepted once "agent running" is said
	log.Info("agent running", "targets", cfg.targetList(), "target_cidrs", cfg.TargetCIDRs, "proxy_listen", listen.all,
		"cgroup_root", cfg.CgroupRoot, "data_dir", cfg.DataDir, "dns_sources", sources.Addrs())
	return supervise(ctx, log, parts{in: in, srv: srv, set: set, dns: cfg.CaptureDNS, untrustedDNS: untrustedDNS, explicit: explicit})
}

// decryption builds the TLS-terminating path: CA, recorder, upstream.
func decryption(cfg Config, node string, pipe *pipeline, socks *intercept.AgentSockets, log *slog.Logger) (*proxy.DecryptConfig, error) {
	ca, err := nodeCA(cfg, node, log)
	if err != nil {
		return nil, err
	}
	up, err := proxy.NewUpstreamTransport(proxy.UpstreamConfig{ExtraCAs: cfg.UpstreamCA, Control: socks.Control})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	rec, err := recorder.New(recorder.Config{Sink: spoolSink{pipe.spool}, MaxBody: cfg.MaxBody, AgentID: node, Node: node, Logger: log})
	if err != nil {
		return nil, err
	}
	masker, eng, err := newMasker(cfg.Mask, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if eng != nil {
		log.Info("masking secrets", "rules", len(eng.Rules()))
	} else {
		log.Warn("secret masking is off: prompts and responses pass unmasked")
	}
	log.Info("recording exchanges", "spool", filepath.Join(cfg.DataDir, "spool"), "collector", cfg.Collector,
		"spool_full", orDefaultString(cfg.SpoolFull, SpoolFullReject), "ca_subject", ca.Certificate().Subject.String())
	return &proxy.DecryptConfig{CA: ca, Recorder: rec, Upstream: up, MaxRequestBody: cfg.MaxRequestBody,
		UpstreamIdleTimeout: cfg.UpstreamIdleTimeout, Masker: masker,
		MaxInflightBytes: cfg.MaxInflightBytes, BodyReadTimeout: cfg.BodyReadTimeout, MaskTimeout: cfg.MaskTimeout,
		PassUnspooled: cfg.SpoolFull == SpoolFullPass, OnSpoolFailure: pipe.onSpoolFailure, OnBudgetHit: pipe.onBudgetHit,
		Node: node}, nil
}

// policyReload is how often the policy file is read again for changes.
const policyReload = 2 * time.Second

// openPolicy loads the policy file, and reloads it while ctx lasts. An
// agent told to apply a policy does not start without a good one.
func openPolicy(ctx context.Context, path string, log *slog.Logger) (*policy.Current, error) {
	cur, err := policy.Open(path, log)
	if err != nil {
		return nil, fmt.Errorf("agent: --policy: %w", err)
	}
	p := cur.Policy()
	log.Info("policy loaded", "path", path, "version", p.Version(), "rules", len(p.Rules()))
	go cur.Watch(ctx, policyReload)
	return cur, nil
}

func orDefaultString(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// parts are what supervise runs.
type parts struct {
	in  *intercept.Interceptor
	srv *proxy.Server
	set *targets.Set
	dns bool
	// untrustedDNS counts captured answers that no trusted resolver sent.
	untrustedDNS prometheus.Counter
	explicit     net.Listener
}

// supervise runs the parts until ctx is done or one of them fails, then
// stops interception first, so that new connects are not sent to a proxy
// that is going away, and the proxy last.
func supervise(ctx context.Context, log *slog.Logger, p parts) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 4)
	n := 2 // heartbeat and target set; the proxy is stopped last, apart
	go func() { errc <- wrap("heartbeat", p.in.Run(ctx)) }()
	go func() { errc <- wrap("target set", p.set.Run(ctx)) }()
	if p.dns {
		n++
		go func() {
			errc <- wrap("dns capture", p.in.ReadDNS(ctx, func(b []byte, a intercept.Arrival) {
				if err := p.set.ObserveDNS(b, targets.Arrival(a)); err != nil {
					if errors.Is(err, targets.ErrUntrustedDNSSource) {
						p.untrustedDNS.Inc()
					}
					log.Debug("ignored a captured DNS packet", "err", err)
				}
			}))
		}()
	}
	if p.explicit != nil {
		n++
		go func() { errc <- wrap("explicit proxy", p.srv.ServeExplicit(ctx, p.explicit)) }()
	}
	proxyCtx, stopProxy := context.WithCancel(context.Background())
	defer stopProxy()
	proxyDone := make(chan error, 1)
	go func() { proxyDone <- wrap("proxy", p.srv.Serve(proxyCtx)) }()
	var first error
	select {
	case <-ctx.Done():
	case first = <-errc:
		n--
	case first = <-proxyDone:
		proxyDone = nil
	}
	cancel()
	for range n {
		if err := <-errc; first == nil {
			first = err
		}
	}
	if err := p.in.Close(); err != nil && first == nil {
		first = err
	}
	stopProxy()
	if proxyDone != nil {
		if err := <-proxyDone; first == nil {
			first = err
		}
	}
	log.Info("agent stopped")
	return first
}

// prepare checks cfg and fills its defaults (cgroup root, data
// directory), and returns the target and listener plans and the node name.
func (cfg *Config) prepare() (targetPlan, listenPlan, string, error) {
	switch cfg.FailMode {
	case "", intercept.FailOpen, intercept.FailClosed:
	default:
		return targetPlan{}, listenPlan{}, "", fmt.Errorf("agent: unknown fail mode %q (want %s or %s)", cfg.FailMode, intercept.FailOpen, intercept.FailClosed)
	}
	plan, err := planTargets(cfg.Targets, cfg.TargetCIDRs)
	if err != nil {
		return targetPlan{}, listenPlan{}, "", err
	}
	if plan.undecrypted, err = newUndecryptedPolicy(cfg.OtherSNI, cfg.NoSNI); err != nil {
		return targetPlan{}, listenPlan{}, "", err
	}
	listen, err := parseListen(cfg.ProxyListen)
	if err != nil {
		return targetPlan{}, listenPlan{}, "", err
	}
	if cfg.DataDir == "" {
		return targetPlan{}, listenPlan{}, "", errors.New("agent: no data directory")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return targetPlan{}, listenPlan{}, "", fmt.Errorf("agent: creating data directory: %w", err)
	}
	if cfg.DNSResolvConf == "" {
		cfg.DNSResolvConf = defaultResolvConf
	}
	if cfg.CgroupRoot == "" {
		cfg.CgroupRoot = "/sys/fs/cgroup"
	}
	if cfg.CgroupRoot, err = intercept.ResolveCgroupRoot(cfg.CgroupRoot); err != nil {
		return targetPlan{}, listenPlan{}, "", fmt.Errorf("agent: %w", err)
	}
	node := cfg.Node
	if node == "" {
		node, _ = os.Hostname()
	}
	return plan, listen, node, nil
}

func wrap(part string, err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return nil
	}
	return fmt.Errorf("agent: %s: %w", part, err)
}

func (c Config) targetList() []string {
	if len(c.Targets) == 0 {
		return []string{DefaultTarget}
	}
	return c.Targets
}

// targetPlan is the configuration's targets, sorted by kind.
type targetPlan struct {
	hosts       []string
	cidrs       []netip.Prefix
	ports       []uint16
	undecrypted *undecryptedPolicy
}

// isHost reports whether serverName is a configured target host name,
// the second gate after the address: only those are decrypted.
func (p targetPlan) isHost(serverName string) bool {
	return serverName != "" && slices.Contains(p.hosts, strings.ToLower(strings.TrimSuffix(serverName, ".")))
}

func planTargets(hostPorts, cidrs []string) (targetPlan, error) {
	var p targetPlan
	if len(hostPorts) == 0 {
		hostPorts = []string{DefaultTarget}
	}
	for _, hp := range hostPorts {
		host, port, err := splitTarget(hp)
		if err != nil {
			return p, err
		}
		if !slices.Contains(p.ports, port) {
			p.ports = append(p.ports, port)
		}
		if a, err := netip.ParseAddr(host); err == nil {
			p.cidrs = append(p.cidrs, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p.hosts = append(p.hosts, host)
	}
	for _, c := range cidrs {
		pr, err := netip.ParsePrefix(c)
		if err != nil {
			return p, fmt.Errorf("agent: target CIDR %q: %w", c, err)
		}
		p.cidrs = append(p.cidrs, pr)
	}
	return p, nil
}

// splitTarget parses host[:port], where host may be a bracketed IPv6
// literal; the port defaults to 443.
func splitTarget(s string) (string, uint16, error) {
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		// No port: a bare name, IPv4 or IPv6 literal.
		host, portStr = strings.Trim(s, "[]"), "443"
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 || host == "" {
		return "", 0, fmt.Errorf("agent: target %q: want host[:port] with a port from 1 to 65535", s)
	}
	return strings.ToLower(host), uint16(port), nil
}

// listenPlan sorts the proxy's addresses into the roles of intercept.Config.
type listenPlan struct {
	all                        []netip.AddrPort
	host4, host6, node4, node6 netip.AddrPort
}

func parseListen(addrs []string) (listenPlan, error) {
	var p listenPlan
	if len(addrs) == 0 {
		addrs = []string{"127.0.0.1:15001", "[::1]:15001"}
	}
	for _, s := range addrs {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return p, fmt.Errorf("agent: proxy listen address %q: want ip:port: %w", s, err)
		}
		a := ap.Addr().Unmap()
		ap = netip.AddrPortFrom(a, ap.Port())
		if a.IsUnspecified() || ap.Port() == 0 {
			return p, fmt.Errorf("agent: proxy listen address %q: the programs redirect to it, so it needs a concrete address and port", s)
		}
		p.all = append(p.all, ap)
		slot := map[[2]bool]*netip.AddrPort{
			{true, true}: &p.host4, {true, false}: &p.node4, {false, true}: &p.host6, {false, false}: &p.node6,
		}[[2]bool{a.Is4(), a.IsLoopback()}]
		if !slot.IsValid() {
			*slot = ap
		}
	}
	return p, nil
}

func parseAddrs(what string, ss []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range ss {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("agent: %s %q: want an IP address: %w", what, s, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// lateOrigins lets the proxy exist before the Interceptor that answers its
// lookups: listeners must be open before programs redirect to them, and
// Serve starts only once in is set.
type lateOrigins struct{ in *intercept.Interceptor }

func (l *lateOrigins) Origin(client netip.AddrPort) (intercept.Origin, error) {
	return l.in.Origin(client)
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
}
