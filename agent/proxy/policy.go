package proxy

import (
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/promptrail/promptrail/agent/openai"
	"github.com/promptrail/promptrail/agent/policy"
	"github.com/promptrail/promptrail/agent/recorder"
	"github.com/promptrail/promptrail/audit"
)

// decide applies the policy in force to a request that may otherwise go
// upstream, before its record is spooled. It reports whether the request
// was blocked; then it has finished the record and answered the client.
// The writer it returns is the one to answer on: a streamed request held
// for approval has had its SSE headers (see heldStream).
func (d *decrypter) decide(w http.ResponseWriter, r *http.Request, ex *recorder.Exchange, pol *policy.Policy,
	q request, who audit.Workload, conn audit.Connection) (bool, http.ResponseWriter) {
	in := policy.Input{
		Workload:   policy.WorkloadOf(who, d.cfg.Node),
		Request:    policy.RequestOf(r.Method, r.URL.Path, q.size, policyRequest(r, q.body)),
		Findings:   policy.FindingsOf(q.findings),
		Connection: policy.Connection{SNI: conn.SNI, Destination: conn.OrigDst, Mode: conn.Mode},
		Now:        time.Now(),
	}
	dec := pol.Decide(&in)
	ex.Decided(dec.Version, dec.Rule, dec.Message)
	if dec.Action == policy.RequireApproval {
		if in.Request.Stream {
			hs := startHeldStream(w, d.cfg.ApprovalKeepAlive)
			stop := d.hold(hs, r, ex, dec, q, who)
			hs.stopKeepAlive()
			return stop, hs
		}
		return d.hold(w, r, ex, dec, q, who), w
	}
	if dec.Action != policy.Block {
		// allow and mask both forward the masked body: a policy never
		// unmasks.
		return false, w
	}
	msg := dec.Message
	if msg == "" {
		msg = "this request is not allowed"
	}
	ex.Block(http.StatusForbidden, dec.Rule)
	// Retrying gets the same answer; the SDKs do not retry a 403, the
	// header tells other clients.
	w.Header().Set("X-Should-Retry", "false")
	writeAPIError(w, http.StatusForbidden, "promptrail_policy_blocked",
		fmt.Sprintf("promptrail: policy rule %s: %s; nothing was sent", dec.Rule, msg))
	return true, w
}

// policyRequest parses the body for the rules, whole: the record's copy
// may be cut to the record's limit, and a rule on the text or its tokens
// must see all of it. Multipart bodies (files) give no text.
func policyRequest(r *http.Request, body []byte) openai.Request {
	ep := openai.Classify(r.Method, r.URL.Path)
	ct := r.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	if len(body) == 0 || mt == "multipart/form-data" || (ep == openai.Other && !strings.Contains(mt, "json")) {
		return openai.Request{Endpoint: ep}
	}
	// A body that does not parse still has its endpoint and whatever
	// fields were read; the rules decide on those.
	req, _ := openai.ParseRequest(ep, ct, body)
	req.Endpoint = ep
	return req
}
