package targets

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// testZone is what the test server knows; every other name is NXDOMAIN.
func testZone() map[string][]string {
	return map[string][]string{
		"api.test.":      {"api.test. 300 IN A 192.0.2.1", "api.test. 120 IN A 192.0.2.2", "api.test. 600 IN AAAA 2001:db8::1"},
		"alias.test.":    {"alias.test. 60 IN CNAME edge.cdn.test.", "edge.cdn.test. 300 IN A 192.0.2.10"},
		"mapped.test.":   {"mapped.test. 100 IN AAAA ::ffff:192.0.2.30"},
		"zero-ttl.test.": {"zero-ttl.test. 0 IN A 192.0.2.40"},
		"big.test.":      {"big.test. 100 IN A 192.0.2.20"}, // UDP answers are truncated
		"servfail.test.": nil,                               // always SERVFAIL
		"nodata.test.":   {"nodata.test. 300 IN TXT \"no addresses\""},
		// Localhost names must never be asked; these answers would show it.
		"localhost.":     {"localhost. 300 IN A 203.0.113.1"},
		"foo.localhost.": {"foo.localhost. 300 IN A 203.0.113.1"},
	}
}

// testDNSServer serves testZone on 127.0.0.1 over UDP and TCP on one port.
type testDNSServer struct {
	port    string
	zone    map[string][]string
	mu      sync.Mutex
	queries map[string]int // "name type network" → count
}

func (s *testDNSServer) count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[key]
}

func (s *testDNSServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	q := req.Question[0]
	network := w.RemoteAddr().Network()
	s.mu.Lock()
	s.queries[fmt.Sprintf("%s %s %s", strings.ToLower(q.Name), dns.TypeToString[q.Qtype], network)]++
	s.mu.Unlock()

	m := new(dns.Msg)
	m.SetReply(req)
	name := strings.ToLower(q.Name)
	records, ok := s.zone[name]
	switch {
	case name == "servfail.test.":
		m.Rcode = dns.RcodeServerFailure
	case !ok:
		m.Rcode = dns.RcodeNameError
	case name == "big.test." && network == "udp":
		m.Truncated = true
	default:
		for _, text := range records {
			rr, err := dns.NewRR(text)
			if err != nil {
				panic(err)
			}
			if rr.Header().Rrtype == q.Qtype || rr.Header().Rrtype == dns.TypeCNAME {
				m.Answer = append(m.Answer, rr)
			}
		}
	}
	_ = w.WriteMsg(m)
}

func startDNSServer(t *testing.T) *testDNSServer {
	t.Helper()
	srv := &testDNSServer{zone: testZone(), queries: map[string]int{}}
	var (
		pc net.PacketConn
		ln net.Listener
	)
	// The TCP port must match the UDP one, which another process may hold.
	for attempt := 0; ln == nil; attempt++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err != nil {
			pc.Close()
			if attempt == 10 {
				t.Fatalf("no port free for both UDP and TCP: %v", err)
			}
		}
	}
	srv.port = strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port)
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: srv}, {Listener: ln, Handler: srv}} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go func() { _ = s.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = s.Shutdown() })
	}
	return srv
}

