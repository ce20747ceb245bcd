// Package kubecluster brings a single-node Kubernetes cluster up from
// nothing on this machine, for the e2e tests: its own certificates, etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler, containerd (the
// Debian package, with a config of its own), the kubelet and kube-proxy in
// iptables mode. Its addresses live only on a bridge it creates, the
// service range is routed onto that bridge, and teardown (in t.Cleanup)
// removes every process, mount, netns, cgroup, link, route, iptables chain
// and sysctl change it made. It needs root.
package kubecluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Config is the cluster's shape. Addresses must be private and used by
// nothing else on the machine: they are put on Bridge, and ServiceCIDR is
// routed onto it so that a service IP never leaves the machine.
type Config struct {
	Bin         string // directory holding kube-apiserver … etcd (scripts/kube-tools.sh)
	Bridge      string // bridge the harness creates; the CNI bridge plugin attaches pods to it
	NodeIP      string // the node's address on Bridge, also the pods' gateway
	PodCIDR     string // pods' subnet on Bridge, holds NodeIP
	PodRange    [2]string
	ServiceCIDR string // routed onto Bridge
	NodeName    string
	CgroupRoot  string // the kubelet's cgroupRoot, in every hierarchy
	// Ports, all on NodeIP or 127.0.0.1: apiserver, etcd client, etcd peer,
	// kubelet, kubelet healthz, controller-manager, scheduler, kube-proxy
	// healthz, kube-proxy metrics, containerd streaming.
	BasePort int
}

// DefaultConfig is the address plan of the e2e tests: 10.247.0.0/24 on
// bridge prk8s0, services in 10.247.128.0/24, ports from 15800.
func DefaultConfig(bin string) Config {
	return Config{
		Bin:         bin,
		Bridge:      "prk8s0",
		NodeIP:      "10.247.0.1",
		PodCIDR:     "10.247.0.0/24",
		PodRange:    [2]string{"10.247.0.10", "10.247.0.250"},
		ServiceCIDR: "10.247.128.0/24",
		NodeName:    "promptrail-e2e",
		CgroupRoot:  "/promptrail-e2e-kube",
		BasePort:    15800,
	}
}

func (c Config) port(i int) string { return strconv.Itoa(c.BasePort + i) }

// Cluster is a running cluster.
type Cluster struct {
	cfg        Config
	dir        string
	Kubeconfig string // admin (system:masters)
	procs      []*proc
	tb         testing.TB
	before     map[string]map[string]*table // iptables, ip6tables
	sysctls    map[string]string
	cniBefore  []string
	bridgeMade bool     // teardown removes only a bridge that Start made
	cgroups    []string // and only the cgroup roots it made
}

type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// Start brings the cluster up and registers its teardown with tb.Cleanup.
// It returns once the node is Ready and the default service account exists.
func Start(tb testing.TB, cfg Config) *Cluster {
	tb.Helper()
	// Short: containerd's and runc's socket paths must stay under 108 bytes.
	dir, err := os.MkdirTemp("/tmp", "prk-")
	if err != nil {
		tb.Fatal(err)
	}
	c := &Cluster{cfg: cfg, dir: dir, tb: tb, Kubeconfig: filepath.Join(dir, "admin.kubeconfig")}
	tb.Cleanup(c.teardown)
	start := time.Now()
	steps := []struct {
		name string
		fn   func() error
	}{
		{"host state", c.saveHost},
		{"network", c.setupNetwork},
		{"cgroups", c.setupCgroups},
		{"certificates", c.writePKI},
		{"etcd", c.startEtcd},
		{"kube-apiserver", c.startAPIServer},
		{"controller-manager and scheduler", c.startControlPlane},
		{"containerd", c.startContainerd},
		{"sandbox image", c.importPause},
		{"kubelet", c.startKubelet},
		{"kube-proxy", c.startKubeProxy},
		{"node Ready", c.waitNode},
	}
	for _, s := range steps {
		if err := s.fn(); err != nil {
			c.dumpLogs()
			tb.Fatalf("cluster: %s: %v", s.name, err)
		}
	}
	tb.Logf("cluster up in %v (node %s at %s)", time.Since(start).Round(time.Millisecond), cfg.NodeName, cfg.NodeIP)
	return c
}

// Dir is the cluster's working directory (state, logs, configs).
func (c *Cluster) Dir() string { return c.dir }

