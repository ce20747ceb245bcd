package store

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/promptrail/promptrail/agent/openai"
	"github.com/promptrail/promptrail/audit"
)

// benchText is prose of the size of a realistic prompt or answer.
var benchText = strings.Repeat("The quarterly report shows revenue growth in every region; summarise the risks. ", 10)

// benchFleet makes realistic 2 KB records for a fleet of agents.
type benchFleet struct {
	chains  []*agentChain
	n       int
	batches int
}

func newBenchFleet(tb testing.TB, agents int, start time.Time) *benchFleet {
	f := &benchFleet{}
	for i := range agents {
		f.chains = append(f.chains, newChain(tb, fmt.Sprintf("agent-%02d", i), start))
	}
	return f
}

// batch returns n records of one agent starting at time at, step apart.
func (f *benchFleet) batch(n int, at time.Time, step time.Duration) []audit.Record {
	c := f.chains[f.batches%len(f.chains)]
	f.batches++
	out := make([]audit.Record, n)
	for i := range out {
		f.n++
		k := f.n
		c.at = at.Add(time.Duration(i) * step)
		out[i] = c.next(func(r *audit.Record) {
			r.Workload.Namespace = fmt.Sprintf("ns-%d", k%5)
			r.Workload.Pod = fmt.Sprintf("pod-%d", k%50)
			r.Workload.Identity = fmt.Sprintf("k8s:ns-%d/sa-%d", k%5, k%10)
			r.Request.Model = []string{"gpt-4o", "gpt-4o-mini", "o3", "gpt-4.1"}[k%4]
			r.Request.Messages = []openai.Message{
				{Role: "system", Content: "You are a careful financial analyst."},
				{Role: "user", Content: fmt.Sprintf("%d: %s", k, benchText)},
			}
			r.Response.Choices[0].Content = benchText[:700]
			if k%10 == 0 {
				r.Findings = []audit.Finding{{Rule: fmt.Sprintf("rule-%d", k%8), Where: "request", Count: 1, Fingerprint: "0a1b2c3d", Action: "mask"}}
				r.Decision.Action = "mask"
			}
			if k%50 == 0 {
				r.Decision.Action = "block"
			}
		})
	}
	return out
}

func BenchmarkIngest(b *testing.B) {
	s := openTestStore(b, Config{})
	f := newBenchFleet(b, 10, time.Now().Add(-time.Hour))
	at := time.Now().Add(-time.Hour)
	var took time.Duration
	size := 0
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		batch := f.batch(1000, at, time.Millisecond)
		at = at.Add(time.Second)
		if i == 0 {
			enc, _ := batch[0].Encode()
			size = len(enc)
		}
		b.StartTimer()
		t0 := time.Now()
		ingest(b, s, batch)
		took += time.Since(t0)
	}
	b.ReportMetric(float64(b.N*1000)/took.Seconds(), "records/s")
	b.ReportMetric(float64(size), "bytes/record")
}

