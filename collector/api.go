package collector

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/collector/auth"
	"github.com/promptrail/promptrail/collector/store"
)

// api serves the collector's HTTP API over a store.
type api struct {
	store     *store.Store
	auth      auth.Authenticator
	maxBatch  int64
	log       *slog.Logger
	m         *metrics
	policy    *policyStore
	approvals *approvals
}

// RecordWithProof is the answer of GET /v1/records/{id}.
type RecordWithProof struct {
	Record *audit.Record `json:"record"`
	Proof  *store.Proof  `json:"proof"`
}

// RecordsPage is the answer of GET /v1/records.
type RecordsPage struct {
	Records    []audit.Record `json:"records"`
	NextCursor string         `json:"next_cursor,omitempty"`
}

func (a *api) routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/ingest", a.authorized(auth.RoleAgent, a.ingest))
	mux.HandleFunc("GET /v1/records", a.authorized(auth.RoleReader, a.records))
	mux.HandleFunc("GET /v1/records/{id}", a.authorized(auth.RoleReader, a.record))
	mux.HandleFunc("GET /v1/verify", a.authorized(auth.RoleReader, a.verify))
	if a.policy != nil {
		// Agents fetch the policy; readers may read it; admins push it.
		mux.HandleFunc("GET /v1/policy", a.authorizedAny([]auth.Role{auth.RoleAgent, auth.RoleReader}, a.getPolicy))
		mux.HandleFunc("PUT /v1/policy", a.authorized(auth.RoleAdmin, a.putPolicy))
	}
	mux.HandleFunc("GET /v1/checkpoint", a.checkpoint)
	mux.HandleFunc("GET /v1/checkpoint/key", a.checkpointKey)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok\n")
	})
}

type principalHandler func(w http.ResponseWriter, r *http.Request, p auth.Principal)

// authorized answers 401 to a caller without valid credentials and 403 to
// one whose role does not allow the route.
func (a *api) authorized(role auth.Role, h principalHandler) http.HandlerFunc {
	return a.authorizedAny([]auth.Role{role}, h)
}

// authorizedAny is authorized for a route that any of roles may use.
func (a *api) authorizedAny(roles []auth.Role, h principalHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := a.auth.Authenticate(r.Context(), r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="promptrail"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", err.Error())
			return
		}
		if !slices.ContainsFunc(roles, p.Can) {
			writeError(w, http.StatusForbidden, "forbidden", fmt.Sprintf("%s %q may not use %s (needs role %s)", p.Role, p.Name, r.URL.Path, roles[0]))
			return
		}
		h(w, r, p)
	}
}

func (a *api) ingest(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	body := &limitedReader{r: r.Body, left: a.maxBatch}
	recs, rejected, err := decodeBatch(body)
	var tooMany errTooManyRecords
	switch {
	case body.over || errors.As(err, &tooMany):
		a.m.ingestRejected.WithLabelValues("too_large").Inc()
		writeError(w, http.StatusRequestEntityTooLarge, "batch_too_large",
			fmt.Sprintf("batch over %d bytes or %d records: send smaller batches", a.maxBatch, audit.MaxBatchRecords))
		return
	case err != nil:
		a.m.ingestRejected.WithLabelValues("bad_json").Inc()
		writeError(w, http.StatusBadRequest, "bad_json", "batch is not valid JSON: "+err.Error())
		return
	case len(recs)+len(rejected) == 0:
		a.m.ingestRejected.WithLabelValues("empty").Inc()
		writeError(w, http.StatusBadRequest, "empty_batch", `batch has no records: send {"records":[...]}`)
		return
	}
	for _, ir := range recs {
		if id := ir.rec.AgentID; !p.MayIngestFor(id) || id == audit.CollectorAgentID {
			a.m.ingestRejected.WithLabelValues("unknown_agent").Inc()
			writeError(w, http.StatusForbidden, "unknown_agent",
				fmt.Sprintf("record %d (%s): agent %q is not one this token may ingest for (token %q)", ir.index, ir.rec.ID, id, p.Name))
			return
		}
	}
	batch := make([]audit.Record, len(recs))
	for i, ir := range recs {
		batch[i] = ir.rec
	}
	res, err := a.store.Ingest(r.Context(), batch)
	switch {
	case errors.Is(err, store.ErrBatchTooLarge):
		a.m.ingestRejected.WithLabelValues("too_large").Inc()
		writeError(w, http.StatusRequestEntityTooLarge, "batch_too_large", err.Error()+": send smaller batches")
		return
	case err != nil:
		a.log.Error("ingest failed", "records", len(batch), "err", err)
		writeError(w, http.StatusServiceUnavailable, "store_unavailable", "the batch was not stored: "+err.Error())
		return
	}
	// The store numbers rejections by position in what it was given;
	// the agent needs the position in what it sent.
	for i := range res.Rejected {
		res.Rejected[i].Index = recs[res.Rejected[i].Index].index
	}
	res.Rejected = append(rejected, res.Rejected...)
	a.m.ingested.Add(float64(res.Accepted))
	a.m.duplicates.Add(float64(res.Duplicates))
	for _, rj := range res.Rejected {
		a.m.recordsRejected.WithLabelValues(rj.Code).Inc()
		a.log.Warn("record rejected; the agent keeps it and its chain shows the gap",
			"principal", p.Name, "id", rj.ID, "seq", rj.Seq, "code", rj.Code, "reason", rj.Reason)
	}
	for _, issue := range res.ChainIssues {
		a.log.Warn("chain issue", "principal", p.Name, "issue", issue)
	}
	writeJSON(w, http.StatusOK, res)
}

