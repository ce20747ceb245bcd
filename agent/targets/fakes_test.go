package targets

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type applyCall struct{ add, remove []netip.Prefix }

// fakeApplier records calls and checks the Applier contract: no duplicate
// adds, no removal of what is not there.
type fakeApplier struct {
	t       testing.TB
	mu      sync.Mutex
	fail    error
	calls   []applyCall
	state   map[netip.Prefix]bool
	changed chan struct{}
}

func newFakeApplier(t testing.TB) *fakeApplier {
	return &fakeApplier{t: t, state: map[netip.Prefix]bool{}, changed: make(chan struct{}, 1)}
}

func (f *fakeApplier) ApplyTargets(add, remove []netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, applyCall{slices.Clone(add), slices.Clone(remove)})
	if f.fail != nil {
		return f.fail
	}
	if len(add) == 0 && len(remove) == 0 {
		f.t.Errorf("ApplyTargets called without changes")
	}
	for _, p := range add {
		if f.state[p] {
			f.t.Errorf("ApplyTargets: duplicate add of %v", p)
		}
		f.state[p] = true
	}
	for _, p := range remove {
		if !f.state[p] {
			f.t.Errorf("ApplyTargets: removal of %v, which was never added", p)
		}
		delete(f.state, p)
	}
	select {
	case f.changed <- struct{}{}:
	default:
	}
	return nil
}

func (f *fakeApplier) setFail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

// applied returns the prefixes the applier holds, sorted.
func (f *fakeApplier) applied() []netip.Prefix {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netip.Prefix
	for p := range f.state {
		out = append(out, p)
	}
	slices.SortFunc(out, netip.Prefix.Compare)
	return out
}

func (f *fakeApplier) lastCall() applyCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return applyCall{}
	}
	return f.calls[len(f.calls)-1]
}

func (f *fakeApplier) numCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

type fakeAnswer struct {
	addrs []netip.Addr
	ttl   time.Duration
	err   error
}

type fakeResolver struct {
	mu      sync.Mutex
	answers map[string]fakeAnswer
	calls   map[string]int
}

func newFakeResolver() *fakeResolver {
	return &fakeResolver{answers: map[string]fakeAnswer{}, calls: map[string]int{}}
}

func (r *fakeResolver) set(host string, a fakeAnswer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.answers[host] = a
}

func (r *fakeResolver) count(host string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[host]
}

func (r *fakeResolver) Resolve(ctx context.Context, host string) ([]netip.Addr, time.Duration, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls[host]++
	a, ok := r.answers[host]
	if !ok {
		return nil, 0, fmt.Errorf("fake resolver: no answer for %q", host)
	}
	return a.addrs, a.ttl, a.err
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newTestSet returns a Set on a fake clock starting at t0; cfg's Now,
// Logger and DNSSources (testSources) are filled in unless set.
func newTestSet(t testing.TB, cfg Config) (*Set, *fakeApplier, *fakeClock) {
	t.Helper()
	clock := &fakeClock{now: t0}
	if cfg.Now == nil {
		cfg.Now = clock.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = discardLogger()
	}
	if cfg.DNSSources == nil {
		cfg.DNSSources = testSources()
	}
	a := newFakeApplier(t)
	s, err := New(cfg, a)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s, a, clock
}

func pfx(s string) netip.Prefix {
	if !strings.Contains(s, "/") {
		a := netip.MustParseAddr(s)
		return netip.PrefixFrom(a, a.BitLen())
	}
	return netip.MustParsePrefix(s)
}

func pfxs(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = pfx(s)
	}
	return out
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

type nopApplier struct{}

func (nopApplier) ApplyTargets(add, remove []netip.Prefix) error { return nil }

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
