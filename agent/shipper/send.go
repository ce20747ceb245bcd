package shipper

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/promptrail/promptrail/agent/spool"
	"github.com/promptrail/promptrail/audit"
)

// maxAnswerBytes bounds how much of the collector's answer is read.
const maxAnswerBytes = 1 << 20

// Reasons a batch failed, the values of the metric's reason label.
const (
	reasonNetwork = "network"
	reason4xx     = "status_4xx"
	reason5xx     = "status_5xx"
	// reasonInvalid: an answer that is not the collector's, e.g. a 200 from
	// a web server at the wrong URL. Acknowledging on it would lose records.
	reasonInvalid = "invalid_response"
)

var failReasons = []string{reasonNetwork, reason4xx, reason5xx, reasonInvalid}

// sendResult is the outcome of one request.
type sendResult struct {
	ingest audit.IngestResult
	err    error // nil: the collector has the batch
	reason string
	level  slog.Level
	// retryAfter is the collector's Retry-After, if it sent one.
	retryAfter time.Duration
	// retryNow: the cause is fixed already (a rotated token was loaded).
	retryNow bool
	// tooLarge: the collector answered 413, the batch is over its limits.
	tooLarge bool
}

// send posts batch to the collector.
func (s *Shipper) send(ctx context.Context, batch []spool.Entry) sendResult {
	body := encodeBatch(batch)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.ingest, bytes.NewReader(body))
	if err != nil {
		return sendResult{err: fmt.Errorf("building request: %w", err), reason: reasonNetwork, level: slog.LevelError}
	}
	req.Header.Set("Content-Type", "application/json")
	if tok := s.bearer(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	start := time.Now()
	resp, err := s.client.Do(req)
	s.metrics.sendSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		return sendResult{err: fmt.Errorf("collector unreachable: %w", err), reason: reasonNetwork, level: slog.LevelWarn}
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return sendResult{err: fmt.Errorf("reading the collector's answer (status %d): %w", resp.StatusCode, err),
			reason: reasonNetwork, level: slog.LevelWarn}
	}
	return s.judge(resp, answer, batch)
}

// encodeBatch writes the body of POST /v1/ingest from the sealed bytes as
// they are: re-encoding could change them, and their hashes with them.
func encodeBatch(batch []spool.Entry) []byte {
	n := len(`{"records":[]}`) + len(batch)
	for _, e := range batch {
		n += len(e.Data)
	}
	b := make([]byte, 0, n)
	b = append(b, `{"records":[`...)
	for i, e := range batch {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e.Data...)
	}
	return append(b, "]}"...)
}

// judge turns the collector's answer into a sendResult.
func (s *Shipper) judge(resp *http.Response, answer []byte, batch []spool.Entry) sendResult {
	records := len(batch)
	code := resp.StatusCode
	switch {
	case code == http.StatusOK:
		var res audit.IngestResult
		if err := json.Unmarshal(answer, &res); err != nil {
			return sendResult{err: fmt.Errorf("collector answered 200 with a body that is not an ingest result (is %s the collector?): %w", s.ingest, err),
				reason: reasonInvalid, level: slog.LevelError}
		}
		if res.Accepted+res.Duplicates+len(res.Rejected) != records {
			return sendResult{err: fmt.Errorf("collector accounted for %d accepted + %d duplicate + %d rejected records of the %d sent; not removing them from the spool",
				res.Accepted, res.Duplicates, len(res.Rejected), records), reason: reasonInvalid, level: slog.LevelError}
		}
		if err := checkRejections(res.Rejected, batch); err != nil {
			return sendResult{err: err, reason: reasonInvalid, level: slog.LevelError}
		}
		return sendResult{ingest: res}
	case code == http.StatusRequestEntityTooLarge:
		return sendResult{err: fmt.Errorf("collector refused the batch as too large: %s%s", resp.Status, collectorMessage(answer)),
			reason: reason4xx, level: slog.LevelWarn, tooLarge: true}
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		reason := reason5xx
		if code < 500 {
			reason = reason4xx
		}
		res := sendResult{err: fmt.Errorf("collector answered %s%s", resp.Status, collectorMessage(answer)),
			reason: reason, level: slog.LevelWarn}
		if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
			res.retryAfter = retryAfter(resp.Header.Get("Retry-After"))
		}
		return res
	case code == http.StatusUnauthorized:
		// Perhaps the token was rotated under us: re-read it, and retry at
		// once if it changed.
		changed := s.reloadToken()
		return sendResult{err: fmt.Errorf("collector refused our token (401)%s; check the token file %q",
			collectorMessage(answer), s.cfg.TokenFile), reason: reason4xx, level: slog.LevelError, retryNow: changed}
	case code >= 400:
		return sendResult{err: fmt.Errorf("collector refused the batch: %s%s", resp.Status, collectorMessage(answer)),
			reason: reason4xx, level: slog.LevelError}
	default:
		return sendResult{err: fmt.Errorf("collector answered %s, not 200 (is %s the collector?)", resp.Status, s.ingest),
			reason: reasonInvalid, level: slog.LevelError}
	}
}

// checkRejections makes sure each rejection names a distinct record of
// batch, by position and, where given, id and seq: moving the wrong record
// aside would hide one the collector never took.
func checkRejections(rejected []audit.Rejection, batch []spool.Entry) error {
	seen := make(map[int]bool, len(rejected))
	for _, rj := range rejected {
		if rj.Index < 0 || rj.Index >= len(batch) || seen[rj.Index] {
			return fmt.Errorf("collector rejected record %d of a batch of %d (twice, or out of range); not removing the batch from the spool", rj.Index, len(batch))
		}
		seen[rj.Index] = true
		e := batch[rj.Index]
		if (rj.ID != "" && rj.ID != e.ID) || (rj.Seq != 0 && rj.Seq != e.Seq) {
			return fmt.Errorf("collector rejected record %d as %s (seq %d), but it is %s (seq %d); not removing the batch from the spool",
				rj.Index, rj.ID, rj.Seq, e.ID, e.Seq)
		}
	}
	return nil
}

// collectorMessage extracts the message of the collector's error body
// {"error":{"message":…,"code":…}}, as ": message (code)".
func collectorMessage(answer []byte) string {
	var e struct {
		Error struct {
			Message string `json:"message"`
			Code    any    `json:"code"` // a string or a number
		} `json:"error"`
	}
	if json.Unmarshal(answer, &e) != nil || e.Error.Message == "" {
		return ""
	}
	if e.Error.Code == nil {
		return ": " + e.Error.Message
	}
	return fmt.Sprintf(": %s (code %v)", e.Error.Message, e.Error.Code)
}

// retryAfter parses a Retry-After header: seconds or an HTTP date. It
// returns 0 when absent or unusable.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil {
		// Capped before converting so that a huge value cannot overflow;
		// MaxBackoff bounds it anyway.
		return time.Duration(min(max(secs, 0), 1<<20)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}
