package collector_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/collector"
	"github.com/promptrail/promptrail/collector/auth"
	"github.com/promptrail/promptrail/collector/client"
	"github.com/promptrail/promptrail/collector/store"
)

const (
	approverA = "approver-a-token-0123456789"
	approverB = "approver-b-token-0123456789"
	selfTok   = "approver-self-token-0123456789"
)

// approvalServer is a collector whose approval requests expire after ttl.
func approvalServer(t *testing.T, ttl time.Duration) (*httptest.Server, *store.Store) {
	t.Helper()
	return approvalServerIn(t, t.TempDir(), ttl)
}

// approvalServerIn is approvalServer with its store in dir.
func approvalServerIn(t *testing.T, dir string, ttl time.Duration) (*httptest.Server, *store.Store) {
	t.Helper()
	return approvalServerWith(t, dir, collector.HandlerConfig{ApprovalTTL: ttl})
}

// approvalServerWith is a collector of cfg, its store in dir and its
// tokens those of the approval tests.
func approvalServerWith(t *testing.T, dir string, cfg collector.HandlerConfig) (*httptest.Server, *store.Store) {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tok, err := auth.ParseTokens([]byte("agent node-a " + agentA + "\nreader ops " + reader + "\nadmin root " + admin +
		"\napprover alice " + approverA + "\napprover bob " + approverB + "\napprover k8s:team/app " + selfTok + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store, cfg.Auth = st, tok
	h, err := collector.NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, st
}

func newApproval(digest string) collector.NewApproval {
	return collector.NewApproval{
		AgentID: "node-a", RecordID: audit.NewID(time.Now()), Rule: "hold-secrets", Message: "a secret is in it",
		Digest: digest, GrantMinutes: 5,
		Workload: audit.Workload{Identity: "k8s:team/app", Namespace: "team"},
		Request:  audit.Request{Method: "POST", Path: "/v1/chat/completions", Model: "gpt-4o", Body: `{"masked":"[MASKED]"}`},
	}
}

func TestApprovalIsDecidedOnceByAnApprover(t *testing.T) {
	ctx := context.Background()
	srv, _ := approvalServer(t, time.Hour)
	agent := policyClient(t, srv, agentA)
	a, err := agent.RequestApproval(ctx, newApproval("sha256:one"))
	if err != nil || a.State != audit.ApprovalPending || a.ID == "" {
		t.Fatalf("request: %+v, %v", a, err)
	}
	refusals := []struct {
		name, token string
		status      int
	}{
		{"a reader", reader, http.StatusForbidden},
		{"an agent", agentA, http.StatusForbidden},
		{"the workload itself", selfTok, http.StatusForbidden},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			if _, err := policyClient(t, srv, r.token).DecideApproval(ctx, a.ID, true, "ok"); !client.IsStatus(err, r.status) {
				t.Fatalf("approve: %v, want %d", err, r.status)
			}
		})
	}
	if _, err := policyClient(t, srv, approverA).DecideApproval(ctx, a.ID, true, ""); !client.IsStatus(err, http.StatusBadRequest) {
		t.Fatalf("approve without a reason: %v, want 400", err)
	}
	// Two approvers race: exactly one decision.
	var wg sync.WaitGroup
	results := make([]error, 2)
	for i, tok := range []string{approverA, approverB} {
		wg.Go(func() { _, results[i] = policyClient(t, srv, tok).DecideApproval(ctx, a.ID, i == 0, "racing") })
	}
	wg.Wait()
	won, lost := 0, 0
	for _, err := range results {
		switch {
		case err == nil:
			won++
		case client.IsStatus(err, http.StatusConflict):
			lost++
		default:
			t.Fatalf("racing decision: %v", err)
		}
	}
	if won != 1 || lost != 1 {
		t.Fatalf("racing approvers: %d won, %d got 409; want one each", won, lost)
	}
	got, err := agent.Approval(ctx, a.ID, 0)
	if err != nil || got.DecidedBy == "" || got.Reason != "racing" {
		t.Fatalf("after the race: %+v, %v", got, err)
	}
	if _, err := policyClient(t, srv, admin).DecideApproval(ctx, a.ID, false, "late"); !client.IsStatus(err, http.StatusConflict) {
		t.Fatalf("a third decision: %v, want 409", err)
	}
}

