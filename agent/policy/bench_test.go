package policy

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/promptrail/promptrail/agent/openai"
)

// twentyRules is a 20-rule policy none of whose rules matches the bench
// request, so every rule is evaluated: the worst case of a decision.
func twentyRules(b *testing.B) *Policy {
	var s strings.Builder
	s.WriteString("rules:\n")
	whens := []string{
		`workload.namespace == "ci%d" && request.model.startsWith("gpt-4")`,
		`findings.exists(r, r == "aws-access-token-%d")`,
		`request.tokens > 100000 + %d`,
		`"code_interpreter_%d" in request.tools`,
		`workload.uid == %d && workload.comm == "curl"`,
		`request.text.contains("DROP TABLE %d")`,
		`workload.labels["tier"] == "batch%d" && request.stream`,
		`connection.sni.endsWith(".example%d.com") || request.path == "/v%d/files"`,
		`request.model.matches("^o[0-9]+-pro%d$")`,
		`workload.identity.startsWith("k8s:restricted%d/")`,
	}
	for i := range 20 {
		w := whens[i%len(whens)]
		fmt.Fprintf(&s, "  - name: r%d\n    when: '%s'\n    action: block\n", i, strings.ReplaceAll(strings.ReplaceAll(w, "%d", strconv.Itoa(i)), "'", "''"))
	}
	s.WriteString("default: {action: mask}\n")
	p, err := Parse(strings.NewReader(s.String()))
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// benchBody is a chat request of about 1 KB.
func benchBody(b *testing.B) []byte {
	text := strings.Repeat("Summarise the quarterly figures for the board, please. ", 16)
	body, err := json.Marshal(map[string]any{
		"model":    "gpt-4o-mini",
		"stream":   true,
		"messages": []map[string]string{{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}},
		"tools":    []map[string]any{{"type": "function", "function": map[string]string{"name": "get_weather"}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	return body
}

// BenchmarkDecide: one decision for a 1 KB request under 20 rules, from
// the parsed request (the proxy parses it for the record anyway).
func BenchmarkDecide(b *testing.B) {
	p := twentyRules(b)
	body := benchBody(b)
	req, err := openai.ParseRequest(openai.Classify("POST", "/v1/chat/completions"), "application/json", body)
	if err != nil {
		b.Fatal(err)
	}
	w := Workload{Kind: "pod", Namespace: "web", Labels: map[string]string{"tier": "front"}, UID: 1000, Comm: "python3", Identity: "k8s:web/default"}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		in := Input{Workload: w, Request: RequestOf("POST", "/v1/chat/completions", int64(len(body)), req), Findings: map[string]int64{}}
		if d := p.Decide(&in); d.Action != Mask || d.Rule != "default" {
			b.Fatalf("decision %+v", d)
		}
	}
}
