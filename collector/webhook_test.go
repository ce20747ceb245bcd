package collector_test

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/promptrail/promptrail/collector"
)

const webhookSecret = "webhook-secret-0123456789abcdef"

// receiver is a webhook endpoint that checks each call's signature and
// answers the statuses of answers in turn (then 200).
type receiver struct {
	t       *testing.T
	answers []int
	mu      sync.Mutex
	calls   []collector.WebhookMessage
	bad     []string
	done    chan struct{} // a 2xx was answered
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	ts, err := strconv.ParseInt(r.Header.Get(collector.WebhookTimestampHeader), 10, 64)
	if err != nil || time.Since(time.Unix(ts, 0)).Abs() > time.Minute {
		rc.bad = append(rc.bad, "timestamp "+r.Header.Get(collector.WebhookTimestampHeader))
	}
	want := collector.SignWebhook([]byte(webhookSecret), time.Unix(ts, 0), body)
	if !hmac.Equal([]byte(want), []byte(r.Header.Get(collector.WebhookSignatureHeader))) {
		rc.bad = append(rc.bad, "signature "+r.Header.Get(collector.WebhookSignatureHeader))
	}
	var m collector.WebhookMessage
	if err := json.Unmarshal(body, &m); err != nil {
		rc.bad = append(rc.bad, "body: "+err.Error())
	}
	rc.calls = append(rc.calls, m)
	status := http.StatusOK
	if n := len(rc.calls); n <= len(rc.answers) {
		status = rc.answers[n-1]
	}
	w.WriteHeader(status)
	if status/100 == 2 {
		close(rc.done)
	}
}

func (rc *receiver) seen() ([]collector.WebhookMessage, []string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]collector.WebhookMessage(nil), rc.calls...), append([]string(nil), rc.bad...)
}

// webhookCollector is an approval collector whose webhook calls rc.
func webhookCollector(t *testing.T, rc http.Handler, attempts int) *httptest.Server {
	t.Helper()
	hookSrv := httptest.NewServer(rc)
	t.Cleanup(hookSrv.Close)
	hook, err := collector.NewWebhook(collector.WebhookConfig{URL: hookSrv.URL, Secret: []byte(webhookSecret),
		Attempts: attempts, Backoff: 10 * time.Millisecond, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { hook.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	srv, _ := approvalServerWith(t, t.TempDir(), collector.HandlerConfig{ApprovalTTL: time.Hour, Webhook: hook})
	return srv
}

func TestApprovalWebhookIsSignedAndRetried(t *testing.T) {
	tests := []struct {
		name      string
		answers   []int
		attempts  int
		wantCalls int
		delivered bool
	}{
		{"500 twice then 200", []int{500, 500}, 5, 3, true},
		{"503 and 429 then 204", []int{503, 429}, 5, 3, true},
		{"5xx every time: bounded", []int{500, 500, 500, 500}, 3, 3, false},
		{"a 4xx is not retried", []int{400}, 5, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := &receiver{t: t, answers: tt.answers, done: make(chan struct{})}
			srv := webhookCollector(t, rc, tt.attempts)
			a, err := policyClient(t, srv, agentA).RequestApproval(context.Background(), newApproval("sha256:hook"))
			if err != nil {
				t.Fatal(err)
			}
			if tt.delivered {
				select {
				case <-rc.done:
				case <-time.After(5 * time.Second):
					t.Fatal("webhook never answered 2xx")
				}
			} else {
				time.Sleep(time.Duration(tt.attempts) * 100 * time.Millisecond)
			}
			calls, bad := rc.seen()
			if len(bad) > 0 {
				t.Fatalf("receiver refused: %v", bad)
			}
			if len(calls) != tt.wantCalls {
				t.Fatalf("%d calls, want %d", len(calls), tt.wantCalls)
			}
			m := calls[len(calls)-1]
			if m.ApprovalID != a.ID || m.Rule != "hold-secrets" || m.Model != "gpt-4o" || m.Workload.Identity != "k8s:team/app" ||
				!strings.Contains(m.Text, a.ID) || !strings.Contains(m.Approve.CLI, "promptrail approvals approve "+a.ID) ||
				m.Approve.API != "POST /v1/approvals/"+a.ID+"/approve" {
				t.Fatalf("message: %+v", m)
			}
		})
	}
}

// A receiver that hangs does not hold the agent's approval request, and a
// retry that joins a pending request calls no second time.
func TestApprovalWebhookNeverBlocksTheAPI(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	release := make(chan struct{})
	hang := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		mu.Unlock()
		<-release
	})
	srv := webhookCollector(t, hang, 1)
	t.Cleanup(func() { close(release) })
	c := policyClient(t, srv, agentA)
	start := time.Now()
	first, err := c.RequestApproval(context.Background(), newApproval("sha256:hang"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.RequestApproval(context.Background(), newApproval("sha256:hang"))
	if err != nil || again.ID != first.ID {
		t.Fatalf("retry: %+v, %v", again, err)
	}
	if d := time.Since(start); d > 150*time.Millisecond {
		t.Fatalf("approval requests took %v with a hanging webhook", d)
	}
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if calls != 1 {
		t.Fatalf("%d webhook calls, want 1 (one request waits)", calls)
	}
}

func TestWebhookConfigIsChecked(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	good := filepath.Join(dir, "good")
	os.WriteFile(short, []byte("tiny\n"), 0o600)
	os.WriteFile(good, []byte(webhookSecret+"\n"), 0o600)
	if _, err := collector.ReadWebhookSecret(short); err == nil {
		t.Error("a 4-byte secret was accepted")
	}
	if s, err := collector.ReadWebhookSecret(good); err != nil || string(s) != webhookSecret {
		t.Errorf("secret %q, %v", s, err)
	}
	for _, cfg := range []collector.WebhookConfig{
		{URL: "http://hooks.example/x"},
		{URL: "ftp://hooks.example/x", Secret: []byte(webhookSecret)},
		{URL: "not a url", Secret: []byte(webhookSecret)},
	} {
		if _, err := collector.NewWebhook(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}
