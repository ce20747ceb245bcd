package collector

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/promptrail/promptrail/audit"
)

// Webhook headers. The signature is HMAC-SHA256, keyed by the secret, over
// "<timestamp>.<body>", hex, after "v1=": the receiver recomputes it and
// refuses a timestamp far from its clock, so a captured call cannot be
// replayed later.
const (
	WebhookTimestampHeader = "X-Promptrail-Timestamp"
	WebhookSignatureHeader = "X-Promptrail-Signature"
)

// Webhook defaults.
const (
	DefaultWebhookAttempts = 5
	DefaultWebhookBackoff  = time.Second
	DefaultWebhookTimeout  = 10 * time.Second
	// webhookQueue bounds the calls waiting to be made: beyond it a call is
	// dropped (and counted) rather than holding the API.
	webhookQueue = 256
)

// WebhookConfig configures the call the collector makes when a request
// starts waiting for approval.
type WebhookConfig struct {
	// URL receives a POST of a WebhookMessage. Required.
	URL string
	// Secret keys the signature. Required.
	Secret []byte
	// Attempts bounds the calls per message: a 5xx, 429, a timeout or a
	// refused connection is tried again. Zero: DefaultWebhookAttempts.
	Attempts int
	// Backoff is the wait before the second attempt, doubled after each.
	// Zero: DefaultWebhookBackoff.
	Backoff time.Duration
	// Timeout bounds one attempt. Zero: DefaultWebhookTimeout.
	Timeout time.Duration
	// Logger: nil is slog.Default().
	Logger *slog.Logger
	// Registerer receives the delivery counter. Nil: none.
	Registerer prometheus.Registerer
}

// WebhookMessage is the body of the webhook: Slack's incoming webhooks
// show Text and ignore the rest, other receivers read the fields.
type WebhookMessage struct {
	Text       string         `json:"text"`
	ApprovalID string         `json:"approval_id"`
	Rule       string         `json:"rule"`
	Message    string         `json:"message,omitempty"`
	AgentID    string         `json:"agent_id"`
	Workload   audit.Workload `json:"workload"`
	Model      string         `json:"model,omitempty"`
	Path       string         `json:"path,omitempty"`
	Approvers  []string       `json:"approvers,omitempty"`
	Expires    time.Time      `json:"expires"`
	// Approve and Deny say where to decide: the API call and the CLI.
	Approve WebhookAction `json:"approve"`
	Deny    WebhookAction `json:"deny"`
}

// WebhookAction is one way to decide an approval.
type WebhookAction struct {
	API string `json:"api"`
	CLI string `json:"cli"`
}

// Webhook delivers WebhookMessages in the background: Notify never waits.
type Webhook struct {
	cfg       WebhookConfig
	queue     chan WebhookMessage
	delivered *prometheus.CounterVec
}

// NewWebhook checks cfg and returns a Webhook; Run delivers.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("collector: approval webhook %q: want an http(s) URL", cfg.URL)
	}
	if len(cfg.Secret) == 0 {
		return nil, errors.New("collector: approval webhook: no secret (--approval-webhook-secret-file): the receiver could not tell our calls from forged ones")
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = DefaultWebhookAttempts
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = DefaultWebhookBackoff
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultWebhookTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	w := &Webhook{cfg: cfg, queue: make(chan WebhookMessage, webhookQueue),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "promptrail_collector_approval_webhook_total",
			Help: "Approval webhook messages, by result: delivered, failed (after every attempt), dropped (queue full)."}, []string{"result"})}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(w.delivered); err != nil {
			return nil, fmt.Errorf("collector: approval webhook metrics: %w", err)
		}
	}
	return w, nil
}

// ReadWebhookSecret reads a secret file; surrounding white space is not
// part of the secret.
func ReadWebhookSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("collector: approval webhook secret: %w", err)
	}
	s := bytes.TrimSpace(b)
	if len(s) < 16 {
		return nil, fmt.Errorf("collector: approval webhook secret %s: %d bytes, want at least 16", path, len(s))
	}
	return s, nil
}