// Kubectl runs kubectl as the cluster admin and returns its output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.cfg.Bin, "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func (c *Cluster) saveHost() error {
	c.before = map[string]map[string]*table{}
	for _, tool := range []string{"iptables", "ip6tables"} {
		t, err := readTables(tool)
		if err != nil {
			return err
		}
		c.before[tool] = t
	}
	c.sysctls = map[string]string{}
	for _, k := range sysctls {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			c.sysctls[k] = strings.TrimSpace(string(b))
		}
	}
	filepath.WalkDir("/var/lib/cni", func(p string, _ os.DirEntry, err error) error {
		if err == nil {
			c.cniBefore = append(c.cniBefore, p)
		}
		return nil
	})
	return nil
}

func run(argv ...string) error {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// forwardChain keeps the pods' packets on the bridge.
const forwardChain = "PROMPTRAIL-E2E-FORWARD"

func (c *Cluster) setupNetwork() error {
	if err := exec.Command("ip", "link", "show", c.cfg.Bridge).Run(); err == nil {
		return fmt.Errorf("bridge %s exists already: another cluster runs, or one was left behind (ip link del %s)", c.cfg.Bridge, c.cfg.Bridge)
	}
	if err := run("ip", "link", "add", c.cfg.Bridge, "type", "bridge"); err != nil {
		return err
	}
	c.bridgeMade = true
	bits := strings.SplitN(c.cfg.PodCIDR, "/", 2)[1]
	for _, s := range [][]string{
		{"ip", "addr", "add", c.cfg.NodeIP + "/" + bits, "dev", c.cfg.Bridge},
		{"ip", "link", "set", c.cfg.Bridge, "up"},
		{"ip", "route", "add", c.cfg.ServiceCIDR, "dev", c.cfg.Bridge, "src", c.cfg.NodeIP},
		// Where the machine forwards (ip_forward=1 on many CI hosts), a
		// pod's packet to any other address would leave it: drop what would
		// cross between the bridge and another interface. A chain of its
		// own, so teardown removes it with the cluster's other chains.
		{"iptables", "-N", forwardChain},
		{"iptables", "-A", forwardChain, "-i", c.cfg.Bridge, "!", "-o", c.cfg.Bridge, "-j", "DROP"},
		{"iptables", "-A", forwardChain, "-o", c.cfg.Bridge, "!", "-i", c.cfg.Bridge, "-j", "DROP"},
		{"iptables", "-I", "FORWARD", "1", "-j", forwardChain},
	} {
		if err := run(s...); err != nil {
			return err
		}
	}
	return nil
}

// setupCgroups creates the kubelet's cgroup root in every hierarchy: the
// kubelet refuses a root that does not exist, and a v1 cpuset group takes
// no task until its cpus and mems are set.
func (c *Cluster) setupCgroups() error {
	for _, h := range cgroupHierarchies() {
		d := filepath.Join(h, c.cfg.CgroupRoot)
		if err := os.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", d, err)
		}
		c.cgroups = append(c.cgroups, d)
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if b, err := os.ReadFile(filepath.Join(h, f)); err == nil && !strings.HasSuffix(h, "unified") {
				if err := os.WriteFile(filepath.Join(d, f), b, 0); err != nil {
					return fmt.Errorf("%s/%s: %w", d, f, err)
				}
			}
		}
	}
	return nil
}

func (c *Cluster) pki(name string) string { return filepath.Join(c.dir, "pki", name) }

func (c *Cluster) writePKI() error {
	dir := filepath.Join(c.dir, "pki")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := newCA(dir)
	if err != nil {
		return err
	}
	nodeIP := net.ParseIP(c.cfg.NodeIP)
	svcIP, err := firstServiceIP(c.cfg.ServiceCIDR)
	if err != nil {
		return err
	}
	leaves := []leaf{
		{name: "apiserver", cn: "kube-apiserver", server: true, ips: []net.IP{nodeIP, svcIP, net.IPv4(127, 0, 0, 1)},
			dns: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"}},
		{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}},
		{name: "admin", cn: "promptrail-e2e-admin", orgs: []string{"system:masters"}},
		{name: "controller-manager", cn: "system:kube-controller-manager"},
		{name: "scheduler", cn: "system:kube-scheduler"},
		{name: "kube-proxy", cn: "system:kube-proxy"},
		{name: "kubelet-client", cn: "system:node:" + c.cfg.NodeName, orgs: []string{"system:nodes"}},
		{name: "kubelet", cn: c.cfg.NodeName, server: true, ips: []net.IP{nodeIP}, dns: []string{c.cfg.NodeName}},
	}
	for _, l := range leaves {
		if err := ca.issue(l); err != nil {
			return err
		}
	}
	if err := writeServiceAccountKeys(dir); err != nil {
		return err
	}
	for _, u := range []string{"admin", "controller-manager", "scheduler", "kube-proxy", "kubelet-client"} {
		if err := c.writeKubeconfig(u); err != nil {
			return err
		}
	}
	return nil
}

