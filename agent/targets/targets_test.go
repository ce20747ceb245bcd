package targets

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		applier Applier
		want    string // substring of the error
	}{
		{"nil applier", Config{}, nil, "nil Applier"},
		{"empty host", Config{Hosts: []string{""}}, nopApplier{}, `host ""`},
		{"port", Config{Hosts: []string{"api.openai.com:443"}}, nopApplier{}, `host "api.openai.com:443"`},
		{"url", Config{Hosts: []string{"https://api.openai.com"}}, nopApplier{}, `host "https://api.openai.com"`},
		{"wildcard", Config{Hosts: []string{"*.openai.com"}}, nopApplier{}, "wildcards"},
		{"empty label", Config{Hosts: []string{"api..openai.com"}}, nopApplier{}, "empty label"},
		{"hyphen", Config{Hosts: []string{"-api.openai.com"}}, nopApplier{}, "hyphen"},
		{"space", Config{Hosts: []string{"api openai.com"}}, nopApplier{}, `host "api openai.com"`},
		{"long label", Config{Hosts: []string{strings.Repeat("a", 64) + ".com"}}, nopApplier{}, "longer than 63"},
		{"long name", Config{Hosts: []string{strings.Repeat("abcdefghi.", 26) + "com"}}, nopApplier{}, "DNS allows 253"},
		{"zoned address", Config{Hosts: []string{"fe80::1%eth0"}}, nopApplier{}, "zone"},
		{"invalid prefix", Config{CIDRs: []netip.Prefix{{}}}, nopApplier{}, "CIDRs[0]"},
		{"negative MinTTL", Config{MinTTL: -time.Second}, nopApplier{}, "MinTTL"},
		{"MaxTTL below MinTTL", Config{MinTTL: time.Minute, MaxTTL: time.Second}, nopApplier{}, "MaxTTL"},
		{"negative retry", Config{RetryInterval: -time.Second}, nopApplier{}, "RetryInterval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg, tt.applier)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New() error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestStaticEntries(t *testing.T) {
	s, a, _ := newTestSet(t, Config{
		Hosts: []string{"API.OpenAI.com.", "192.0.2.7", "::ffff:198.51.100.1", "2001:db8::9", "api.openai.com"},
		CIDRs: []netip.Prefix{pfx("10.1.2.3/8"), pfx("::ffff:172.16.0.0/108"), pfx("2001:db8:1::/48")},
	})
	if got, want := s.names, []string{"api.openai.com"}; !slices.Equal(got, want) {
		t.Errorf("hosts to resolve = %q, want %q", got, want)
	}
	wantStatic := pfxs("10.0.0.0/8", "172.16.0.0/12", "192.0.2.7", "198.51.100.1", "2001:db8::9", "2001:db8:1::/48")
	slices.SortFunc(wantStatic, netip.Prefix.Compare)
	var got []netip.Prefix
	for _, e := range s.Entries() {
		if e.Source != SourceCIDR || !e.Expires.IsZero() {
			t.Errorf("entry %+v: want a static cidr entry", e)
		}
		got = append(got, e.Prefix)
	}
	if !slices.Equal(got, wantStatic) {
		t.Errorf("entries = %v, want %v", got, wantStatic)
	}
	if a.numCalls() != 0 {
		t.Errorf("New applied %d times; applying is Run's job", a.numCalls())
	}
	s.ExpireNow()
	if got := a.applied(); !slices.Equal(got, wantStatic) {
		t.Errorf("applied = %v, want %v", got, wantStatic)
	}

	for _, tt := range []struct {
		addr string
		want bool
	}{
		{"10.200.0.1", true},
		{"::ffff:10.200.0.1", true},
		{"172.31.255.255", true},
		{"172.32.0.0", false},
		{"192.0.2.7", true},
		{"192.0.2.8", false},
		{"198.51.100.1", true},
		{"2001:db8::9", true},
		{"2001:db8:1:ffff::1", true},
		{"2001:db8:2::1", false},
	} {
		if got := s.Contains(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("Contains(%s) = %v, want %v", tt.addr, got, tt.want)
		}
	}
	if s.Contains(netip.Addr{}) {
		t.Error("Contains(zero Addr) = true")
	}
}

func TestResolvedTTLClamping(t *testing.T) {
	tests := []struct {
		name      string
		ttl       time.Duration
		grace     time.Duration
		wantTTL   time.Duration // time until re-resolution
		wantGrace time.Duration // added to the expiry on top of wantTTL
	}{
		{"zero uses MinTTL", 0, -1, 30 * time.Second, 0},
		{"short raised to MinTTL", 5 * time.Second, -1, 30 * time.Second, 0},
		{"in range kept", 300 * time.Second, -1, 300 * time.Second, 0},
		{"long cut to MaxTTL", 24 * time.Hour, -1, time.Hour, 0},
		{"default grace", 300 * time.Second, 0, 300 * time.Second, 5 * time.Minute},
		{"custom grace", 300 * time.Second, time.Minute, 300 * time.Second, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newFakeResolver()
			r.set("api.openai.com", fakeAnswer{addrs: addrs("192.0.2.1", "::ffff:192.0.2.2"), ttl: tt.ttl})
			s, a, _ := newTestSet(t, Config{Hosts: []string{"api.openai.com"}, Resolver: r, Grace: tt.grace})
			due := map[string]time.Time{}
			s.resolveDue(context.Background(), due)
			s.ExpireNow()

			if got, want := due["api.openai.com"], t0.Add(tt.wantTTL); !got.Equal(want) {
				t.Errorf("next resolution at %v, want %v", got, want)
			}
			wantExp := t0.Add(tt.wantTTL + tt.wantGrace)
			want := []Entry{
				{Prefix: pfx("192.0.2.1"), Source: SourceResolved, Host: "api.openai.com", Expires: wantExp},
				{Prefix: pfx("192.0.2.2"), Source: SourceResolved, Host: "api.openai.com", Expires: wantExp},
			}
			if got := s.Entries(); !slices.Equal(got, want) {
				t.Errorf("Entries() = %+v, want %+v", got, want)
			}
			if got := a.applied(); !slices.Equal(got, pfxs("192.0.2.1", "192.0.2.2")) {
				t.Errorf("applied = %v", got)
			}
		})
	}
}

