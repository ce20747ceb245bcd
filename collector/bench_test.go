package collector_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/promptrail/promptrail/agent/openai"
	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/collector"
	"github.com/promptrail/promptrail/collector/auth"
	"github.com/promptrail/promptrail/collector/store"
)

// BenchmarkIngestHTTP is what an agent's shipper gets: batches of 500
// sealed ~2.4 KB records posted as JSON to /v1/ingest over loopback,
// decoded, checked and stored synced. Compare with the store's own
// BenchmarkIngest to see what HTTP and JSON decoding add.
func BenchmarkIngestHTTP(b *testing.B) {
	st, err := store.Open(context.Background(), store.Config{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	tok, _ := auth.ParseTokens([]byte("agent * " + agentA + "\n"))
	h, _ := collector.NewHandler(collector.HandlerConfig{Store: st, Auth: tok})
	srv := httptest.NewServer(h)
	b.Cleanup(srv.Close)

	const batch = 500
	prev, seq := "", uint64(0)
	at := time.Now().Add(-time.Hour)
	body := strings.Repeat("Summarise the attached quarterly report and list the three largest risks. ", 20)
	next := func() []byte {
		recs := make([]audit.Record, batch)
		for i := range recs {
			at = at.Add(time.Millisecond)
			seq++
			r := audit.Record{ID: audit.NewID(at), AgentID: "node-a", Node: "node-a", Start: at.UTC(), End: at.UTC(),
				Workload: audit.Workload{Kind: "pod", Namespace: fmt.Sprintf("ns-%d", seq%7), Pod: fmt.Sprintf("web-%d", seq%31), Identity: "k8s:shop/web"},
				Request: audit.Request{Method: "POST", Path: "/v1/chat/completions", Model: "gpt-4o", Body: body,
					Messages: []openai.Message{{Role: "user", Content: body}}},
				Response: &audit.Response{Status: 200, Choices: []openai.Choice{{Role: "assistant", Content: body[:400]}}},
				Decision: audit.Decision{Action: "allow"}}
			if err := r.Seal(seq, prev); err != nil {
				b.Fatal(err)
			}
			prev = r.Hash
			recs[i] = r
		}
		out, _ := json.Marshal(audit.Batch{Records: recs})
		return out
	}
	var took time.Duration
	for b.Loop() {
		b.StopTimer()
		payload := next()
		b.StartTimer()
		t0 := time.Now()
		req, _ := http.NewRequest("POST", srv.URL+"/v1/ingest", bytes.NewReader(payload))
		req.Header.Set("Authorization", "Bearer "+agentA)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("ingest: %v %v", err, resp)
		}
		resp.Body.Close()
		took += time.Since(t0)
	}
	b.ReportMetric(float64(b.N*batch)/took.Seconds(), "records/s")
}