// newTestResolver returns a resolver using srv through a temporary
// resolv.conf listing nameservers (127.0.0.1 if none), with the system
// resolver replaced by hosts.
func newTestResolver(t *testing.T, srv *testDNSServer, hosts map[string][]netip.Addr, nameservers ...string) *dnsResolver {
	t.Helper()
	if len(nameservers) == 0 {
		nameservers = []string{"127.0.0.1"}
	}
	var conf strings.Builder
	for _, ns := range nameservers {
		fmt.Fprintf(&conf, "nameserver %s\n", ns)
	}
	path := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(path, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	r := NewDNSResolver(path, nil).(*dnsResolver)
	r.port = srv.port
	r.timeout = 500 * time.Millisecond
	r.lookupIP = func(ctx context.Context, network, host string) ([]netip.Addr, error) {
		if a, ok := hosts[host]; ok {
			return a, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return r
}

func TestDNSResolver(t *testing.T) {
	srv := startDNSServer(t)
	hosts := map[string][]netip.Addr{
		"hosts-only.test": addrs("::ffff:198.51.100.7"),
		"bar.localhost":   addrs("127.0.0.5"),
	}
	tests := []struct {
		host    string
		want    []string
		wantTTL time.Duration
		wantErr string
	}{
		{host: "api.test", want: []string{"192.0.2.1", "192.0.2.2", "2001:db8::1"}, wantTTL: 120 * time.Second},
		{host: "API.Test.", want: []string{"192.0.2.1", "192.0.2.2", "2001:db8::1"}, wantTTL: 120 * time.Second},
		{host: "alias.test", want: []string{"192.0.2.10"}, wantTTL: 60 * time.Second},
		{host: "mapped.test", want: []string{"192.0.2.30"}, wantTTL: 100 * time.Second},
		{host: "zero-ttl.test", want: []string{"192.0.2.40"}, wantTTL: 0},
		{host: "big.test", want: []string{"192.0.2.20"}, wantTTL: 100 * time.Second},
		{host: "hosts-only.test", want: []string{"198.51.100.7"}, wantTTL: 0},
		{host: "foo.localhost", want: []string{"127.0.0.1", "::1"}, wantTTL: 0},
		{host: "bar.localhost", want: []string{"127.0.0.5"}, wantTTL: 0},
		{host: "192.0.2.99", want: []string{"192.0.2.99"}, wantTTL: 0},
		{host: "servfail.test", wantErr: "SERVFAIL"},
		{host: "nodata.test", wantErr: "no A or AAAA records"},
		{host: "missing.test", wantErr: "NXDOMAIN"},
	}
	r := newTestResolver(t, srv, hosts)
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			got, ttl, err := r.Resolve(context.Background(), tt.host)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "system resolver") {
					t.Fatalf("Resolve() = %v, %v, %v; want an error naming %q and the system resolver", got, ttl, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			slices.SortFunc(got, netip.Addr.Compare)
			if want := addrs(tt.want...); !slices.Equal(got, want) || ttl != tt.wantTTL {
				t.Errorf("Resolve() = %v, %v; want %v, %v", got, ttl, want, tt.wantTTL)
			}
		})
	}
	if n := srv.count("big.test. A tcp"); n != 1 {
		t.Errorf("big.test A asked %d times over TCP after a truncated UDP answer, want 1", n)
	}
	for _, name := range []string{"localhost.", "foo.localhost."} {
		for _, network := range []string{"udp", "tcp"} {
			if n := srv.count(name + " A " + network); n != 0 {
				t.Errorf("%s sent to the nameserver %d times; localhost names must not be", name, n)
			}
		}
	}
}

// TestDNSResolverSystemFallback uses the real system resolver, which knows
// "localhost" from /etc/hosts (or gives nothing, and the resolver answers
// loopback per RFC 6761).
func TestDNSResolverSystemFallback(t *testing.T) {
	srv := startDNSServer(t)
	r := newTestResolver(t, srv, nil)
	r.lookupIP = net.DefaultResolver.LookupNetIP
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, ttl, err := r.Resolve(ctx, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) == 0 || ttl != 0 {
		t.Fatalf("Resolve(localhost) = %v, %v; want loopback addresses and TTL 0", got, ttl)
	}
	for _, a := range got {
		if !a.IsLoopback() || a.Is4In6() {
			t.Errorf("Resolve(localhost) gave %v; want unmapped loopback addresses", a)
		}
	}
}

func TestDNSResolverNameserverFailures(t *testing.T) {
	srv := startDNSServer(t)
	hosts := map[string][]netip.Addr{"api.test": addrs("198.51.100.1")}

	t.Run("dead first server is skipped", func(t *testing.T) {
		// Nothing listens on 127.0.0.2 at that port; the query fails or
		// times out and the next server answers.
		r := newTestResolver(t, srv, hosts, "127.0.0.2", "127.0.0.1")
		got, ttl, err := r.Resolve(context.Background(), "api.test")
		if err != nil || len(got) != 3 || ttl != 120*time.Second {
			t.Errorf("Resolve() = %v, %v, %v; want the three api.test addresses from the second server", got, ttl, err)
		}
	})
	t.Run("missing resolv.conf falls back", func(t *testing.T) {
		r := newTestResolver(t, srv, hosts)
		r.resolvConf = filepath.Join(t.TempDir(), "absent")
		got, ttl, err := r.Resolve(context.Background(), "api.test")
		if err != nil || !slices.Equal(got, addrs("198.51.100.1")) || ttl != 0 {
			t.Errorf("Resolve() = %v, %v, %v; want the system resolver's answer", got, ttl, err)
		}
	})
	t.Run("cancelled context", func(t *testing.T) {
		r := newTestResolver(t, srv, hosts)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, _, err := r.Resolve(ctx, "api.test")
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Resolve() error = %v, want context.Canceled", err)
		}
	})
}

// TestRunWithDNSResolver checks the pieces together: a Set resolving through
// the real DNS client against the test server.
func TestRunWithDNSResolver(t *testing.T) {
	srv := startDNSServer(t)
	a := newFakeApplier(t)
	s, err := New(Config{
		Hosts:    []string{"alias.test"},
		Resolver: newTestResolver(t, srv, nil),
		Logger:   discardLogger(),
	}, a)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	waitFor(t, "alias.test to be applied", func() bool { return slices.Equal(a.applied(), pfxs("192.0.2.10")) })
	e := s.Entries()
	if len(e) != 1 || e[0].Source != SourceResolved || e[0].Host != "alias.test" {
		t.Errorf("Entries() = %+v", e)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v", err)
	}
}

func TestDNSResolverSocketsGoThroughControl(t *testing.T) {
	// The agent's resolver sockets are registered as the agent's own (its
	// dialer Control), so the programs treat its lookups as its traffic.
	srv := startDNSServer(t)
	r := newTestResolver(t, srv, nil)
	var mu sync.Mutex
	seen := map[string]int{}
	r.control = func(network, _ string, _ syscall.RawConn) error {
		mu.Lock()
		defer mu.Unlock()
		seen[network]++
		return nil
	}
	// big.test's UDP answer is truncated, so it is asked again over TCP.
	for _, host := range []string{"api.test", "big.test"} {
		if _, _, err := r.Resolve(context.Background(), host); err != nil {
			t.Fatalf("Resolve(%s): %v", host, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if seen["udp4"] == 0 || seen["tcp4"] == 0 {
		t.Errorf("control saw sockets %v, want UDP and TCP ones", seen)
	}

	refused := newTestResolver(t, srv, nil)
	refused.control = func(string, string, syscall.RawConn) error { return errors.New("not registered") }
	refused.lookupIP = func(context.Context, string, string) ([]netip.Addr, error) { return nil, errors.New("no fallback") }
	if _, _, err := refused.Resolve(context.Background(), "api.test"); err == nil {
		t.Error("a resolver whose sockets cannot be registered resolved anyway")
	}
}
