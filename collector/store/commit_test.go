package store

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/promptrail/promptrail/audit"
)

// TestConcurrentIngestOverlappingPostings has agents whose records
// interleave in time ship small batches at once, so commits are shared
// and index postings overlap; queries must still page newest first,
// exactly once, and the log must verify.
func TestConcurrentIngestOverlappingPostings(t *testing.T) {
	s := openTestStore(t, Config{Bucket: time.Hour})
	start := time.Now().Add(-3 * time.Hour)
	const agents, batches, size = 4, 12, 9
	work := make([][][]audit.Record, agents)
	var all []audit.Record
	for a := range agents {
		c := newChain(t, fmt.Sprintf("agent-%d", a), start)
		for b := range batches {
			batch := make([]audit.Record, size)
			for i := range batch {
				k := (b*size+i)*agents + a
				// Each agent's records step over the others', so every
				// batch's time range overlaps those of the other agents.
				c.at = start.Add(time.Duration(k) * 97 * time.Second)
				batch[i] = c.next(func(r *audit.Record) {
					r.Workload.Namespace = []string{"alpha", "beta", "gamma"}[k%3]
					r.Request.Model = []string{"m1", "m2"}[k%2]
					if k%5 == 0 {
						r.Decision.Action = "block"
					}
				})
			}
			work[a] = append(work[a], batch)
			all = append(all, batch...)
		}
	}
	var wg sync.WaitGroup
	for a := range agents {
		wg.Go(func() {
			for _, batch := range work[a] {
				res, err := s.Ingest(context.Background(), batch)
				if err != nil || res.Accepted != len(batch) || len(res.ChainIssues) != 0 {
					t.Errorf("Ingest: %+v, %v", res, err)
				}
			}
		})
	}
	wg.Wait()
	// Sent again, concurrently: all duplicates.
	for a := range agents {
		wg.Go(func() {
			res, err := s.Ingest(context.Background(), work[a][3])
			if err != nil || res.Duplicates != size {
				t.Errorf("Ingest again: %+v, %v", res, err)
			}
		})
	}
	wg.Wait()

	filters := []struct {
		f     Filter
		match func(r *audit.Record) bool
	}{
		{Filter{Namespace: "beta"}, func(r *audit.Record) bool { return r.Workload.Namespace == "beta" }},
		{Filter{Model: "m2", Action: "block"}, func(r *audit.Record) bool { return r.Request.Model == "m2" && r.Decision.Action == "block" }},
		{Filter{Agent: "agent-2", Namespace: "gamma"}, func(r *audit.Record) bool { return r.AgentID == "agent-2" && r.Workload.Namespace == "gamma" }},
		{Filter{Namespace: "alpha", Since: all[50].Start, Until: all[300].Start}, func(r *audit.Record) bool {
			return r.Workload.Namespace == "alpha" && !r.Start.Before(all[50].Start) && r.Start.Before(all[300].Start)
		}},
	}
	for _, tt := range filters {
		var want []string
		for i := range all {
			if tt.match(&all[i]) {
				want = append(want, all[i].ID)
			}
		}
		sort.Sort(sort.Reverse(sort.StringSlice(want)))
		for _, limit := range []int{1, 5, 1000} {
			got := queryAll(t, s, tt.f, limit)
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("%+v limit %d: got %d records, want %d\n got %v\nwant %v", tt.f, limit, len(got), len(want), got, want)
			}
		}
	}
	if rep := verifyStore(t, s); !rep.OK || rep.Records != len(all) {
		t.Errorf("Verify: OK %v, %d records, want %d:\n%s", rep.OK, rep.Records, len(all), kinds(rep))
	}
	for _, i := range []int{0, 137, len(all) - 1} {
		rec, p, err := s.Get(context.Background(), all[i].ID)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		checkProof(t, s.VerifierKey(), DefaultOrigin, rec, p)
	}
}

func TestOpenRefusesOtherLayout(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, Config{Dir: dir})
	rawSet(t, s, keyLayout, u64(1))
	s.Close()
	_, err := Open(context.Background(), Config{Dir: dir, Logger: quietLogger()})
	if err == nil || !strings.Contains(err.Error(), "layout 1") {
		t.Fatalf("Open of a layout-1 store: error %v, want one naming the layout", err)
	}

	// A store from before layout versions has m/bucket but no m/layout.
	dir = t.TempDir()
	s = openTestStore(t, Config{Dir: dir})
	rawDelete(t, s, keyLayout)
	s.Close()
	if _, err := Open(context.Background(), Config{Dir: dir, Logger: quietLogger()}); err == nil {
		t.Fatal("Open accepted a store without a layout version")
	}
}
