package proxy

import (
	"context"
	"errors"
	"fmt"
	"golang.org/x/time/rate"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/promptrail/promptrail/agent/intercept"
)

// Defaults of the budgets that keep one workload from exhausting the agent.
const (
	defaultMaxInflightBytes    = 256 << 20
	defaultInflightWait        = 2 * time.Second
	defaultBodyReadTimeout     = 30 * time.Second
	defaultMaskTimeout         = 2 * time.Second
	defaultMaxConnsPerWorkload = 256
	// defaultConnectionRecordRate is per client cgroup and second.
	defaultConnectionRecordRate = 20
)

// budgetError is a request refused because a budget was hit: the status
// and code the client gets, and the message that both it and the record
// carry.
type budgetError struct {
	status int
	code   string
	msg    string
}

func (e *budgetError) Error() string { return e.msg }

// memBudget is the node-wide budget of bytes buffered for bodies in flight:
// request bodies (read whole before they are masked and spooled) and the
// response bodies masked whole. Without it, six parallel 30 MB bodies took
// 2 GB of memory. An eighth of it is kept for small bodies (up to
// smallCharge): semaphore.Weighted serves waiters in order, and an
// ordinary chat request must not queue behind a 30 MB one.
type memBudget struct {
	big, small *semaphore.Weighted
	size       int64 // of both
	bigSize    int64
	wait       time.Duration
}

// smallCharge is the most that one body takes from the small bodies' part.
const smallCharge = 256 << 10

func newMemBudget(size int64, wait time.Duration) *memBudget {
	small := min(max(size/8, smallCharge), size)
	big := max(size-small, 1)
	return &memBudget{big: semaphore.NewWeighted(big), small: semaphore.NewWeighted(small), size: size, bigSize: big, wait: wait}
}

// memHold is what one exchange holds of a memBudget; release returns it.
type memHold struct {
	b          *memBudget
	big, small int64
}

func (b *memBudget) hold() *memHold { return &memHold{b: b} }

// grow reserves n more bytes, waiting at most the budget's wait for them.
func (h *memHold) grow(ctx context.Context, n int64) error {
	b := h.b
	sem, held := b.big, &h.big
	if h.big == 0 && h.small+n <= smallCharge {
		sem, held = b.small, &h.small
	}
	if sem == b.big && h.big+n > b.bigSize {
		return &budgetError{http.StatusRequestEntityTooLarge, "promptrail_memory_budget",
			fmt.Sprintf("promptrail: the body needs more than the agent's buffer for bodies in flight (%d bytes); nothing was sent", b.size)}
	}
	wctx, cancel := context.WithTimeout(ctx, b.wait)
	defer cancel()
	if err := sem.Acquire(wctx, n); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for buffer space: %w", ctx.Err())
		}
		return &budgetError{http.StatusServiceUnavailable, "promptrail_memory_budget",
			fmt.Sprintf("promptrail: the agent's buffer for bodies in flight (%d bytes) is full; nothing was sent, retry later", b.size)}
	}
	*held += n
	return nil
}

func (h *memHold) release() {
	if h.big > 0 {
		h.b.big.Release(h.big)
	}
	if h.small > 0 {
		h.b.small.Release(h.small)
	}
	h.big, h.small = 0, 0
}

// bodyCharge is how many bytes of the budget a byte of buffer costs: the
// body, its masked copy, and the text the record parses out of it.
const bodyCharge = 3

