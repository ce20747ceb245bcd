package targets

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"time"
)

const (
	// resolveTimeout bounds one Resolve call so that a hung resolver cannot
	// stall refreshes and expiry for every other host.
	resolveTimeout = 30 * time.Second
	// idleWake makes Run take a pass now and then even with nothing
	// scheduled, which costs nothing and bounds the damage of a missed wake-up.
	idleWake = time.Hour
)

type resolveResult struct {
	addrs []netip.Addr
	ttl   time.Duration
	err   error
}

// Run applies the static entries, resolves every configured host and then
// re-resolves each host when its own TTL runs out, expiring entries as they
// lapse. It returns ctx.Err() once ctx is cancelled. Resolver and Applier
// failures are logged and retried after RetryInterval; entries already in the
// set stay until they expire, so a DNS outage does not cut interception.
func (s *Set) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("targets: Run is already running on this Set; call it once")
	}
	defer s.running.Store(false)
	defer func() {
		s.mu.Lock()
		s.wakeAt = time.Time{}
		s.mu.Unlock()
	}()

	s.sync()
	due := make(map[string]time.Time, len(s.names)) // missing: resolve now
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		s.resolveDue(ctx, due)
		if err := ctx.Err(); err != nil {
			return err
		}
		s.ExpireNow()
		timer.Reset(max(s.nextWake(due).Sub(s.now()), 0))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		case <-s.wake:
		}
	}
}

// resolveDue resolves, concurrently, every host whose time in due has come
// and records when each is due next.
func (s *Set) resolveDue(ctx context.Context, due map[string]time.Time) {
	now := s.now()
	var hosts []string
	for _, h := range s.names {
		if !due[h].After(now) {
			hosts = append(hosts, h)
		}
	}
	if len(hosts) == 0 {
		return
	}
	results := make([]resolveResult, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Go(func() {
			rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
			defer cancel()
			r := &results[i]
			r.addrs, r.ttl, r.err = s.resolver.Resolve(rctx, h)
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return // errors caused by shutting down are not worth logging
	}
	now = s.now()
	for i, h := range hosts {
		due[h] = s.recordResolved(h, results[i], now)
	}
}

// recordResolved adds a resolution's addresses and returns when to resolve
// the host again. Addresses missing from the answer are left to expire rather
// than removed, because clients may still hold them in their caches.
func (s *Set) recordResolved(host string, r resolveResult, now time.Time) time.Time {
	if r.err != nil {
		s.log.Warn("resolving target host failed; keeping its current addresses until they expire",
			"host", host, "retry_in", s.retry, "err", r.err)
		return now.Add(s.retry)
	}
	addrs := make([]netip.Addr, 0, len(r.addrs))
	for _, a := range r.addrs {
		if a = a.Unmap(); usableAddr(a) {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		s.log.Warn("target host resolved to no usable address; keeping its current addresses until they expire",
			"host", host, "answer", r.addrs, "retry_in", s.retry)
		return now.Add(s.retry)
	}
	ttl := s.clampTTL(r.ttl)
	exp := now.Add(ttl + s.grace)
	s.mu.Lock()
	for _, a := range addrs {
		s.addLocked(addrPrefix(a), holder{source: SourceResolved, host: host}, exp)
	}
	s.mu.Unlock()
	s.log.Debug("resolved target host", "host", host, "addrs", addrs, "ttl", ttl)
	return now.Add(ttl)
}

// ExpireNow drops entries whose time has passed and brings the Applier in
// step with the set, retrying an earlier failed ApplyTargets.
func (s *Set) ExpireNow() {
	s.mu.Lock()
	s.expireLocked(s.now())
	s.mu.Unlock()
	s.sync()
}

// ApplyNow sends the entries the set holds now (the static ones, before
// Run) to the Applier, so that a caller can report itself running only
// once configured CIDRs and IPs are intercepted. Run does the same first
// thing; calling both is harmless.
func (s *Set) ApplyNow() { s.sync() }

// sync sends the difference between the set and what the Applier holds.
func (s *Set) sync() {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()

	var add, remove []netip.Prefix
	s.mu.Lock()
	for p := range s.prefixes {
		if _, ok := s.applied[p]; !ok {
			add = append(add, p)
		}
	}
	for p := range s.applied {
		if _, ok := s.prefixes[p]; !ok {
			remove = append(remove, p)
		}
	}
	s.mu.Unlock()
	if len(add) == 0 && len(remove) == 0 {
		s.applyFailed.Store(false)
		return
	}
	// Sorted so that logs and the kernel see the same order on every run.
	slices.SortFunc(add, netip.Prefix.Compare)
	slices.SortFunc(remove, netip.Prefix.Compare)
	if err := s.applier.ApplyTargets(add, remove); err != nil {
		s.applyFailed.Store(true)
		s.log.Error("updating the kernel target map failed; will retry",
			"add", len(add), "remove", len(remove), "retry_in", s.retry, "err", err)
		return
	}
	s.applyFailed.Store(false)
	for _, p := range add {
		s.applied[p] = struct{}{}
	}
	for _, p := range remove {
		delete(s.applied, p)
	}
	// One line per change: an auditor can tell when an address was intercepted.
	for _, p := range add {
		s.log.Info("target added", "prefix", p.String())
	}
	for _, p := range remove {
		s.log.Info("target removed", "prefix", p.String())
	}
}

// nextWake returns the earliest of: a host due for resolution, an entry due to
// expire, a retry of a failed apply. It also publishes the result so that
// ObserveDNS knows whether it must wake Run for an earlier expiry.
func (s *Set) nextWake(due map[string]time.Time) time.Time {
	now := s.now()
	next := now.Add(idleWake)
	for _, t := range due {
		next = earlier(next, t)
	}
	if s.applyFailed.Load() {
		next = earlier(next, now.Add(s.retry))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, hs := range s.prefixes {
		for _, exp := range hs {
			if !exp.IsZero() {
				next = earlier(next, exp)
			}
		}
	}
	s.wakeAt = next
	return next
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// wakeRun makes a sleeping Run take a pass; a pending wake-up is enough.
func (s *Set) wakeRun() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}