// A refresh that returns new addresses must not drop the old ones before they
// expire: clients may still be connecting to them from their caches.
func TestRefreshKeepsOldAddressesUntilExpiry(t *testing.T) {
	r := newFakeResolver()
	r.set("api.openai.com", fakeAnswer{addrs: addrs("192.0.2.1"), ttl: time.Minute})
	s, a, clock := newTestSet(t, Config{Hosts: []string{"api.openai.com"}, Resolver: r, Grace: 30 * time.Second})
	ctx := context.Background()
	due := map[string]time.Time{}

	s.resolveDue(ctx, due)
	s.ExpireNow()
	if got := a.lastCall(); !slices.Equal(got.add, pfxs("192.0.2.1")) || len(got.remove) != 0 {
		t.Fatalf("first apply = %+v", got)
	}

	clock.Advance(59 * time.Second)
	s.resolveDue(ctx, due)
	if n := r.count("api.openai.com"); n != 1 {
		t.Fatalf("resolved %d times before the TTL ran out, want 1", n)
	}

	clock.Advance(time.Second) // t0+60s: TTL is due
	r.set("api.openai.com", fakeAnswer{addrs: addrs("192.0.2.2"), ttl: time.Minute})
	s.resolveDue(ctx, due)
	s.ExpireNow()
	if n := r.count("api.openai.com"); n != 2 {
		t.Fatalf("resolved %d times once the TTL ran out, want 2", n)
	}
	if got := a.lastCall(); !slices.Equal(got.add, pfxs("192.0.2.2")) || len(got.remove) != 0 {
		t.Errorf("refresh apply = %+v, want only 192.0.2.2 added", got)
	}
	if !s.Contains(netip.MustParseAddr("192.0.2.1")) {
		t.Error("old address dropped at refresh, before its expiry")
	}

	clock.Advance(29 * time.Second) // t0+89s: old one still within grace
	s.ExpireNow()
	if !s.Contains(netip.MustParseAddr("192.0.2.1")) {
		t.Error("old address dropped before TTL+grace")
	}
	clock.Advance(time.Second) // t0+90s
	s.ExpireNow()
	if s.Contains(netip.MustParseAddr("192.0.2.1")) {
		t.Error("old address still present after TTL+grace")
	}
	if got := a.lastCall(); len(got.add) != 0 || !slices.Equal(got.remove, pfxs("192.0.2.1")) {
		t.Errorf("expiry apply = %+v, want only 192.0.2.1 removed", got)
	}
	if got := a.applied(); !slices.Equal(got, pfxs("192.0.2.2")) {
		t.Errorf("applied = %v, want [192.0.2.2/32]", got)
	}
}

