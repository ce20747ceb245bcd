// Package client calls the collector's API: records, a record with its
// inclusion proof, verification, checkpoints and the policy. The CLI's
// query, verify, export and policy commands use it.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/collector"
	"github.com/promptrail/promptrail/collector/store"
)

// Client calls one collector.
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
}

// New returns a client of the collector at baseURL (http://host:port)
// that presents token ("" for none). Nil hc: a client with a 2-minute
// timeout (verify over millions of records takes a while).
func New(baseURL, token string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("collector URL %q: want http(s)://host:port", baseURL)
	}
	if hc == nil {
		hc = &http.Client{Timeout: 2 * time.Minute}
	}
	return &Client{base: u, token: token, hc: hc}, nil
}

// Records returns one page of records matching f, newest first.
func (c *Client) Records(ctx context.Context, f store.Filter) (collector.RecordsPage, error) {
	var p collector.RecordsPage
	err := c.getJSON(ctx, "/v1/records", collector.FilterValues(f), &p)
	return p, err
}

// EachPage calls fn with every page of records matching f, newest first,
// following the cursors, until there are no more or fn returns false. A
// page may be short, even empty, and still not the last: a text query's
// scan is bounded per request.
func (c *Client) EachPage(ctx context.Context, f store.Filter, fn func([]audit.Record) (more bool, err error)) error {
	for {
		page, err := c.Records(ctx, f)
		if err != nil {
			return err
		}
		more, err := fn(page.Records)
		if err != nil || !more || page.NextCursor == "" {
			return err
		}
		f.Cursor = page.NextCursor
	}
}

// Record returns a record and its inclusion proof.
func (c *Client) Record(ctx context.Context, id string) (collector.RecordWithProof, error) {
	var r collector.RecordWithProof
	err := c.getJSON(ctx, "/v1/records/"+url.PathEscape(id), nil, &r)
	return r, err
}

// Verify asks the collector to check its chains and its Merkle log.
func (c *Client) Verify(ctx context.Context) (store.Report, error) {
	var r store.Report
	err := c.getJSON(ctx, "/v1/verify", nil, &r)
	return r, err
}

// Checkpoint returns the latest signed checkpoint (a signed note).
func (c *Client) Checkpoint(ctx context.Context) ([]byte, error) {
	return c.get(ctx, "/v1/checkpoint", nil)
}

// VerifierKey returns the note verifier key of the collector's checkpoints.
func (c *Client) VerifierKey(ctx context.Context) (string, error) {
	b, err := c.get(ctx, "/v1/checkpoint/key", nil)
	return strings.TrimSpace(string(b)), err
}

// Error is an error answer of the collector.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("collector: %s (HTTP %d %s)", e.Message, e.Status, e.Code)
}

func (c *Client) getJSON(ctx context.Context, path string, q url.Values, v any) error {
	b, err := c.get(ctx, path, q)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("collector: decoding the answer of %s: %w", path, err)
	}
	return nil
}

func (c *Client) get(ctx context.Context, path string, q url.Values) ([]byte, error) {
	b, _, err := c.do(ctx, http.MethodGet, path, q, nil, nil)
	return b, err
}

// do sends a request and returns the body of a 200 (or 304) answer and
// its headers; any other status is an *Error.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body []byte, h http.Header) ([]byte, *http.Response, error) {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery = q.Encode()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, nil, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("collector unreachable: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("collector: reading the answer of %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotModified {
		var ae collector.APIError
		if json.Unmarshal(b, &ae) == nil && ae.Error.Message != "" {
			return nil, nil, &Error{Status: resp.StatusCode, Code: ae.Error.Code, Message: ae.Error.Message}
		}
		return nil, nil, &Error{Status: resp.StatusCode, Message: strings.TrimSpace(string(b))}
	}
	return b, resp, nil
}

// PushPolicy replaces the collector's policy with the file's content
// (admin token). A policy that does not compile is refused (an *Error
// naming the rule) and the one in force stays.
func (c *Client) PushPolicy(ctx context.Context, raw []byte) (collector.PolicyVersion, error) {
	var v collector.PolicyVersion
	b, _, err := c.do(ctx, http.MethodPut, "/v1/policy", nil, raw, http.Header{"Content-Type": {"application/yaml"}})
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("collector: decoding the answer of PUT /v1/policy: %w", err)
	}
	return v, nil
}

// Policy fetches the collector's policy unless its version is have: then
// changed is false and raw nil. A collector without a policy is an *Error
// with status 404.
func (c *Client) Policy(ctx context.Context, have string) (raw []byte, version string, changed bool, err error) {
	h := http.Header{}
	if have != "" {
		h.Set("If-None-Match", `"`+have+`"`)
	}
	b, resp, err := c.do(ctx, http.MethodGet, "/v1/policy", nil, nil, h)
	if err != nil {
		return nil, "", false, err
	}
	version = strings.Trim(resp.Header.Get("ETag"), `"`)
	if resp.StatusCode == http.StatusNotModified {
		return nil, version, false, nil
	}
	return b, version, true, nil
}

// IsStatus reports whether err is an error answer with that status.
func IsStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == status
}
