package cli

import (
	"context"
	"flag"
	"fmt"
	"strconv"

	"github.com/promptrail/promptrail/agent"
	"github.com/promptrail/promptrail/agent/intercept"
	"github.com/promptrail/promptrail/agent/spool"
	"github.com/promptrail/promptrail/internal/settings"
)

const agentSummary = `Runs the node agent: attaches eBPF cgroup programs that steer connections
bound for the targets into the agent's proxy. The proxy terminates TLS for
target host names (clients must trust the CA that ` + "`promptrail ca`" + ` prints),
records every exchange with the API and forwards it; everything else is
passed through untouched. Each request's record is synced to the spool in
--data-dir/spool before the request goes upstream, and shipped from there
to --collector, which acknowledges before the spool lets it go.

Fail modes: fail-closed (the agent's default) leaves the programs pinned when
the agent stops or dies, and connects to targets are refused until an agent
runs again, so nothing reaches an LLM API unaudited; fail-open removes them
with the agent, and traffic then goes direct. ` + "`promptrail cleanup`" + ` removes
pinned programs.`

// agentFlags are the flags of `agent` and `run`.
type agentFlags struct {
	config, dataDir, cgroupRoot, failMode, pinPath, mark *string
	caCert, caKey, upstreamCA, explicitListen, node      *string
	caUnconstrained                                      *bool
	maskRules, resolvConf, policy                        *string
	collector, tokenFile, spoolFull, metricsListen       *string
	trustDomain                                          *string
	kube, policyFromCollector                            *bool
	identityLabels                                       *settings.List
	spoolMax                                             *sizeFlag
	spoolReserve                                         *sizeFlag
	shipInterval, approvalWait                           *durationFlag
	noMask                                               *bool
	maskDisable, maskBlock                               *settings.List
	maxBody                                              *int
	maxRequestBody                                       *int64
	targets, cidrs, listen, dnsServers                   *settings.List
	otherSNI, noSNI                                      *settings.List
	captureDNS                                           *bool
	heartbeat, upstreamIdle, helloTimeout                *durationFlag
	bodyReadTimeout, maskTimeout                         *durationFlag
	maxInflight                                          *sizeFlag
	maxConnsPerWorkload                                  *int
	connRecordRate                                       *float64
	log                                                  logFlags
}

