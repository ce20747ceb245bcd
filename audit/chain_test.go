package audit

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/promptrail/promptrail/agent/openai"
)

func sampleRecord() Record {
	start := time.Date(2026, 11, 28, 10, 0, 0, 123456789, time.UTC)
	return Record{
		ID: NewID(start), AgentID: "node-a", Node: "node-a", Start: start, End: start.Add(1500 * time.Millisecond),
		DurationMS: 1500.25,
		Workload:   Workload{Kind: "pod", Namespace: "shop", Pod: "web-1", Labels: map[string]string{"b": "2", "a": "1"}, UID: 1000},
		Request: Request{Method: "POST", Path: "/v1/chat/completions", Model: "gpt-4o", Body: "bad utf8 \xff and \u2028",
			Messages: []openai.Message{{Role: "user", Content: "hi <b>&"}}},
		Findings: []Finding{{Rule: "aws-access-token", Where: "request", Count: 1, Fingerprint: "abcd0123", Action: "mask"}},
		Decision: Decision{Action: "mask"},
	}
}

func TestSealSurvivesJSONRoundTrip(t *testing.T) {
	r := sampleRecord()
	if err := r.Seal(1, ""); err != nil {
		t.Fatal(err)
	}
	b, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	var back Record
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if err := back.CheckHash(); err != nil {
		t.Fatalf("a record decoded from its own encoding fails its hash: %v", err)
	}
	b2, _ := back.Encode()
	if string(b) != string(b2) {
		t.Fatalf("re-encoding changed the bytes:\n%s\n%s", b, b2)
	}
}

func TestCheckHashCatchesEdits(t *testing.T) {
	edits := map[string]func(*Record){
		"prompt":    func(r *Record) { r.Request.Messages[0].Content = "hello" },
		"seq":       func(r *Record) { r.Seq = 3 },
		"prev hash": func(r *Record) { r.PrevHash = "00" },
		"decision":  func(r *Record) { r.Decision.Action = "allow" },
		"label":     func(r *Record) { r.Workload.Labels["a"] = "x" },
		"time":      func(r *Record) { r.Start = r.Start.Add(time.Nanosecond) },
	}
	for name, edit := range edits {
		t.Run(name, func(t *testing.T) {
			r := sampleRecord()
			if err := r.Seal(2, "ff"); err != nil {
				t.Fatal(err)
			}
			edit(&r)
			if err := r.CheckHash(); !errors.Is(err, ErrHash) {
				t.Fatalf("edited record: CheckHash = %v, want ErrHash", err)
			}
		})
	}
}

func TestUnsealedRecordFailsCheck(t *testing.T) {
	r := sampleRecord()
	if err := r.CheckHash(); err == nil {
		t.Fatal("an unsealed record passed CheckHash")
	}
	if err := r.Seal(0, ""); err == nil {
		t.Fatal("Seal accepted seq 0")
	}
}