func (a *api) records(w http.ResponseWriter, r *http.Request, _ auth.Principal) {
	f, err := ParseFilter(r.URL.Query(), time.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_query", err.Error())
		return
	}
	page, err := a.store.Query(r.Context(), f)
	if err != nil {
		if errors.Is(err, store.ErrBadCursor) {
			writeError(w, http.StatusBadRequest, "bad_cursor", err.Error())
			return
		}
		writeError(w, http.StatusInternalServerError, "query_failed", err.Error())
		return
	}
	if page.Records == nil {
		page.Records = []audit.Record{}
	}
	writeJSON(w, http.StatusOK, RecordsPage{Records: page.Records, NextCursor: page.Next})
}

func (a *api) record(w http.ResponseWriter, r *http.Request, _ auth.Principal) {
	rec, proof, err := a.store.Get(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", "no record "+r.PathValue("id"))
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, "get_failed", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, RecordWithProof{Record: rec, Proof: proof})
}

func (a *api) verify(w http.ResponseWriter, r *http.Request, _ auth.Principal) {
	rep, err := a.store.Verify(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, "verify_failed", err.Error())
		return
	}
	if !rep.OK {
		a.log.Warn("verify found problems", "problems", len(rep.Problems))
	}
	writeJSON(w, http.StatusOK, rep)
}

// checkpoint serves the latest signed checkpoint to anyone: it reveals
// only the log's size and root, and auditors fetch it to pin the log.
func (a *api) checkpoint(w http.ResponseWriter, r *http.Request) {
	cp, err := a.store.Checkpoint(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, "checkpoint_failed", err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(cp)
}

func (a *api) checkpointKey(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, a.store.VerifierKey()+"\n")
}

// Query parameters of GET /v1/records.
const (
	ParamSince, ParamUntil, ParamNamespace, ParamWorkload = "since", "until", "namespace", "workload"
	ParamModel, ParamFinding, ParamAction, ParamAgent     = "model", "finding", "action", "agent"
	ParamQ, ParamLimit, ParamCursor                       = "q", "limit", "cursor"
)

// ParseFilter reads the query parameters of GET /v1/records. since and
// until are RFC 3339 times or durations before now ("90m", "24h", "7d").
func ParseFilter(v url.Values, now time.Time) (store.Filter, error) {
	f := store.Filter{
		Namespace: v.Get(ParamNamespace), Workload: v.Get(ParamWorkload), Model: v.Get(ParamModel),
		Finding: v.Get(ParamFinding), Action: v.Get(ParamAction), Agent: v.Get(ParamAgent),
		Q: v.Get(ParamQ), Cursor: v.Get(ParamCursor),
	}
	var err error
	if f.Since, err = ParseTime(v.Get(ParamSince), now); err != nil {
		return f, fmt.Errorf("since: %w", err)
	}
	if f.Until, err = ParseTime(v.Get(ParamUntil), now); err != nil {
		return f, fmt.Errorf("until: %w", err)
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && f.Until.Before(f.Since) {
		return f, errors.New("until is before since")
	}
	if s := v.Get(ParamLimit); s != "" {
		if f.Limit, err = strconv.Atoi(s); err != nil || f.Limit < 1 || f.Limit > 1000 {
			return f, fmt.Errorf("limit %q: want 1 to 1000", s)
		}
	}
	return f, nil
}

// FilterValues is the inverse of ParseFilter, for clients.
func FilterValues(f store.Filter) url.Values {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	if !f.Since.IsZero() {
		v.Set(ParamSince, f.Since.UTC().Format(time.RFC3339Nano))
	}
	if !f.Until.IsZero() {
		v.Set(ParamUntil, f.Until.UTC().Format(time.RFC3339Nano))
	}
	set(ParamNamespace, f.Namespace)
	set(ParamWorkload, f.Workload)
	set(ParamModel, f.Model)
	set(ParamFinding, f.Finding)
	set(ParamAction, f.Action)
	set(ParamAgent, f.Agent)
	set(ParamQ, f.Q)
	set(ParamCursor, f.Cursor)
	if f.Limit > 0 {
		v.Set(ParamLimit, strconv.Itoa(f.Limit))
	}
	return v
}

// ParseTime reads an RFC 3339 time, or a duration before now: Go's syntax
// ("90m", "36h") or whole days ("7d"). Empty: the zero time.
func ParseTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(d); err == nil && n >= 0 {
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q: want an RFC 3339 time (2026-11-28T10:00:00Z) or a duration before now (90m, 24h, 7d)", s)
}

// APIError is the body of every error answer.
type APIError struct {
	Error struct {
		Message string `json:"message"`
		Code    string `json:"code"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var e APIError
	e.Error.Message, e.Error.Code = msg, code
	writeJSON(w, status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