func addAgentFlags(fs *flag.FlagSet, dataDir string, failMode intercept.FailMode) agentFlags {
	f := agentFlags{
		config:     fs.String("config", "", "YAML `file` of settings, keyed by flag name"),
		dataDir:    fs.String("data-dir", dataDir, "`directory` for the agent's state"),
		cgroupRoot: fs.String("cgroup-root", "", "cgroup v2 `directory` whose processes are intercepted (default: the cgroup v2 mount, /sys/fs/cgroup or /sys/fs/cgroup/unified; a directory whose unified/ is the v2 mount stands for that)"),
		failMode:   fs.String("fail-mode", string(failMode), "what happens while no agent runs: fail-closed or fail-open"),
		pinPath:    fs.String("pin-path", intercept.DefaultPinPath, "bpffs `directory` where fail-closed programs are pinned"),
		mark:       fs.String("socket-mark", fmt.Sprintf("%#x", intercept.DefaultMark), "SO_MARK of the agent's own sockets (which are also registered by cookie: the mark alone exempts nothing); the default is a bit kube-proxy, Calico, Cilium, Istio and the AWS VPC CNI leave alone"),
		targets:    settings.NewList(agent.DefaultTarget),
		cidrs:      settings.NewList(),
		otherSNI:   settings.NewList(),
		noSNI:      settings.NewList(),
		listen:     settings.NewList("127.0.0.1:15001", "[::1]:15001"),
		captureDNS: fs.Bool("capture-dns", true, "learn target addresses from DNS answers that workloads receive from a trusted resolver (--resolv-conf's nameservers, --dns-server)"),
		dnsServers: settings.NewList(),
		heartbeat:  &durationFlag{},
		log:        addLogFlags(fs),

		caCert: fs.String("ca-cert", "", "PEM `file` of the CA that signs the certificates clients see (with --ca-key), e.g. one CA for the cluster (default: a node CA created in --data-dir)"),
		caKey:  fs.String("ca-key", "", "PEM `file` of the private key of --ca-cert"),
		caUnconstrained: fs.Bool("ca-unconstrained", false, "create the node CA without name constraints, for clients that reject them "+
			"(a stolen CA key then signs for any site), and do not warn about a CA without them"),
		upstreamCA:     fs.String("upstream-ca", "", "PEM `file` of CAs to trust upstream besides the system roots (a corporate egress proxy's)"),
		explicitListen: fs.String("explicit-proxy-listen", "", "`ip:port` of an HTTPS_PROXY-style proxy for hosts where eBPF cannot be used (default: off)"),
		node:           fs.String("node-name", "", "name of this node in records (default: the host name; set from the downward API in a DaemonSet)"),
		maxBody:        fs.Int("max-body", 1<<20, "`bytes` of each request and response body kept in a record; longer ones are flagged truncated"),
		maxRequestBody: fs.Int64("max-request-body", 32<<20, "largest request body forwarded, in `bytes`; larger requests get 413"),
		upstreamIdle:   &durationFlag{},
		helloTimeout:   &durationFlag{},
		resolvConf:     fs.String("resolv-conf", "/etc/resolv.conf", "resolver configuration `file` whose nameservers resolve target names"),
		noMask:         fs.Bool("no-mask", false, "do not mask secrets: prompts and responses pass as sent (not recommended)"),
		maskRules:      fs.String("mask-rules", "", "YAML `file` of custom masking rules, allowlist, rules to disable or block (see README)"),
		policy:         fs.String("policy", "", "YAML `file` of policy rules deciding per request allow, mask, block or require_approval; reloaded when it changes (default: none, see README \"Policy\")"),
		maskDisable:    settings.NewList(),
		maskBlock:      settings.NewList(),
		collector:      fs.String("collector", "", "`URL` of the collector that records are shipped to, e.g. http://promptrail-collector:7070 (default: none; records stay in the spool)"),
		tokenFile:      fs.String("token-file", "", "`file` holding the bearer token presented to the collector"),
		spoolFull:      fs.String("spool-full", agent.SpoolFullReject, "when a request's record cannot be spooled (spool full or disk failing): reject (answer 503, nothing goes out unrecorded) or pass (forward it, record flagged unspooled)"),
		spoolMax:       &sizeFlag{n: 1 << 30},
		spoolReserve:   &sizeFlag{n: spool.DefaultReserveBytes},
		shipInterval:   &durationFlag{},
		approvalWait:   &durationFlag{},
		metricsListen:  fs.String("metrics-listen", "127.0.0.1:9464", "`ip:port` serving Prometheus /metrics and /healthz (empty: off)"),
	}
	f.policyFromCollector = fs.Bool("policy-from-collector", false, "apply the policy pushed to --collector (promptrail policy push), checked every 10s; the last verified copy is kept in --data-dir for a start while the collector is away")
	f.kube = fs.Bool("kube", false, "resolve pods through the Kubernetes API (in-cluster service account; a pod informer restricted to --node-name)")
	f.trustDomain = fs.String("trust-domain", "cluster.local", "SPIFFE trust `domain` of pod identities (spiffe://<domain>/ns/<ns>/sa/<sa>)")
	f.identityLabels = settings.NewList()
	fs.Var(f.identityLabels, "identity-label", "pod label `key` copied into records, repeatable (default app.kubernetes.io/name, app.kubernetes.io/instance, app.kubernetes.io/component, app, version)")
	fs.Var(f.spoolMax, "spool-max-bytes", "`size` limit of the spool, e.g. 512MiB or 2GiB")
	fs.Var(f.spoolReserve, "spool-reserve-bytes", "free `size` kept on the spool's disk: below it the spool counts as full (--spool-full), so the disk never fills under Badger (at least 64MiB)")
	fs.Var(f.approvalWait, "approval-wait", "how `long` a request a policy rule holds for approval waits for a decision at --collector before the client gets 403 promptrail_approval_pending (default 25s, below SDK and load-balancer timeouts)")
	fs.Var(f.shipInterval, "ship-interval", "how `long` a partial batch of records waits for more before it is shipped (default 1s)")
	fs.Var(f.maskDisable, "mask-disable-rule", "`rule-id` not to apply, repeatable")
	fs.Var(f.maskBlock, "mask-block-rule", "`rule-id` whose findings block the request (403) instead of masking it, repeatable")
	fs.Var(f.upstreamIdle, "upstream-idle-timeout", "cancel a response (a stalled stream) after this `long` without a byte (default 5m)")
	fs.Var(f.targets, "target", "`host[:port]` to intercept, repeatable or comma-separated; a name or an IP (port 443 if absent)")
	fs.Var(f.otherSNI, "other-sni", "what happens to a connection to a target address whose TLS server name is not a target:\n`splice|refuse`, or TARGET=splice|refuse for a target host, IP or CIDR; repeatable; recorded either way (default "+agent.DefaultOtherSNI+")")
	fs.Var(f.noSNI, "no-sni", "the same as --other-sni (`splice|refuse`, TARGET=...) for a connection without a server name, or not TLS (default "+agent.DefaultNoSNI+")")
	fs.Var(f.helloTimeout, "hello-timeout", "refuse (and record) a connection whose TLS ClientHello is not complete after this `long` (default 10s)")
	fs.Var(f.dnsServers, "dns-server", "`ip` of a resolver besides --resolv-conf's nameservers whose answers teach target addresses, repeatable: the cluster DNS service (e.g. 10.96.0.10), a node-local cache (169.254.20.10)")
	fs.Var(f.cidrs, "target-cidr", "`prefix` whose addresses are targets on the target ports, repeatable")
	fs.Var(f.listen, "proxy-listen", "`ip:port` the proxy listens on, repeatable: loopback serves the host's network namespace,\nthe first non-loopback address of a family serves pods (the node IP in a DaemonSet)")
	f.maxInflight = &sizeFlag{n: 256 << 20}
	fs.Var(f.maxInflight, "max-inflight-bytes", "`size` of the node-wide buffer for request and response bodies in flight (each charged three times: body, masked copy, parsed text); a request that finds it full within 2s gets 503")
	f.bodyReadTimeout, f.maskTimeout = &durationFlag{}, &durationFlag{}
	fs.Var(f.bodyReadTimeout, "body-read-timeout", "answer 408 to a request whose body has not arrived whole after this `long` (default 30s)")
	fs.Var(f.maskTimeout, "mask-timeout", "longest `time` the search for secrets in one body may take; a request over it gets 413, a response 502, neither is passed on (default 2s)")
	f.connRecordRate = fs.Float64("connection-record-rate", 20, "connection records (of connections not decrypted) one client cgroup may make per `second`, with a burst of four seconds' worth; past it such connections are refused without a record, so no workload floods the spool")
	f.maxConnsPerWorkload = fs.Int("max-conns-per-workload", 256, "concurrent connections one client cgroup may hold to the proxy; more are closed at once")
	fs.Var(f.heartbeat, "heartbeat-timeout", "fail-closed: refuse connects to targets when the agent is silent this `long` (default 5s)")
	return f
}

