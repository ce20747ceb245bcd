package proxy

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/promptrail/promptrail/agent/mask"
	"github.com/promptrail/promptrail/agent/openai"
	"github.com/promptrail/promptrail/agent/secrets"
	"github.com/promptrail/promptrail/audit"
)

const testToken = "ghp_R8fQ2xLm4ZpW7nK1vTb9YcHs3JdE6aUo0GiN" // shaped like a GitHub PAT, not one

func testMasker(t testing.TB) *mask.Masker {
	t.Helper()
	eng, err := secrets.NewEngine(secrets.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return mask.New(eng, mask.Key(strings.Repeat("k", 32)))
}

// pieces splits s into n-byte pieces, as a model's deltas arrive.
func pieces(s string, n int) []string {
	var out []string
	for len(s) > n {
		out = append(out, s[:n])
		s = s[n:]
	}
	return append(out, s)
}

func chatStream(parts []string, toolArgs []string) string {
	var b strings.Builder
	chunk := func(delta string, finish string) {
		fr := "null"
		if finish != "" {
			fr = `"` + finish + `"`
		}
		fmt.Fprintf(&b, `data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":%s,"finish_reason":%s}]}`+"\n\n", delta, fr)
	}
	chunk(`{"role":"assistant","content":""}`, "")
	for _, p := range parts {
		chunk(fmt.Sprintf(`{"content":%q}`, p), "")
	}
	b.WriteString(": keep-alive\n\n")
	for i, a := range toolArgs {
		if i == 0 {
			chunk(fmt.Sprintf(`{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"deploy","arguments":%q}}]}`, a), "")
			continue
		}
		chunk(fmt.Sprintf(`{"tool_calls":[{"index":0,"function":{"arguments":%q}}]}`, a), "")
	}
	chunk(`{}`, "stop")
	b.WriteString("data: [DONE]\n\n")
	return b.String()
}

func responsesStream(parts []string) string {
	var b strings.Builder
	seq := 0
	ev := func(typ, body string) {
		fmt.Fprintf(&b, "event: %s\ndata: {\"type\":%q,\"sequence_number\":%d%s}\n\n", typ, typ, seq, body)
		seq++
	}
	ev("response.created", `,"response":{"id":"r1","status":"in_progress","output":[]}`)
	for _, p := range parts {
		ev("response.output_text.delta", fmt.Sprintf(`,"item_id":"m1","output_index":0,"content_index":0,"delta":%q`, p))
	}
	ev("response.output_text.done", fmt.Sprintf(`,"item_id":"m1","output_index":0,"content_index":0,"text":%q`, strings.Join(parts, "")))
	ev("response.completed", fmt.Sprintf(`,"response":{"id":"r1","status":"completed","output":[{"type":"message","id":"m1","role":"assistant","content":[{"type":"output_text","text":%q}]}]}`, strings.Join(parts, "")))
	return b.String()
}

// through runs a stream through the masking reader, delivering the
// upstream bytes in readSize pieces.
func through(t *testing.T, m *mask.Masker, ep openai.Endpoint, stream string, readSize int) string {
	t.Helper()
	r := newMaskedSSE(io.NopCloser(&chunkReader{s: stream, n: readSize}), ep, m)
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

type chunkReader struct {
	s   string
	n   int
	err error
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.s == "" {
		if c.err != nil {
			return 0, c.err
		}
		return 0, io.EOF
	}
	k := min(c.n, len(c.s), len(p))
	copy(p, c.s[:k])
	c.s = c.s[k:]
	return k, nil
}

func assemble(t *testing.T, ep openai.Endpoint, stream string) openai.Response {
	t.Helper()
	p := openai.NewSSEParser(1 << 20)
	a := openai.NewStreamAssembler(ep, 1000)
	if err := p.Feed([]byte(stream), a.Add); err != nil {
		t.Fatal(err)
	}
	if a.Malformed() != 0 {
		t.Fatalf("%d malformed events in the masked stream:\n%s", a.Malformed(), stream)
	}
	return a.Result()
}

func TestMaskedSSEChatAtEverySplit(t *testing.T) {
	m := testMasker(t)
	text := "Push with " + testToken + " and then tag the release."
	args := `{"token":"` + testToken + `","env":"prod"}`
	want, _ := m.Text("response", "", []byte(text))
	wantArgs, _ := m.Text("response", "", []byte(args))
	if !strings.Contains(string(want), "[MASKED:github-pat:") {
		t.Fatalf("the engine does not mask the test token: %q", want)
	}
	for size := 1; size <= 12; size++ {
		for _, read := range []int{1, 7, 4096} {
			out := through(t, m, openai.ChatCompletions, chatStream(pieces(text, size), pieces(args, size)), read)
			if strings.Contains(out, testToken[:10]) || strings.Contains(out, testToken[8:]) {
				t.Fatalf("delta size %d: the token leaked:\n%s", size, out)
			}
			r := assemble(t, openai.ChatCompletions, out)
			if got := r.Choices[0].Content; got != string(want) {
				t.Fatalf("delta size %d: reassembled %q, want %q", size, got, want)
			}
			if len(r.Choices[0].ToolCalls) != 1 || r.Choices[0].ToolCalls[0].Arguments != string(wantArgs) {
				t.Fatalf("delta size %d: tool calls %+v, want arguments %q", size, r.Choices[0].ToolCalls, wantArgs)
			}
		}
	}
}

func TestMaskedSSEResponsesKeepsSequenceNumbers(t *testing.T) {
	m := testMasker(t)
	text := "Your token is " + testToken + ", keep it safe."
	want, _ := m.Text("response", "", []byte(text))
	for size := 1; size <= 9; size++ {
		out := through(t, m, openai.Responses, responsesStream(pieces(text, size)), 5)
		if strings.Contains(out, testToken[:10]) {
			t.Fatalf("the token leaked:\n%s", out)
		}
		var deltas strings.Builder
		seq := int64(0)
		p := openai.NewSSEParser(1 << 20)
		p.Feed([]byte(out), func(ev openai.Event) {
			if got := gjson.Get(ev.Data, "sequence_number").Int(); got != seq {
				t.Fatalf("delta size %d: sequence number %d, want %d:\n%s", size, got, seq, out)
			}
			seq++
			if gjson.Get(ev.Data, "type").String() == "response.output_text.delta" {
				deltas.WriteString(gjson.Get(ev.Data, "delta").String())
			}
		})
		if deltas.String() != string(want) {
			t.Fatalf("delta size %d: deltas join to %q, want %q", size, deltas.String(), want)
		}
		if r := assemble(t, openai.Responses, out); r.Choices[0].Content != string(want) {
			t.Fatalf("final text %q, want %q", r.Choices[0].Content, want)
		}
	}
}

func TestMaskedSSEAbortNeverFlushesHeldText(t *testing.T) {
	m := testMasker(t)
	// The stream breaks while the token's first half is held back.
	parts := pieces("Here: "+testToken[:20], 4)
	stream := strings.TrimSuffix(chatStream(parts, nil), "data: [DONE]\n\n")
	stream = stream[:strings.LastIndex(stream, "data: ")] // drop the finish chunk
	src := &chunkReader{s: stream, n: 64, err: errors.New("upstream reset")}
	out, err := io.ReadAll(newMaskedSSE(io.NopCloser(src), openai.ChatCompletions, m))
	if err == nil {
		t.Fatal("a broken stream ended cleanly")
	}
	if strings.Contains(string(out), testToken[:8]) {
		t.Fatalf("held text was flushed on abort:\n%s", out)
	}
}

func TestBlockRuleStopsTheRequest(t *testing.T) {
	eng, err := secrets.NewEngine(secrets.Config{Actions: map[string]secrets.Action{"github-pat": secrets.ActionBlock}})
	if err != nil {
		t.Fatal(err)
	}
	f := newDecryptFixture(t, func(dc *DecryptConfig, _ *Config) { dc.Masker = mask.New(eng, mask.Key(strings.Repeat("k", 32))) })
	before := len(f.fake.Server.Requests())
	req := chatRequest(t, false, nil)
	req.Body = io.NopCloser(strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"use ` + testToken + `"}]}`))
	req.ContentLength = -1
	resp, err := f.client(true).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(body), "promptrail_blocked") {
		t.Fatalf("got %d %s, want 403 promptrail_blocked", resp.StatusCode, body)
	}
	if len(f.fake.Server.Requests()) != before {
		t.Fatal("a blocked request reached the upstream")
	}
	r := f.sink.wait(t, "blocked request", func(r *audit.Record) bool { return r.Decision.Action == "block" })
	if r.Decision.Rule != "github-pat" || strings.Contains(r.Request.Body, testToken) || len(r.Findings) == 0 {
		t.Errorf("record of a blocked request: decision %+v findings %+v", r.Decision, r.Findings)
	}
}