func TestApprovalLongPollAndOneShotGrant(t *testing.T) {
	ctx := context.Background()
	srv, st := approvalServer(t, time.Hour)
	agent := policyClient(t, srv, agentA)
	a, err := agent.RequestApproval(ctx, newApproval("sha256:two"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if got, err := agent.Approval(ctx, a.ID, 200*time.Millisecond); err != nil || got.State != audit.ApprovalPending || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("long poll without a decision: %+v, %v after %v", got, err, time.Since(start))
	}
	// A retry while pending joins the same request.
	if again, err := agent.RequestApproval(ctx, newApproval("sha256:two")); err != nil || again.ID != a.ID {
		t.Fatalf("retry while pending: %+v, %v; want %s", again, err, a.ID)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		policyClient(t, srv, admin).DecideApproval(ctx, a.ID, true, "fine")
	}()
	got, err := agent.Approval(ctx, a.ID, 10*time.Second)
	if err != nil || got.State != audit.ApprovalApproved || got.DecidedBy != "root" || time.Since(start) > 5*time.Second {
		t.Fatalf("long poll with a decision: %+v, %v", got, err)
	}
	// The retry of the same request uses the grant, once.
	if used, err := agent.RequestApproval(ctx, newApproval("sha256:two")); err != nil || used.State != audit.ApprovalUsed || used.ID != a.ID {
		t.Fatalf("retry after approval: %+v, %v; want used", used, err)
	}
	if again, err := agent.RequestApproval(ctx, newApproval("sha256:two")); err != nil || again.State != audit.ApprovalPending || again.ID == a.ID {
		t.Fatalf("second retry: %+v, %v; want a new pending request", again, err)
	}
	if _, err := agent.UseApproval(ctx, a.ID, "x"); !client.IsStatus(err, http.StatusConflict) {
		t.Fatalf("using a spent grant: %v, want 409", err)
	}
	pending, err := policyClient(t, srv, approverA).Approvals(ctx, "", "", "", "")
	if err != nil || len(pending) != 1 {
		t.Fatalf("pending list: %+v, %v; want the one new request", pending, err)
	}
	// Every step is a record of the collector's chain, covered by verify.
	rep, err := st.Verify(ctx)
	if err != nil || !rep.OK || rep.Records != 4 {
		t.Fatalf("verify: %+v, %v; want 4 approval records (created, approved, used, created)", rep, err)
	}
}

func TestExpiredApprovalCannotBeApproved(t *testing.T) {
	ctx := context.Background()
	srv, _ := approvalServer(t, 300*time.Millisecond)
	agent := policyClient(t, srv, agentA)
	a, err := agent.RequestApproval(ctx, newApproval("sha256:three"))
	if err != nil {
		t.Fatal(err)
	}
	// The long poll ends at the expiry, not at its wait.
	start := time.Now()
	got, err := agent.Approval(ctx, a.ID, 20*time.Second)
	if err != nil || got.State != audit.ApprovalExpired || time.Since(start) > 5*time.Second {
		t.Fatalf("long poll past expiry: %+v, %v", got, err)
	}
	if _, err := policyClient(t, srv, approverA).DecideApproval(ctx, a.ID, true, "too late"); !client.IsStatus(err, http.StatusConflict) {
		t.Fatalf("approving an expired request: %v, want 409", err)
	}
}

func TestAgentsCannotWriteTheCollectorsChain(t *testing.T) {
	srv, _ := approvalServer(t, time.Hour)
	recs := chain(t, audit.CollectorAgentID, 1, "forged")
	if status, body := post(t, srv, admin, batch(t, recs)); status != http.StatusForbidden {
		t.Fatalf("ingest into the collector's chain: %d %s, want 403", status, body)
	}
}

// TestVerifyFindsEditedOrDeletedApprovalSteps edits and deletes approval
// records behind the collector's back: verify names them.
func TestVerifyFindsEditedOrDeletedApprovalSteps(t *testing.T) {
	tampers := []struct {
		name   string
		event  string // the step whose record is tampered with
		tamper func(txn *badger.Txn, key, val []byte) error
	}{
		{"edited reason", "approval_approved", func(txn *badger.Txn, key, val []byte) error {
			edited := bytes.Replace(val, []byte("ticket 9"), []byte("ticket 8"), -1)
			if bytes.Equal(edited, val) {
				return errors.New("reason not found in the stored record")
			}
			return txn.Set(key, edited)
		}},
		{"deleted creation", "approval_created", func(txn *badger.Txn, key, _ []byte) error { return txn.Delete(key) }},
	}
	for _, tt := range tampers {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			srv, st := approvalServerIn(t, dir, time.Hour)
			a, err := policyClient(t, srv, agentA).RequestApproval(ctx, newApproval("sha256:tamper"))
			if err == nil {
				_, err = policyClient(t, srv, approverA).DecideApproval(ctx, a.ID, true, "ticket 9")
			}
			if err != nil {
				t.Fatal(err)
			}
			page, err := st.Query(ctx, store.Filter{Agent: audit.CollectorAgentID, Action: tt.event, Limit: 10})
			if err != nil || len(page.Records) != 1 {
				t.Fatalf("the %s record: %d, %v", tt.event, len(page.Records), err)
			}
			target := page.Records[0].ID
			srv.Close()
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			db, err := badger.Open(badger.DefaultOptions(filepath.Join(dir, "db")).WithLogger(nil))
			if err != nil {
				t.Fatal(err)
			}
			err = db.Update(func(txn *badger.Txn) error {
				it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("b/")})
				defer it.Close()
				for it.Rewind(); it.Valid(); it.Next() {
					if key := it.Item().KeyCopy(nil); bytes.HasSuffix(key, []byte("/r/"+target)) {
						val, err := it.Item().ValueCopy(nil)
						if err != nil {
							return err
						}
						return tt.tamper(txn, key, val)
					}
				}
				return errors.New("record not found")
			})
			if cerr := db.Close(); err != nil || cerr != nil {
				t.Fatal(err, cerr)
			}
			st, err = store.Open(ctx, store.Config{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			rep, err := st.Verify(ctx)
			if err != nil {
				t.Fatal(err)
			}
			named := false
			for _, p := range rep.Problems {
				named = named || p.ID == target
			}
			if rep.OK || !named {
				t.Fatalf("verify: %+v, want a problem naming %s", rep, target)
			}
		})
	}
}
