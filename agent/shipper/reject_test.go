package shipper

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/promptrail/promptrail/internal/testlog"

	"github.com/promptrail/promptrail/audit"
)

// hasPrompt reports whether r's first message is all x and n bytes long
// (seal's prompts).
func hasPrompt(r audit.Record, n int) bool {
	return len(r.Request.Messages) > 0 && len(r.Request.Messages[0].Content) == n
}

func TestARefusedRecordDoesNotStopTheOthers(t *testing.T) {
	tests := []struct {
		name  string
		setup func(c *fakeCollector)
		code  string
	}{
		{"listed as rejected", func(c *fakeCollector) {
			c.refuse = func(r audit.Record) string {
				if hasPrompt(r, 777) {
					return "hash does not match"
				}
				return ""
			}
		}, "invalid_record"},
		{"alone in a batch answered 413", func(c *fakeCollector) {
			c.tooLarge = func(r audit.Record) bool { return hasPrompt(r, 777) }
		}, "record_too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openSpool(t)
			c := newFakeCollector(t)
			tt.setup(c)
			var logs testlog.Buffer
			ids := seal(t, s, 10, 100)
			bad := seal(t, s, 1, 777)[0]
			ids = append(ids, seal(t, s, 10, 100)...)
			start(t, Config{Source: s, Collector: c.srv.URL, MaxBatchRecords: 8, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			checkDelivered(t, c, s, ids)
			if st := s.Stats(); st.Rejected != 1 {
				t.Errorf("spool Stats = %+v, want the refused record kept aside", st)
			}
			rej, err := s.RejectedRecords(context.Background())
			if err != nil || len(rej) != 1 || rej[0].Seq != 11 || rej[0].Code != tt.code {
				t.Fatalf("RejectedRecords = %+v (%v), want seq 11 with code %s", rej, err, tt.code)
			}
			if l := logs.String(); !strings.Contains(l, "id="+bad) || !strings.Contains(l, "code="+tt.code) {
				t.Errorf("the refused record's id and code are not logged:\n%s", l)
			}
			// Records sealed later flow as before.
			more := seal(t, s, 3, 100)
			checkDelivered(t, c, s, append(ids, more...))
		})
	}
}