// SignWebhook is the signature header value of body sent at ts.
func SignWebhook(secret []byte, ts time.Time, body []byte) string {
	m := hmac.New(sha256.New, secret)
	fmt.Fprintf(m, "%d.", ts.Unix())
	m.Write(body)
	return "v1=" + hex.EncodeToString(m.Sum(nil))
}

// notify queues the message of a new approval request; a full queue drops
// it (the approval still waits in GET /v1/approvals).
func (w *Webhook) notify(a *audit.Approval) {
	msg := webhookMessage(a)
	select {
	case w.queue <- msg:
	default:
		w.delivered.WithLabelValues("dropped").Inc()
		w.cfg.Logger.Warn("approval webhook queue full: message dropped", "approval", a.ID)
	}
}

func webhookMessage(a *audit.Approval) WebhookMessage {
	who := a.Workload.Identity
	if who == "" {
		who = a.AgentID
	}
	text := fmt.Sprintf("promptrail: a request waits for approval %s: rule %s", a.ID, a.Rule)
	if a.Message != "" {
		text += " (" + a.Message + ")"
	}
	text += fmt.Sprintf(", workload %s on %s", who, a.AgentID)
	if a.Request.Model != "" {
		text += ", model " + a.Request.Model
	}
	text += fmt.Sprintf(". Approve: promptrail approvals approve %s --reason REASON (until %s)", a.ID, a.Expires.UTC().Format(time.RFC3339))
	return WebhookMessage{
		Text: text, ApprovalID: a.ID, Rule: a.Rule, Message: a.Message, AgentID: a.AgentID, Workload: a.Workload,
		Model: a.Request.Model, Path: a.Request.Path, Approvers: a.Approvers, Expires: a.Expires,
		Approve: WebhookAction{API: "POST /v1/approvals/" + a.ID + "/approve", CLI: "promptrail approvals approve " + a.ID + " --reason REASON"},
		Deny:    WebhookAction{API: "POST /v1/approvals/" + a.ID + "/deny", CLI: "promptrail approvals deny " + a.ID + " --reason REASON"},
	}
}

// Run delivers queued messages, one at a time, until ctx is done.
func (w *Webhook) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case msg := <-w.queue:
			if err := w.deliver(ctx, msg); err != nil {
				w.delivered.WithLabelValues("failed").Inc()
				w.cfg.Logger.Error("approval webhook not delivered", "approval", msg.ApprovalID, "err", err)
				continue
			}
			w.delivered.WithLabelValues("delivered").Inc()
		}
	}
}

// deliver posts msg, trying again with a doubling backoff while the
// receiver answers 5xx or 429, times out, or cannot be reached.
func (w *Webhook) deliver(ctx context.Context, msg WebhookMessage) error {
	body, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	backoff := w.cfg.Backoff
	var last error
	for attempt := 1; attempt <= w.cfg.Attempts; attempt++ {
		if attempt > 1 {
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("%w (last attempt: %w)", ctx.Err(), last)
			case <-t.C:
			}
			backoff *= 2
		}
		retry, err := w.post(ctx, body)
		if err == nil {
			return nil
		}
		last = fmt.Errorf("attempt %d of %d: %w", attempt, w.cfg.Attempts, err)
		if !retry {
			return last
		}
		w.cfg.Logger.Warn("approval webhook call failed, trying again", "approval", msg.ApprovalID, "err", last, "in", backoff)
	}
	return last
}

// post makes one attempt; retry says whether another may succeed.
func (w *Webhook) post(ctx context.Context, body []byte) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	now := time.Now()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "promptrail-collector")
	req.Header.Set(WebhookTimestampHeader, strconv.FormatInt(now.Unix(), 10))
	req.Header.Set(WebhookSignatureHeader, SignWebhook(w.cfg.Secret, now, body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return true, err
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	switch {
	case resp.StatusCode/100 == 2:
		return false, nil
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return true, fmt.Errorf("%s answered %s: %s", w.cfg.URL, resp.Status, strings.TrimSpace(string(snippet)))
	default:
		return false, fmt.Errorf("%s answered %s (not retried: fix the receiver or the URL): %s", w.cfg.URL, resp.Status, strings.TrimSpace(string(snippet)))
	}
}