// BenchmarkIngestConcurrent has 4 agents ship batches of 500 at once, as
// a collector serving a fleet sees them; records are made before the
// clock starts.
func BenchmarkIngestConcurrent(b *testing.B) {
	const agents, size = 4, 500
	s := openTestStore(b, Config{})
	start := time.Now().Add(-time.Hour)
	work := make([][][]audit.Record, agents)
	for a := range work {
		f := &benchFleet{chains: []*agentChain{newChain(b, fmt.Sprintf("agent-%02d", a), start)}, n: a}
		for i := 0; i < b.N; i++ {
			work[a] = append(work[a], f.batch(size, start.Add(time.Duration(i)*time.Second), time.Millisecond))
		}
	}
	b.ResetTimer()
	t0 := time.Now()
	var wg sync.WaitGroup
	for a := range work {
		wg.Go(func() {
			for _, batch := range work[a] {
				if _, err := s.Ingest(context.Background(), batch); err != nil {
					b.Errorf("Ingest: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(t0)
	b.StopTimer()
	b.ReportMetric(float64(agents*size*b.N)/took.Seconds(), "records/s")
}

// BenchmarkMillion builds a store of PROMPTRAIL_BENCH_RECORDS (default
// 1,000,000) records over four days, then measures queries and Verify.
// Run it with -benchtime 1x.
func BenchmarkMillion(b *testing.B) {
	total := 1_000_000
	if v := os.Getenv("PROMPTRAIL_BENCH_RECORDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1000 {
			b.Fatalf("PROMPTRAIL_BENCH_RECORDS=%q: want a number of at least 1000", v)
		}
		total = n
	}
	ctx := context.Background()
	// As the collector runs by default (--memory-limit 1GiB): without a
	// limit the Go heap grows to twice the live data between collections.
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(1 << 30))
	for b.Loop() {
		s := openTestStore(b, Config{})
		span := 4 * 24 * time.Hour
		start := time.Now().Add(-span - time.Hour)
		step := span / time.Duration(total)
		f := newBenchFleet(b, 20, start)
		var ingestTook time.Duration
		for done := 0; done < total; done += 1000 {
			batch := f.batch(min(1000, total-done), start.Add(time.Duration(done)*step), step)
			t0 := time.Now()
			ingest(b, s, batch)
			ingestTook += time.Since(t0)
		}
		b.ReportMetric(float64(total)/ingestTook.Seconds(), "ingest_records/s")
		// Badger maps its value log and tables into memory: most of the
		// peak is file pages the kernel can drop, so the anonymous part
		// (the Go heap, memtables, caches) is reported apart.
		b.ReportMetric(peakRSSMiB(b), "ingest_peak_rss_MiB")
		b.ReportMetric(statusMiB(b, "RssAnon:"), "ingest_rss_anon_MiB")
		b.ReportMetric(statusMiB(b, "RssFile:"), "ingest_rss_file_MiB")
		resetPeakRSS(b)

		lat := benchQueries(b, ctx, s)
		b.ReportMetric(ms(lat[len(lat)/2]), "query_p50_ms")
		b.ReportMetric(ms(lat[len(lat)*99/100]), "query_p99_ms")

		t0 := time.Now()
		rep, err := s.Verify(ctx)
		if err != nil || !rep.OK || rep.Records != total {
			b.Fatalf("Verify: %v, OK %v, %d records:\n%s", err, rep.OK, rep.Records, kinds(rep))
		}
		b.ReportMetric(time.Since(t0).Seconds(), "verify_s")
		b.ReportMetric(peakRSSMiB(b), "query_verify_peak_rss_MiB")
	}
}

func benchQueries(b *testing.B, ctx context.Context, s *Store) []time.Duration {
	filters := []Filter{
		{Namespace: "ns-1"}, {Workload: "pod-7"}, {Workload: "k8s:ns-2/sa-7"}, {Model: "o3"},
		{Finding: "rule-2"}, {Action: "block"}, {Agent: "agent-03"},
		{Namespace: "ns-3", Model: "gpt-4o"}, {Agent: "agent-05", Action: "mask"},
		{Finding: "rule-4", Namespace: "ns-4"}, {Model: "gpt-4.1", Action: "block", Namespace: "ns-0"},
	}
	var lat []time.Duration
	found := 0
	now := time.Now()
	for i := range 200 {
		f := filters[i%len(filters)]
		f.Limit = 50
		if i%3 == 1 { // a day-old window
			f.Until = now.Add(-24 * time.Hour)
		}
		t0 := time.Now()
		p, err := s.Query(ctx, f)
		lat = append(lat, time.Since(t0))
		found += len(p.Records)
		if err != nil {
			b.Fatalf("Query(%+v): %d records, %v", f, len(p.Records), err)
		}
	}
	if found == 0 {
		b.Fatal("no query found a record")
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// resetPeakRSS starts VmHWM afresh (proc(5): clear_refs, value 5).
func resetPeakRSS(tb testing.TB) {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		tb.Logf("resetting peak RSS: %v", err)
	}
}

func peakRSSMiB(tb testing.TB) float64 { return statusMiB(tb, "VmHWM:") }

// statusMiB reads a kB field of /proc/self/status, in MiB.
func statusMiB(tb testing.TB, field string) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		tb.Logf("%s %v", field, err)
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return float64(kb) / 1024
		}
	}
	return 0
}
