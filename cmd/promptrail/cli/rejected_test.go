package cli

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/promptrail/promptrail/agent/spool"
	"github.com/promptrail/promptrail/audit"
)

func TestRejectedListsWhatTheCollectorRefused(t *testing.T) {
	dataDir := t.TempDir()
	ctx := context.Background()
	sp, err := spool.Open(ctx, spool.Config{Dir: filepath.Join(dataDir, "spool"), AgentID: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	r := &audit.Record{ID: audit.NewID(time.Now()), Start: time.Now(), Decision: audit.Decision{Action: "allow"}}
	if err := sp.Finish(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := sp.Reject(ctx, r.Seq, "record_too_large", "oversize: 5000000 bytes encoded"); err != nil {
		t.Fatal(err)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}

	out := capture(t)
	if err := Run(ctx, []string{"rejected", "--data-dir", dataDir}); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, r.ID) || !strings.Contains(s, "record_too_large") || !strings.Contains(s, "oversize") {
		t.Errorf("table lacks the record's id, code or reason:\n%s", s)
	}
	out = capture(t)
	if err := Run(ctx, []string{"rejected", "--data-dir", dataDir, "--jsonl"}); err != nil {
		t.Fatal(err)
	}
	var got spool.Rejected
	var rec audit.Record
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || json.Unmarshal(got.Record, &rec) != nil || rec.ID != r.ID || rec.CheckHash() != nil {
		t.Errorf("--jsonl does not give the sealed record back: %v\n%s", err, out)
	}
}
