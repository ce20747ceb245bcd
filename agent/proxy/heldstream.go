package proxy

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// DefaultApprovalKeepAlive is how often a streamed request held for
// approval gets an SSE comment: well below the idle timeouts of load
// balancers (60 s) and the SDKs' read timeouts.
const DefaultApprovalKeepAlive = 10 * time.Second

// maxHeldError bounds the error body a held stream turns into its error
// event.
const maxHeldError = 64 << 10

// heldStream answers a streamed request while it waits for approval: SSE
// headers at once and a ": keep-alive" comment every so often, so that
// neither the client nor a load balancer gives up. The status is sent
// then: whatever is written after it with an error status (an approval
// refused, the spool full, upstream failing) becomes one SSE event with
// the error body, which the SDKs surface as a stream error; a 2xx body
// (the upstream's stream) passes through.
type heldStream struct {
	w      http.ResponseWriter
	rc     *http.ResponseController
	header http.Header // what writers after the start set: too late to send

	mu     sync.Mutex
	failed bool
	errBuf bytes.Buffer

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

func startHeldStream(w http.ResponseWriter, every time.Duration) *heldStream {
	if every <= 0 {
		every = DefaultApprovalKeepAlive
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	hs := &heldStream{w: w, rc: http.NewResponseController(w), header: http.Header{}, stop: make(chan struct{}), done: make(chan struct{})}
	hs.comment()
	go func() {
		defer close(hs.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-hs.stop:
				return
			case <-t.C:
				hs.comment()
			}
		}
	}()
	return hs
}

func (hs *heldStream) comment() {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.w.Write([]byte(": keep-alive\n\n"))
	hs.rc.Flush()
}

// stopKeepAlive ends the comments, before the upstream's stream flows (a
// comment between two halves of an event would break it).
func (hs *heldStream) stopKeepAlive() {
	hs.stopOnce.Do(func() { close(hs.stop) })
	<-hs.done
}

func (hs *heldStream) Header() http.Header { return hs.header }

func (hs *heldStream) WriteHeader(code int) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if code/100 != 2 {
		hs.failed = true
	}
}

func (hs *heldStream) Write(p []byte) (int, error) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.failed {
		if room := maxHeldError - hs.errBuf.Len(); room > 0 {
			hs.errBuf.Write(p[:min(len(p), room)])
		}
		return len(p), nil
	}
	return hs.w.Write(p)
}

func (hs *heldStream) Flush() {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.rc.Flush()
}

// finish stops the comments and sends the error event, if an error was
// written.
func (hs *heldStream) finish() {
	hs.stopKeepAlive()
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if !hs.failed {
		return
	}
	var data bytes.Buffer
	if json.Compact(&data, hs.errBuf.Bytes()) != nil {
		// Not JSON: the API's error shape around it, so the SDKs see an error.
		b, _ := json.Marshal(map[string]any{"error": map[string]any{"message": hs.errBuf.String(), "type": "promptrail_error", "code": "promptrail_upstream_error"}})
		data.Reset()
		data.Write(b)
	}
	hs.w.Write([]byte("event: error\ndata: "))
	hs.w.Write(data.Bytes())
	hs.w.Write([]byte("\n\n"))
	hs.rc.Flush()
}
