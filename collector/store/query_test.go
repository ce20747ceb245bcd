package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/promptrail/promptrail/audit"
)

// queryFixture stores 90 records of two agents over about four days,
// spread over namespaces, models, findings and actions.
func queryFixture(t *testing.T) (*Store, []audit.Record) {
	t.Helper()
	s := openTestStore(t, Config{})
	start := time.Now().Add(-100 * time.Hour)
	chains := []*agentChain{newChain(t, "agent-0", start), newChain(t, "agent-1", start)}
	var all []audit.Record
	for i := range 90 {
		c := chains[i%2]
		c.at = start.Add(time.Duration(i) * 65 * time.Minute)
		r := c.next(func(r *audit.Record) {
			r.Workload.Namespace = []string{"alpha", "beta", "gamma"}[i%3]
			r.Workload.Pod = fmt.Sprintf("pod-%d", i%4)
			r.Request.Model = []string{"gpt-4o", "gpt-4o-mini"}[i%2]
			if i%5 == 0 {
				r.Findings = []audit.Finding{{Rule: "aws-key", Where: "request", Count: 1, Action: "mask"},
					{Rule: "aws-key", Where: "response", Count: 1, Action: "mask"}}
			}
			if i%4 == 0 {
				r.Decision.Action = "block"
			}
			if i%7 == 0 {
				r.Request.Messages[0].Content += " with a Needle in it"
			}
			if i%11 == 0 {
				r.Response.Choices[0].Content = "NEEDLE & <thread>"
			}
		})
		all = append(all, r)
	}
	// Two batches, out of time order, to show ordering comes from IDs.
	ingest(t, s, all[45:])
	ingest(t, s, all[:45])
	return s, all
}

func TestQuery(t *testing.T) {
	s, all := queryFixture(t)
	mid := all[40].Start
	tests := []struct {
		name  string
		f     Filter
		match func(r *audit.Record) bool
	}{
		{"all", Filter{}, func(*audit.Record) bool { return true }},
		{"namespace", Filter{Namespace: "beta"}, func(r *audit.Record) bool { return r.Workload.Namespace == "beta" }},
		{"workload pod", Filter{Workload: "pod-3"}, func(r *audit.Record) bool { return r.Workload.Pod == "pod-3" }},
		{"workload identity", Filter{Workload: "k8s:default/web"}, func(*audit.Record) bool { return true }},
		{"model", Filter{Model: "gpt-4o-mini"}, func(r *audit.Record) bool { return r.Request.Model == "gpt-4o-mini" }},
		{"finding", Filter{Finding: "aws-key"}, func(r *audit.Record) bool { return len(r.Findings) > 0 }},
		{"action", Filter{Action: "block"}, func(r *audit.Record) bool { return r.Decision.Action == "block" }},
		{"agent", Filter{Agent: "agent-1"}, func(r *audit.Record) bool { return r.AgentID == "agent-1" }},
		{"unknown value", Filter{Model: "nope"}, func(*audit.Record) bool { return false }},
		{"combination", Filter{Namespace: "alpha", Action: "block", Model: "gpt-4o"}, func(r *audit.Record) bool {
			return r.Workload.Namespace == "alpha" && r.Decision.Action == "block" && r.Request.Model == "gpt-4o"
		}},
		{"text in prompt or response", Filter{Q: "needle"}, func(r *audit.Record) bool {
			return strings.Contains(strings.ToLower(r.Request.Messages[0].Content+r.Response.Choices[0].Content), "needle")
		}},
		{"text JSON escapes", Filter{Q: "& <THREAD>"}, func(r *audit.Record) bool {
			return strings.Contains(r.Response.Choices[0].Content, "& <thread>")
		}},
		{"text and index", Filter{Q: "needle", Agent: "agent-0"}, func(r *audit.Record) bool {
			return r.AgentID == "agent-0" && strings.Contains(strings.ToLower(r.Request.Messages[0].Content+r.Response.Choices[0].Content), "needle")
		}},
		{"since", Filter{Since: mid}, func(r *audit.Record) bool { return !r.Start.Before(mid) }},
		{"until", Filter{Until: mid}, func(r *audit.Record) bool { return r.Start.Before(mid) }},
		{"range and index", Filter{Since: all[10].Start, Until: all[70].Start, Namespace: "gamma"}, func(r *audit.Record) bool {
			return !r.Start.Before(all[10].Start) && r.Start.Before(all[70].Start) && r.Workload.Namespace == "gamma"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want []string
			for i := range all {
				if tt.match(&all[i]) {
					want = append(want, all[i].ID)
				}
			}
			sort.Sort(sort.Reverse(sort.StringSlice(want)))
			for _, limit := range []int{7, 1000} {
				got := queryAll(t, s, tt.f, limit)
				if strings.Join(got, ",") != strings.Join(want, ",") {
					t.Errorf("limit %d: got %d records\n%v\nwant %d, newest first\n%v", limit, len(got), got, len(want), want)
				}
			}
		})
	}
}

// queryAll follows the cursor to the end and returns the IDs in order.
func queryAll(t *testing.T, s *Store, f Filter, limit int) []string {
	t.Helper()
	f.Limit = limit
	var ids []string
	seen := map[string]bool{}
	for pages := 0; ; pages++ {
		if pages > 200 {
			t.Fatal("cursor does not end")
		}
		p, err := s.Query(context.Background(), f)
		if err != nil {
			t.Fatalf("Query(%+v): %v", f, err)
		}
		if len(p.Records) > limit {
			t.Fatalf("page of %d records, limit %d", len(p.Records), limit)
		}
		for _, r := range p.Records {
			if seen[r.ID] {
				t.Fatalf("record %s returned twice", r.ID)
			}
			seen[r.ID] = true
			ids = append(ids, r.ID)
		}
		if p.Next == "" {
			return ids
		}
		f.Cursor = p.Next
	}
}

func TestQueryLimitAndCursor(t *testing.T) {
	s, _ := queryFixture(t)
	p, err := s.Query(context.Background(), Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Records) != DefaultLimit || p.Next == "" {
		t.Errorf("default page: %d records, next %q; want %d and a cursor", len(p.Records), p.Next, DefaultLimit)
	}
	if _, err := s.Query(context.Background(), Filter{Cursor: "garbage!"}); !errors.Is(err, ErrBadCursor) {
		t.Errorf("bad cursor: error %v, want ErrBadCursor", err)
	}
}

func TestTextQueryScansABoundedNumberOfRecordsPerPage(t *testing.T) {
	s := openTestStore(t, Config{})
	s.scanBudget = 40
	recs := newChain(t, "agent-a", time.Now().Add(-time.Hour)).take(300, func(i int, r *audit.Record) {
		if i == 3 || i == 250 {
			r.Request.Messages[0].Content = "the rare needle"
		}
	})
	ingest(t, s, recs)
	for _, extra := range []Filter{{}, {Namespace: "default"}} {
		f := extra
		f.Q, f.Limit = "RARE NEEDLE", 10
		var got []string
		pages := 0
		for {
			p, err := s.Query(context.Background(), f)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, r := range p.Records {
				got = append(got, r.ID)
			}
			if p.Next == "" {
				break
			}
			f.Cursor = p.Next
		}
		if len(got) != 2 || got[0] != recs[250].ID || got[1] != recs[3].ID {
			t.Fatalf("filter %+v: found %v, want the two needles newest first, once each", extra, got)
		}
		if pages < 300/40 {
			t.Fatalf("filter %+v: %d pages: the scan was not bounded", extra, pages)
		}
	}
}