func firstServiceIP(cidr string) (net.IP, error) {
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		return nil, fmt.Errorf("service CIDR: %w", err)
	}
	ip := n.IP.To4()
	return net.IPv4(ip[0], ip[1], ip[2], ip[3]+1), nil
}

func (c *Cluster) apiURL() string { return "https://" + net.JoinHostPort(c.cfg.NodeIP, c.cfg.port(0)) }

func (c *Cluster) writeKubeconfig(user string) error {
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: e2e
  context:
    cluster: e2e
    user: %s
current-context: e2e
`, c.apiURL(), c.pki("ca.crt"), user, c.pki(user+".crt"), c.pki(user+".key"), user)
	return os.WriteFile(filepath.Join(c.dir, user+".kubeconfig"), []byte(kc), 0o600)
}

// start runs a component with its output in <dir>/logs/<name>.log. The
// component dies with the test process (Pdeathsig) if teardown never runs.
func (c *Cluster) start(name string, argv ...string) error {
	logs := filepath.Join(c.dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(logs, name+".log"))
	if err != nil {
		return err
	}
	defer f.Close()
	bin := argv[0]
	if !filepath.IsAbs(bin) {
		bin = filepath.Join(c.cfg.Bin, bin)
	}
	cmd := exec.Command(bin, argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "PATH=/usr/sbin:/usr/bin:/sbin:/bin")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: f.Name(), done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	c.procs = append(c.procs, p)
	return nil
}

// PIDs returns the process IDs of the components the harness started.
func (c *Cluster) PIDs() []int {
	var pids []int
	for _, p := range c.procs {
		pids = append(pids, p.cmd.Process.Pid)
	}
	return pids
}

// waitFor polls ok until it succeeds, a component exits, or timeout passes.
func (c *Cluster) waitFor(what string, timeout time.Duration, ok func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ok()
		if err == nil {
			return nil
		}
		for _, p := range c.procs {
			select {
			case <-p.done:
				return fmt.Errorf("%s exited (%v) while waiting for %s; see %s", p.name, p.cmd.ProcessState, what, p.log)
			default:
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: %w", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (c *Cluster) startEtcd() error {
	data := filepath.Join(c.dir, "etcd")
	client, peer := "http://127.0.0.1:"+c.cfg.port(1), "http://127.0.0.1:"+c.cfg.port(2)
	if err := c.start("etcd", "etcd", "--name", "e2e", "--data-dir", data,
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "e2e="+peer, "--listen-metrics-urls", "",
		"--unsafe-no-fsync", "--log-level", "warn"); err != nil {
		return err
	}
	return c.waitFor("etcd", 30*time.Second, func() error { return httpOK(http.DefaultClient, client+"/health") })
}

// httpOK is nil when GET url answers 200: a component's health endpoint.
func httpOK(hc *http.Client, url string) error {
	r, err := hc.Get(url)
	if err != nil {
		return err
	}
	r.Body.Close()
	if r.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, r.Status)
	}
	return nil
}

// adminClient talks to the apiserver with the admin certificate.
func (c *Cluster) adminClient() (*http.Client, error) {
	pool := x509.NewCertPool()
	b, err := os.ReadFile(c.pki("ca.crt"))
	if err != nil {
		return nil, err
	}
	pool.AppendCertsFromPEM(b)
	cert, err := tls.LoadX509KeyPair(c.pki("admin.crt"), c.pki("admin.key"))
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}, nil
}

func (c *Cluster) startAPIServer() error {
	if err := c.start("kube-apiserver", "kube-apiserver",
		"--etcd-servers", "http://127.0.0.1:"+c.cfg.port(1),
		"--bind-address", c.cfg.NodeIP, "--advertise-address", c.cfg.NodeIP, "--secure-port", c.cfg.port(0),
		"--cert-dir", filepath.Join(c.dir, "apiserver"),
		"--tls-cert-file", c.pki("apiserver.crt"), "--tls-private-key-file", c.pki("apiserver.key"),
		"--client-ca-file", c.pki("ca.crt"),
		"--kubelet-client-certificate", c.pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key", c.pki("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority", c.pki("ca.crt"),
		"--kubelet-preferred-address-types", "InternalIP",
		"--service-account-key-file", c.pki("sa.pub"), "--service-account-signing-key-file", c.pki("sa.key"),
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range", c.cfg.ServiceCIDR,
		"--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction",
		"--allow-privileged", "--profiling=false"); err != nil {
		return err
	}
	hc, err := c.adminClient()
	if err != nil {
		return err
	}
	return c.waitFor("kube-apiserver /readyz", 60*time.Second, func() error { return httpOK(hc, c.apiURL()+"/readyz") })
}

func (c *Cluster) startControlPlane() error {
	kc := func(u string) string { return filepath.Join(c.dir, u+".kubeconfig") }
	if err := c.start("kube-controller-manager", "kube-controller-manager",
		"--kubeconfig", kc("controller-manager"), "--authentication-kubeconfig", kc("controller-manager"),
		"--authorization-kubeconfig", kc("controller-manager"),
		"--bind-address", "127.0.0.1", "--secure-port", c.cfg.port(5), "--cert-dir", filepath.Join(c.dir, "kcm"),
		"--service-account-private-key-file", c.pki("sa.key"), "--root-ca-file", c.pki("ca.crt"),
		"--use-service-account-credentials", "--service-cluster-ip-range", c.cfg.ServiceCIDR,
		"--leader-elect=false", "--profiling=false"); err != nil {
		return err
	}
	return c.start("kube-scheduler", "kube-scheduler",
		"--kubeconfig", kc("scheduler"), "--authentication-kubeconfig", kc("scheduler"),
		"--authorization-kubeconfig", kc("scheduler"),
		"--bind-address", "127.0.0.1", "--secure-port", c.cfg.port(6), "--cert-dir", filepath.Join(c.dir, "scheduler"),
		"--leader-elect=false", "--profiling=false")
}

func (c *Cluster) containerdSock() string {
	return filepath.Join(c.dir, "containerd", "containerd.sock")
}

// PauseImage is the sandbox image the kubelet's pods run, built from scratch.
const PauseImage = "localhost/promptrail-e2e-pause:v1"

func (c *Cluster) startContainerd() error {
	cd := filepath.Join(c.dir, "containerd")
	cni := filepath.Join(c.dir, "cni")
	for _, d := range []string{cd, cni} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	conflist := fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "promptrail-e2e",
  "plugins": [{
    "type": "bridge", "bridge": %q, "isGateway": false, "ipMasq": false, "hairpinMode": true,
    "ipam": {"type": "host-local", "dataDir": %q,
      "ranges": [[{"subnet": %q, "rangeStart": %q, "rangeEnd": %q, "gateway": %q}]],
      "routes": [{"dst": "0.0.0.0/0"}]}
  }]
}
`, c.cfg.Bridge, filepath.Join(c.dir, "cni-ipam"), c.cfg.PodCIDR, c.cfg.PodRange[0], c.cfg.PodRange[1], c.cfg.NodeIP)
	// Not isGateway: the bridge plugin would turn on net.ipv4.ip_forward,
	// and pod packets to any other address could then leave the machine.
	// The node address on the bridge (which the harness sets) is the pods'
	// default gateway all the same: pods reach the node, each other and,
	// through kube-proxy's DNAT, services backed by either; nothing else.
	if err := os.WriteFile(filepath.Join(cni, "10-promptrail-e2e.conflist"), []byte(conflist), 0o644); err != nil {
		return err
	}
	// restrict_oom_score_adj: the bounding set lacks CAP_SYS_RESOURCE, so a
	// container may not get a lower score than containerd's own.
	conf := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = %[7]q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %[8]q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[9]q
    max_conf_num = 1