func TestResolverErrorKeepsEntriesAndRetries(t *testing.T) {
	r := newFakeResolver()
	r.set("api.openai.com", fakeAnswer{addrs: addrs("192.0.2.1"), ttl: time.Minute})
	s, a, clock := newTestSet(t, Config{
		Hosts: []string{"api.openai.com"}, Resolver: r, Grace: -1, RetryInterval: 5 * time.Second,
	})
	ctx := context.Background()
	due := map[string]time.Time{}
	s.resolveDue(ctx, due)
	s.ExpireNow()

	clock.Advance(time.Minute - time.Second)
	s.ExpireNow()
	clock.Advance(time.Second)
	r.set("api.openai.com", fakeAnswer{err: errors.New("SERVFAIL")})
	s.resolveDue(ctx, due)
	if got, want := due["api.openai.com"], clock.Now().Add(5*time.Second); !got.Equal(want) {
		t.Errorf("retry at %v, want %v", got, want)
	}
	// An empty answer is treated like an error too.
	clock.Advance(5 * time.Second)
	r.set("api.openai.com", fakeAnswer{addrs: addrs("0.0.0.0")})
	s.resolveDue(ctx, due)
	if got, want := due["api.openai.com"], clock.Now().Add(5*time.Second); !got.Equal(want) {
		t.Errorf("retry after empty answer at %v, want %v", got, want)
	}
	if n := r.count("api.openai.com"); n != 3 {
		t.Errorf("resolved %d times, want 3", n)
	}
	s.ExpireNow()
	if s.Contains(netip.MustParseAddr("192.0.2.1")) {
		t.Error("entry outlived its TTL while the resolver was failing")
	}
	if got := a.applied(); len(got) != 0 {
		t.Errorf("applied = %v, want empty", got)
	}
}

func TestApplyFailureConverges(t *testing.T) {
	s, a, clock := newTestSet(t, Config{
		Hosts: []string{"api.openai.com"}, Resolver: newFakeResolver(), CIDRs: pfxs("10.0.0.0/8"), Grace: -1,
	})
	a.setFail(errors.New("map full"))
	s.ExpireNow()
	if a.numCalls() != 1 || s.applyFailed.Load() != true {
		t.Fatalf("calls = %d, applyFailed = %v after a failing apply", a.numCalls(), s.applyFailed.Load())
	}
	if err := s.ObserveDNS(mustPacket(t, false, 53, response("api.openai.com", aRR("api.openai.com", "192.0.2.1", 60))), Arrival{}); err != nil {
		t.Fatal(err)
	}
	a.setFail(nil)
	s.ExpireNow()
	if got, want := a.lastCall().add, pfxs("10.0.0.0/8", "192.0.2.1"); !slices.Equal(got, want) {
		t.Errorf("retry added %v, want %v", got, want)
	}
	if s.applyFailed.Load() {
		t.Error("applyFailed still set after a successful retry")
	}
	s.ExpireNow() // nothing changed: must not call the applier
	// Two failures (ExpireNow, ObserveDNS) and one success.
	if n := a.numCalls(); n != 3 {
		t.Errorf("applier called %d times, want 3", n)
	}
	clock.Advance(time.Hour)
	s.ExpireNow()
	if got := a.applied(); !slices.Equal(got, pfxs("10.0.0.0/8")) {
		t.Errorf("applied = %v, want only the static prefix", got)
	}
}

func TestObserveAppliesAtOnce(t *testing.T) {
	s, a, _ := newTestSet(t, Config{Hosts: []string{"api.openai.com"}, Resolver: newFakeResolver()})
	pkt := mustPacket(t, false, 53, response("api.openai.com", aRR("api.openai.com", "192.0.2.1", 60)))
	if err := s.ObserveDNS(pkt, Arrival{}); err != nil {
		t.Fatal(err)
	}
	// Observed prefixes are applied at once, without waiting for Run.
	if got := a.applied(); !slices.Equal(got, pfxs("192.0.2.1")) {
		t.Errorf("applied = %v", got)
	}
}

// An address known from several sources lives as long as the longest.
func TestSeveralSourcesLongestWins(t *testing.T) {
	r := newFakeResolver()
	r.set("api.openai.com", fakeAnswer{addrs: addrs("192.0.2.1"), ttl: time.Minute})
	s, a, clock := newTestSet(t, Config{Hosts: []string{"api.openai.com"}, Resolver: r, Grace: -1})
	s.resolveDue(context.Background(), map[string]time.Time{})
	s.ExpireNow()
	pkt := mustPacket(t, false, 53, response("api.openai.com", aRR("api.openai.com", "192.0.2.1", 300)))
	if err := s.ObserveDNS(pkt, Arrival{}); err != nil {
		t.Fatal(err)
	}
	want := []Entry{
		{Prefix: pfx("192.0.2.1"), Source: SourceObserved, Host: "api.openai.com", Expires: t0.Add(300 * time.Second)},
		{Prefix: pfx("192.0.2.1"), Source: SourceResolved, Host: "api.openai.com", Expires: t0.Add(time.Minute)},
	}
	if got := s.Entries(); !slices.Equal(got, want) {
		t.Errorf("Entries() = %+v, want %+v", got, want)
	}
	clock.Advance(2 * time.Minute)
	s.ExpireNow()
	if !s.Contains(netip.MustParseAddr("192.0.2.1")) {
		t.Error("address dropped when the shorter-lived source expired")
	}
	clock.Advance(3 * time.Minute)
	s.ExpireNow()
	if s.Contains(netip.MustParseAddr("192.0.2.1")) || len(a.applied()) != 0 {
		t.Error("address kept after every source expired")
	}
	if n := a.numCalls(); n != 2 {
		t.Errorf("applier called %d times, want 2 (add, remove)", n)
	}
}