// readBody reads r whole, up to limit+1 bytes (so that the caller sees a
// body over limit), reserving from h the buffer it allocates before it
// allocates it. hint is the announced length (Content-Length), -1 if
// none: a body of known length gets one buffer of that size. When the
// budget refuses, it returns what it read so far with the error.
func readBody(ctx context.Context, r io.Reader, h *memHold, hint, limit int64) ([]byte, error) {
	const minGrow = 64 << 10
	var buf []byte
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > limit {
				return buf, nil
			}
			want := max(int64(2*cap(buf)), minGrow)
			if hint >= 0 && len(buf) == 0 {
				want = hint + 1 // one more byte tells an overlong body
			}
			want = min(want, limit+1)
			if err := h.grow(ctx, bodyCharge*(want-int64(cap(buf)))); err != nil {
				return buf, err
			}
			nb := make([]byte, len(buf), want)
			copy(nb, buf)
			buf = nb
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// drainBody reads what is left of a refused request's body, within the
// body read timeout and at most limit bytes, into nothing: a server that
// answers and closes while the client is still sending makes the client's
// kernel discard the answer (a TCP reset), so the client would see a
// broken connection instead of the error.
func drainBody(w http.ResponseWriter, r *http.Request, timeout time.Duration, limit int64) {
	http.NewResponseController(w).SetReadDeadline(time.Now().Add(timeout))
	io.CopyN(io.Discard, r.Body, limit)
}

// isMemBudget reports whether err is a refusal by the in-flight budget.
func isMemBudget(err error) bool {
	var be *budgetError
	return errors.As(err, &be) && be.code == "promptrail_memory_budget"
}

// errBodyTimeout is the refusal of a request whose body did not arrive
// within the body read timeout.
func errBodyTimeout(d time.Duration) *budgetError {
	return &budgetError{http.StatusRequestTimeout, "promptrail_body_timeout",
		fmt.Sprintf("promptrail: the request body did not arrive within %v; nothing was sent", d)}
}

// deadlineExpired reports whether err is a read deadline that expired (HTTP/1.1
// returns the connection's timeout, HTTP/2 the stream's).
func deadlineExpired(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// errMaskBudget is the refusal of a body whose masking took longer than
// the mask timeout: it is not forwarded half masked.
func errMaskBudget(d time.Duration, where string) *budgetError {
	status := http.StatusRequestEntityTooLarge // the same body would fail again: no retry
	if where == "response" {
		status = http.StatusBadGateway
	}
	return &budgetError{status, "promptrail_mask_budget",
		fmt.Sprintf("promptrail: searching the %s body for secrets took longer than %v, so it was not passed on; send a smaller body or one with fewer credential-like keywords", where, d)}
}

// connLimiter caps the concurrent connections of each client cgroup, so
// that one workload opening thousands of connections leaves room for the
// others.
type connLimiter struct {
	max int
	mu  sync.Mutex
	n   map[uint64]int
}

func newConnLimiter(max int) *connLimiter {
	return &connLimiter{max: max, n: map[uint64]int{}}
}

// admit counts a connection of cgroup id and reports whether it is within
// the cap; if it is, done uncounts it.
func (l *connLimiter) admit(id uint64) (done func(), ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[id] >= l.max {
		return nil, false
	}
	l.n[id]++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.n[id]--; l.n[id] == 0 {
			delete(l.n, id)
		}
	}, true
}

// admit counts a redirected connection against its cgroup's cap. Over the
// cap it logs the refusal and returns nil: the caller closes the
// connection. Otherwise the caller calls release when the connection ends.
func (s *Server) admit(o intercept.Origin, log *slog.Logger) (release func()) {
	release, ok := s.perCgroup.admit(o.CgroupID)
	if !ok {
		log.Warn("connection refused: the workload's connection cap is reached", "max_conns_per_workload", s.perCgroup.max)
		if s.cfg.OnConnRefused != nil {
			s.cfg.OnConnRefused("promptrail_conn_cap")
		}
		return nil
	}
	return release
}

// releaseOnClose returns c, which calls release once when it is first
// closed: a decrypted connection outlives the handler that admitted it.
func releaseOnClose(c *helloConn, release func()) net.Conn {
	return &countedConn{helloConn: c, release: sync.OnceFunc(release)}
}

type countedConn struct {
	*helloConn
	release func()
}

func (c *countedConn) Close() error {
	defer c.release()
	return c.helloConn.Close()
}

func (d *decrypter) budgetHit(code string) {
	if d.cfg.OnBudgetHit != nil {
		d.cfg.OnBudgetHit(code)
	}
}

// recordLimiter bounds how fast one client cgroup makes connection
// records: a workload that opens connections it knows will be refused
// (or spliced) must not flood the spool that every workload's requests
// wait on. Over the rate a connection is refused without a record:
// nothing of it reaches the target, so nothing escapes the record.
type recordLimiter struct {
	perSec float64
	burst  int
	mu     sync.Mutex
	by     map[uint64]*rate.Limiter
}

// maxLimited bounds the cgroups tracked; past it, those at full burst
// (idle) are forgotten.
const maxLimited = 4096

func newRecordLimiter(perSec float64, burst int) *recordLimiter {
	return &recordLimiter{perSec: perSec, burst: burst, by: map[uint64]*rate.Limiter{}}
}

func (l *recordLimiter) allow(id uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.by[id]
	if !ok {
		if len(l.by) >= maxLimited {
			for k, v := range l.by {
				if v.Tokens() >= float64(l.burst) {
					delete(l.by, k)
				}
			}
		}
		lim = rate.NewLimiter(rate.Limit(l.perSec), l.burst)
		l.by[id] = lim
	}
	return lim.Allow()
}