`, filepath.Join(cd, "root"), filepath.Join(cd, "state"), c.containerdSock(), c.containerdSock()+".ttrpc",
		filepath.Join(cd, "opt"), PauseImage, c.cfg.port(9), filepath.Join(cd, "runc"), cni)
	path := filepath.Join(cd, "config.toml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	if _, err := exec.LookPath("containerd"); err != nil {
		return fmt.Errorf("containerd not found (Debian package containerd): %w", err)
	}
	if err := c.start("containerd", "/usr/bin/containerd", "--config", path); err != nil {
		return err
	}
	return c.waitFor("containerd", 30*time.Second, func() error { return c.ctr("version") })
}

func (c *Cluster) ctr(args ...string) error {
	return run(append([]string{"ctr", "--address", c.containerdSock(), "--namespace", "k8s.io"}, args...)...)
}

func (c *Cluster) importPause() error {
	return c.buildImage(PauseImage, "github.com/promptrail/promptrail/internal/kubecluster/pause", "/pause")
}

func (c *Cluster) startKubelet() error {
	kd := filepath.Join(c.dir, "kubelet")
	if err := os.MkdirAll(kd, 0o755); err != nil {
		return err
	}
	resolv := filepath.Join(c.dir, "resolv.conf")
	// Pods resolve through the node address only: nothing answers there, so
	// no name lookup of theirs leaves the machine.
	if err := os.WriteFile(resolv, []byte("nameserver "+c.cfg.NodeIP+"\n"), 0o644); err != nil {
		return err
	}
	// failCgroupV1: this host's cgroups are hybrid (v1 controllers, v2 at
	// /sys/fs/cgroup/unified); cgroupfs: there is no systemd. The eviction
	// thresholds are low so that a full disk of the developer's does not
	// taint the node.
	conf := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %q
cgroupsPerQOS: true
containerRuntimeEndpoint: unix://%s
address: %s
port: %s
healthzBindAddress: 127.0.0.1
healthzPort: %s
readOnlyPort: 0
tlsCertFile: %s
tlsPrivateKeyFile: %s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %s}
authorization: {mode: Webhook}
failSwapOn: false
resolvConf: %s
podLogsDir: %s
clusterDomain: cluster.local
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "50Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
syncFrequency: 5s
fileCheckFrequency: 5s
`, c.cfg.CgroupRoot, c.containerdSock(), c.cfg.NodeIP, c.cfg.port(3), c.cfg.port(4),
		c.pki("kubelet.crt"), c.pki("kubelet.key"), c.pki("ca.crt"), resolv, filepath.Join(c.dir, "pod-logs"))
	path := filepath.Join(c.dir, "kubelet.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	return c.start("kubelet", "kubelet", "--config", path, "--kubeconfig", filepath.Join(c.dir, "kubelet-client.kubeconfig"),
		"--root-dir", kd, "--cert-dir", filepath.Join(c.dir, "kubelet-pki"),
		"--hostname-override", c.cfg.NodeName, "--node-ip", c.cfg.NodeIP, "--v", "1")
}

