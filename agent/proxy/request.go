package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/promptrail/promptrail/agent/recorder"
	"github.com/promptrail/promptrail/audit"
)

// request is a request body as read, decoded and masked, and what stands
// in its way.
type request struct {
	body      []byte // what goes upstream: decoded and masked
	recorded  []byte // what the record keeps: body, or nil when it was not masked
	size      int64  // the body's size as sent (or announced)
	findings  []audit.Finding
	blockBy   string // a rule whose finding blocks the request
	tooLarge  bool
	err       error // reading or masking it failed (a *budgetError for a budget)
	decodeErr error // its Content-Encoding, or a multipart part, could not be decoded
}

// readAndMask reads the request body (bounded in size, buffer space and
// time), decodes its Content-Encoding and masks it (bounded in time).
func (d *decrypter) readAndMask(w http.ResponseWriter, r *http.Request, mem *memHold) request {
	var q request
	q.tooLarge = r.ContentLength > d.cfg.MaxRequestBody
	if !q.tooLarge {
		q.body, q.err = d.readRequest(w, r, mem)
	}
	q.size = max(int64(len(q.body)), r.ContentLength)
	q.tooLarge = q.tooLarge || q.size > d.cfg.MaxRequestBody
	if q.tooLarge || isMemBudget(q.err) {
		drainBody(w, r, d.cfg.BodyReadTimeout, d.cfg.MaxRequestBody)
	}
	if q.err == nil && !q.tooLarge {
		// A compressed body is decoded (bounded by the same limit, its
		// growth charged to the budget) and forwarded decoded, so that it
		// can be masked and recorded; what cannot be decoded is never
		// forwarded, nor kept in the record.
		raw := len(q.body)
		q.body, q.decodeErr = decodeRequest(r, q.body, d.cfg.MaxRequestBody)
		if grown := int64(len(q.body) - raw); q.decodeErr == nil && grown > 0 {
			q.err = mem.grow(r.Context(), grown*bodyCharge)
		}
	}
	ok := func() bool { return q.err == nil && q.decodeErr == nil && !q.tooLarge }
	if d.cfg.Masker == nil {
		if ok() {
			q.recorded = q.body
		}
		return q
	}
	// Masked before anything else sees it: the record and the upstream get
	// the same, masked, query and body; a body that was not masked is not
	// recorded.
	q.findings = maskQuery(d.cfg.Masker, r.URL)
	if ok() {
		var bfs []audit.Finding
		q.body, bfs, q.decodeErr, q.err = d.maskRequest(r, q.body)
		q.findings = append(q.findings, bfs...)
		if ok() {
			q.recorded = q.body
		}
	}
	// What goes upstream decides; the command line does not.
	q.blockBy = blockingRule(q.findings)
	return q
}

// refused finishes the record of a request that may not go upstream and
// answers it in the API's error shape; it reports whether it did.
func (d *decrypter) refused(w http.ResponseWriter, ex *recorder.Exchange, info *connInfo, q request) bool {
	var be *budgetError
	switch {
	case q.blockBy != "":
		ex.Block(http.StatusForbidden, q.blockBy)
		writeAPIError(w, http.StatusForbidden, "promptrail_blocked",
			fmt.Sprintf("promptrail: the request contains a secret that rule %s blocks; nothing was sent", q.blockBy))
	case errors.As(q.err, &be):
		d.cfg.Logger.Warn("request refused: budget hit", "code", be.code, "id", ex.ID(), "client", info.client.String(), "size", q.size)
		d.budgetHit(be.code)
		ex.Reject(be.status, be.msg)
		if be.status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		writeAPIError(w, be.status, be.code, be.msg)
		// Sent now: an HTTP/2 server resets a stream whose body is unread
		// when the handler returns, and a reset that overtakes the answer
		// leaves the client with a broken stream instead of the error.
		http.NewResponseController(w).Flush()
	case q.err != nil:
		ex.Reject(http.StatusBadRequest, "reading the request body: "+q.err.Error())
		writeAPIError(w, http.StatusBadRequest, "promptrail_bad_request", "promptrail: could not read the request body")
	case q.tooLarge || errors.Is(q.decodeErr, errDecodedTooLarge):
		ex.Reject(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body (decoded) over the limit of %d bytes", d.cfg.MaxRequestBody))
		writeAPIError(w, http.StatusRequestEntityTooLarge, "promptrail_request_too_large",
			fmt.Sprintf("promptrail: request body exceeds %d bytes (after decoding its Content-Encoding); nothing was sent", d.cfg.MaxRequestBody))
	case errors.Is(q.decodeErr, errUnknownEncoding):
		ex.Reject(http.StatusUnsupportedMediaType, "request body: "+q.decodeErr.Error())
		writeAPIError(w, http.StatusUnsupportedMediaType, "promptrail_unsupported_encoding",
			"promptrail: "+q.decodeErr.Error()+"; the proxy decodes gzip, deflate, br and zstd; nothing was sent")
	case q.decodeErr != nil:
		ex.Reject(http.StatusBadRequest, "request body: "+q.decodeErr.Error())
		writeAPIError(w, http.StatusBadRequest, "promptrail_bad_encoding",
			"promptrail: the request body could not be decoded to check it for secrets: "+q.decodeErr.Error()+"; nothing was sent")
	default:
		return false
	}
	return true
}

// readRequest reads the request body within the body read timeout, its
// buffer reserved from the in-flight budget. A timeout or a full budget is
// a *budgetError.
func (d *decrypter) readRequest(w http.ResponseWriter, r *http.Request, mem *memHold) ([]byte, error) {
	rc := http.NewResponseController(w)
	// net/http bounds the headers (ReadHeaderTimeout) but not the body: a
	// client sending one byte at a time would hold the handler forever.
	timed := rc.SetReadDeadline(time.Now().Add(d.cfg.BodyReadTimeout)) == nil
	body, err := readBody(r.Context(), r.Body, mem, r.ContentLength, d.cfg.MaxRequestBody)
	if timed && err == nil {
		// After a failed read the deadline stays: net/http drains an
		// unread HTTP/1.1 body before it answers, and must not wait.
		rc.SetReadDeadline(time.Time{})
	}
	if deadlineExpired(err) {
		return body, errBodyTimeout(d.cfg.BodyReadTimeout)
	}
	return body, err
}

// maskRequest masks a request body within the mask timeout; over it, the
// error is a *budgetError and the body must not be forwarded.
func (d *decrypter) maskRequest(r *http.Request, body []byte) (masked []byte, fs []audit.Finding, decodeErr, err error) {
	ctx, cancel := context.WithTimeout(r.Context(), d.cfg.MaskTimeout)
	defer cancel()
	m, stopped := d.cfg.Masker.Bounded(ctx)
	masked, fs, decodeErr = maskRequest(m, r, body)
	if err := stopped(); err != nil {
		if r.Context().Err() != nil {
			return nil, nil, nil, fmt.Errorf("masking the request: the client is gone: %w", err)
		}
		return nil, nil, nil, errMaskBudget(d.cfg.MaskTimeout, "request")
	}
	return masked, fs, decodeErr, nil
}