func TestObservedPerHostLimit(t *testing.T) {
	s, a, _ := newTestSet(t, Config{Hosts: []string{"api.openai.com"}, Resolver: newFakeResolver()})
	for i := range maxObservedPerHost {
		ip := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}).String()
		if err := s.ObserveDNS(mustPacket(t, false, 53, response("api.openai.com", aRR("api.openai.com", ip, 60))), Arrival{}); err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
	}
	err := s.ObserveDNS(mustPacket(t, false, 53, response("api.openai.com", aRR("api.openai.com", "192.0.2.1", 60))), Arrival{})
	if err == nil || !strings.Contains(err.Error(), "dropped 1") {
		t.Errorf("ObserveDNS over the limit: error = %v, want one saying it dropped 1", err)
	}
	// Refreshing a known address is still allowed.
	if err := s.ObserveDNS(mustPacket(t, false, 53, response("api.openai.com", aRR("api.openai.com", "10.0.0.5", 60))), Arrival{}); err != nil {
		t.Errorf("refreshing a known address over the limit: %v", err)
	}
	if got := len(a.applied()); got != maxObservedPerHost {
		t.Errorf("applied %d prefixes, want %d", got, maxObservedPerHost)
	}
}

// TestRun uses the real clock: each host must be re-resolved on its own TTL.
func TestRun(t *testing.T) {
	r := newFakeResolver()
	r.set("fast.example", fakeAnswer{addrs: addrs("192.0.2.1"), ttl: 20 * time.Millisecond})
	r.set("slow.example", fakeAnswer{addrs: addrs("192.0.2.2"), ttl: time.Hour})
	a := newFakeApplier(t)
	s, err := New(Config{
		Hosts:      []string{"fast.example", "slow.example"},
		CIDRs:      pfxs("10.0.0.0/8"),
		Resolver:   r,
		MinTTL:     10 * time.Millisecond,
		Grace:      -1,
		Logger:     discardLogger(),
		DNSSources: testSources(),
	}, a)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	waitFor(t, "fast.example to be re-resolved", func() bool { return r.count("fast.example") >= 5 })
	if n := r.count("slow.example"); n != 1 {
		t.Errorf("slow.example resolved %d times, want 1 (its TTL is an hour)", n)
	}
	waitFor(t, "all targets applied", func() bool { return len(a.applied()) == 3 })
	if err := s.Run(ctx); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second Run: error = %v, want 'already running'", err)
	}

	// An observed entry expiring before Run's next planned wake-up must
	// still be removed on time.
	pkt := mustPacket(t, false, 53, response("slow.example", aRR("slow.example", "192.0.2.99", 0)))
	if err := s.ObserveDNS(pkt, Arrival{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "observed entry to be applied and expire", func() bool {
		return !s.Contains(netip.MustParseAddr("192.0.2.99")) && !slices.Contains(a.applied(), pfx("192.0.2.99"))
	})

	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// TestConcurrentObserve exercises ObserveDNS from many goroutines while Run
// refreshes and expires; run with -race.
func TestConcurrentObserve(t *testing.T) {
	r := newFakeResolver()
	r.set("api.openai.com", fakeAnswer{addrs: addrs("192.0.2.1"), ttl: 5 * time.Millisecond})
	s, err := New(Config{
		Hosts: []string{"api.openai.com"}, Resolver: r, MinTTL: time.Millisecond, Grace: -1, Logger: discardLogger(),
		DNSSources: testSources(),
	}, newFakeApplier(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				ip := netip.AddrFrom4([4]byte{10, byte(g), 0, byte(i)}).String()
				pkt := mustPacket(t, g%2 == 0, 53, response("api.openai.com", aRR("api.openai.com", ip, 0)))
				if err := s.ObserveDNS(pkt, Arrival{}); err != nil {
					t.Error(err)
					return
				}
				s.Contains(netip.MustParseAddr(ip))
				if i%50 == 0 {
					s.Entries()
				}
			}
		})
	}
	wg.Wait()
	cancel()
	<-done
}