func (c *Cluster) startKubeProxy() error {
	// localhostNodePorts off: kube-proxy would otherwise set route_localnet;
	// conntrack sizes and timeouts 0: leave the host's as they are.
	conf := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: %s}
hostnameOverride: %s
bindAddress: %s
healthzBindAddress: 127.0.0.1:%s
metricsBindAddress: 127.0.0.1:%s
clusterCIDR: %s
nodePortAddresses: [%q]
iptables: {localhostNodePorts: false}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
`, filepath.Join(c.dir, "kube-proxy.kubeconfig"), c.cfg.NodeName, c.cfg.NodeIP, c.cfg.port(7), c.cfg.port(8),
		c.cfg.PodCIDR, c.cfg.NodeIP+"/32")
	path := filepath.Join(c.dir, "kube-proxy.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	if err := c.start("kube-proxy", "kube-proxy", "--config", path); err != nil {
		return err
	}
	return c.waitFor("kube-proxy /healthz", 60*time.Second, func() error {
		return httpOK(http.DefaultClient, "http://127.0.0.1:"+c.cfg.port(7)+"/healthz")
	})
}

func (c *Cluster) waitNode() error {
	ctx := context.Background()
	err := c.waitFor("node "+c.cfg.NodeName+" Ready", 90*time.Second, func() error {
		_, err := c.Kubectl(ctx, "wait", "--for=condition=Ready", "node/"+c.cfg.NodeName, "--timeout=5s")
		return err
	})
	if err != nil {
		return err
	}
	return c.waitFor("service account default/default", 60*time.Second, func() error {
		_, err := c.Kubectl(ctx, "get", "serviceaccount", "default", "-n", "default")
		return err
	})
}

func (c *Cluster) dumpLogs() {
	for _, p := range c.procs {
		b, _ := os.ReadFile(p.log)
		if len(b) > 3000 {
			b = b[len(b)-3000:]
		}
		c.tb.Logf("--- %s (tail of %s)\n%s", p.name, p.log, b)
	}
}