func (f agentFlags) agentConfig() (agent.Config, error) {
	logger, err := f.log.logger()
	if err != nil {
		return agent.Config{}, err
	}
	mark, err := strconv.ParseUint(*f.mark, 0, 32)
	if err != nil || mark == 0 {
		return agent.Config{}, fmt.Errorf("--socket-mark %q: want a non-zero 32-bit number", *f.mark)
	}
	if *f.connRecordRate <= 0 {
		return agent.Config{}, fmt.Errorf("--connection-record-rate %v: want a positive number of records per second", *f.connRecordRate)
	}
	if *f.maxConnsPerWorkload < 1 {
		return agent.Config{}, fmt.Errorf("--max-conns-per-workload %d: want at least 1", *f.maxConnsPerWorkload)
	}
	return agent.Config{
		DataDir:          *f.dataDir,
		Targets:          f.targets.Values(),
		TargetCIDRs:      f.cidrs.Values(),
		OtherSNI:         f.otherSNI.Values(),
		NoSNI:            f.noSNI.Values(),
		HelloTimeout:     f.helloTimeout.d,
		CgroupRoot:       *f.cgroupRoot,
		ProxyListen:      f.listen.Values(),
		FailMode:         intercept.FailMode(*f.failMode),
		PinPath:          *f.pinPath,
		Mark:             uint32(mark),
		HeartbeatTimeout: f.heartbeat.d,
		CaptureDNS:       *f.captureDNS,
		Logger:           logger,

		CACert:               *f.caCert,
		CAKey:                *f.caKey,
		CAUnconstrained:      *f.caUnconstrained,
		UpstreamCA:           *f.upstreamCA,
		ExplicitProxyListen:  *f.explicitListen,
		Node:                 *f.node,
		DNSResolvConf:        *f.resolvConf,
		DNSServers:           f.dnsServers.Values(),
		MaxBody:              *f.maxBody,
		MaxRequestBody:       *f.maxRequestBody,
		UpstreamIdleTimeout:  f.upstreamIdle.d,
		MaxInflightBytes:     f.maxInflight.n,
		BodyReadTimeout:      f.bodyReadTimeout.d,
		MaskTimeout:          f.maskTimeout.d,
		MaxConnsPerWorkload:  *f.maxConnsPerWorkload,
		ConnectionRecordRate: *f.connRecordRate,
		Mask: agent.MaskConfig{Disabled: *f.noMask, RulesFile: *f.maskRules,
			DisableRules: f.maskDisable.Values(), BlockRules: f.maskBlock.Values()},
		Policy:              *f.policy,
		PolicyFromCollector: *f.policyFromCollector,
		ApprovalWait:        f.approvalWait.d,
		Collector:           *f.collector,
		TokenFile:           *f.tokenFile,
		SpoolMaxBytes:       f.spoolMax.n,
		SpoolReserveBytes:   f.spoolReserve.n,
		SpoolFull:           *f.spoolFull,
		ShipInterval:        f.shipInterval.d,
		MetricsListen:       *f.metricsListen,
		Kube:                *f.kube,
		TrustDomain:         *f.trustDomain,
		IdentityLabels:      f.identityLabels.Values(),
	}, nil
}

func runAgent(ctx context.Context, args []string) error {
	return runAgentCommand(ctx, "agent", agentSummary, intercept.FailClosed, args)
}

// runAgentCommand runs the agent with the flags of `agent` and `run`, which
// differ only in their help and their default fail mode.
func runAgentCommand(ctx context.Context, name, summary string, failMode intercept.FailMode, args []string) error {
	fs := newFlagSet(name, summary)
	f := addAgentFlags(fs, "/var/lib/promptrail", failMode)
	if err := settings.Parse(fs, args, "config"); err != nil {
		return err
	}
	cfg, err := f.agentConfig()
	if err != nil {
		return err
	}
	return agent.Run(ctx, cfg)
}
