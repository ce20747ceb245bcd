package openai

import (
	"strings"
	"testing"
)

// assemble runs a stream fixture through a parser and an assembler.
func assemble(t *testing.T, ep Endpoint, file string, maxEvents int) *StreamAssembler {
	t.Helper()
	p := NewSSEParser(0)
	a := NewStreamAssembler(ep, maxEvents)
	if err := p.Feed(fixture(t, "streams/"+file), a.Add); err != nil {
		t.Fatal(err)
	}
	p.Flush(a.Add)
	if p.Incomplete() {
		t.Error("stream incomplete")
	}
	return a
}

func TestStreamAssembler(t *testing.T) {
	tests := []struct {
		file      string
		ep        Endpoint
		want      Response
		done      bool
		events    int
		malformed int
	}{
		{"chat.sse", ChatCompletions, Response{
			ID: "chatcmpl-AVq5Yv0xR0", Model: "gpt-4o-mini-2024-07-18", UsageSource: UsageNone,
			Choices: []Choice{{Role: "assistant", Content: "Hello! How can I assist you today?", FinishReason: "stop"}},
		}, true, 12, 0},
		{"chat_usage.sse", ChatCompletions, Response{
			ID: "chatcmpl-B1xQz9w3kV7uTnR2", Model: "gpt-4o-2024-08-06", UsageSource: UsageFromStream,
			Usage:   &Usage{InputTokens: 24, OutputTokens: 62, TotalTokens: 86},
			Choices: []Choice{{Role: "assistant", Content: string(fixture(t, "streams/chat_usage.txt")), FinishReason: "stop"}},
		}, true, 66, 0},
		{"chat_tools.sse", ChatCompletions, Response{
			ID: "chatcmpl-BTc0l8mZkS3J", Model: "gpt-4.1-2025-04-14", UsageSource: UsageFromStream,
			Usage: &Usage{InputTokens: 88, OutputTokens: 52, TotalTokens: 140, CachedTokens: 64},
			Choices: []Choice{{Role: "assistant", FinishReason: "tool_calls", ToolCalls: []ToolCall{
				{ID: "call_DdmO9pD3xa9XTPNJ32zg2hcA", Type: "function", Name: "get_weather", Arguments: `{"location": "Boston, MA"}`},
				{ID: "call_ABcd1234EFgh5678IJkl9012", Type: "function", Name: "get_weather", Arguments: `{"location": "Paris, France"}`},
			}}},
		}, true, 19, 0},
		{"chat_n2.sse", ChatCompletions, Response{
			ID: "chatcmpl-n2x9", Model: "gpt-4o-mini-2024-07-18", UsageSource: UsageNone,
			Choices: []Choice{
				{Index: 0, Role: "assistant", Content: "Red is warm.", FinishReason: "stop"},
				{Index: 1, Role: "assistant", Content: "Blue is cool.", FinishReason: "length"},
			},
		}, true, 13, 0},
		{"chat_keepalive_crlf.sse", ChatCompletions, Response{
			ID: "chatcmpl-ka77", Model: "gpt-4o-mini-2024-07-18", UsageSource: UsageNone,
			Choices: []Choice{{Role: "assistant", Content: "Still here.", FinishReason: "stop"}},
		}, true, 6, 0},
		{"chat_error.sse", ChatCompletions, Response{
			ID: "chatcmpl-err1", Model: "gpt-4o-2024-08-06", UsageSource: UsageNone,
			Choices: []Choice{{Role: "assistant", Content: "The answer"}},
			Error:   &APIError{Message: "The server had an error while processing your request. Sorry about that!", Type: "server_error"},
		}, false, 3, 0},
		{"completions.sse", Completions, Response{
			ID: "cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe", Model: "gpt-3.5-turbo-instruct", UsageSource: UsageFromStream,
			Usage:   &Usage{InputTokens: 5, OutputTokens: 7, TotalTokens: 12},
			Choices: []Choice{{Content: "\n\nThis is indeed a test", FinishReason: "length"}},
		}, true, 9, 0},
		{"responses.sse", Responses, Response{
			ID: "resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654", Model: "gpt-4.1-2025-04-14",
			Status: "completed", UsageSource: UsageFromStream,
			Usage:   &Usage{InputTokens: 37, OutputTokens: 11, TotalTokens: 48},
			Choices: []Choice{{Role: "assistant", Content: "Hi there! How can I help you today?", FinishReason: "completed"}},
		}, true, 18, 0},
		{"responses_tools.sse", Responses, Response{
			ID: "resp_682d514e268c8191a89c38ea318446200f2610a7ec781a4f", Model: "gpt-4.1-2025-04-14",
			Status: "incomplete", UsageSource: UsageFromStream,
			Usage: &Usage{InputTokens: 61, OutputTokens: 20, TotalTokens: 81, ReasoningTokens: 64},
			Choices: []Choice{{Role: "assistant", FinishReason: "max_output_tokens", ToolCalls: []ToolCall{
				{ID: "call_AtGNSjXTQgGZbHHCTZl8PXEV", Type: "function", Name: "get_weather", Arguments: `{"location":"Paris, France"}`}}}},
		}, true, 12, 0},
		{"responses_error.sse", Responses, Response{
			ID: "resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654", Model: "gpt-4.1-2025-04-14",
			Status: "in_progress", UsageSource: UsageNone,
			Error:   &APIError{Code: "server_error", Message: "The server had an error while processing your request."},
			Choices: []Choice{{Role: "assistant", Content: "Partial"}},
		}, false, 4, 0},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			a := assemble(t, tt.ep, tt.file, 1000)
			sameJSON(t, "result", a.Result(), tt.want)
			if a.Done() != tt.done || len(a.Events()) != tt.events || a.Malformed() != tt.malformed || a.Dropped() != 0 {
				t.Errorf("done %v, events %d, malformed %d, dropped %d; want %v, %d, %d, 0",
					a.Done(), len(a.Events()), a.Malformed(), a.Dropped(), tt.done, tt.events, tt.malformed)
			}
			if !a.FirstContent() {
				t.Error("no first content")
			}
			// The whole body through ParseResponse gives the same result.
			r, err := ParseResponse(tt.ep, 200, "text/event-stream; charset=utf-8", fixture(t, "streams/"+tt.file))
			if err != nil {
				t.Fatal(err)
			}
			sameJSON(t, "ParseResponse", r, tt.want)
		})
	}
}

func TestStreamAssemblerBounds(t *testing.T) {
	a := NewStreamAssembler(ChatCompletions, 2)
	for _, d := range []string{
		`{"choices":[{"index":0,"delta":{"role":"assistant"}}]}`,
		`not json`,
		`{"choices":[{"index":0,"delta":{"content":"a"}}]`,
		`[1]`,
		`{"choices":[{"index":-1,"delta":{"content":"x"}},{"index":0,"delta":{"content":"b","tool_calls":[{"index":-3}]}}]}`,
		`{"choices":[{"index":"zero","delta":{"content":"c"}}]}`,
		` [DONE] `,
	} {
		a.Add(Event{Data: d})
	}
	a.Add(Event{Comment: true, Data: "keep-alive"})
	if a.Malformed() != 5 || a.Dropped() != 5 || len(a.Events()) != 2 || !a.Done() {
		t.Errorf("malformed %d, dropped %d, kept %d, done %v", a.Malformed(), a.Dropped(), len(a.Events()), a.Done())
	}
	sameJSON(t, "result", a.Result(), Response{UsageSource: UsageNone,
		Choices: []Choice{{Role: "assistant", Content: "bc"}}})

	// A stream naming endless choices stays bounded.
	a = NewStreamAssembler(ChatCompletions, 0)
	for i := range 1000 {
		a.Add(Event{Data: `{"choices":[{"index":` + itoa(i) + `,"delta":{"content":"x"}}]}`})
	}
	if n := len(a.Result().Choices); n != maxStreamChoices {
		t.Errorf("%d choices", n)
	}
	if a.Dropped() != 1000 || len(a.Events()) != 0 {
		t.Errorf("dropped %d, kept %d", a.Dropped(), len(a.Events()))
	}
}

func TestStreamAssemblerFirstContent(t *testing.T) {
	a := NewStreamAssembler(ChatCompletions, 10)
	a.Add(Event{Data: `{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}`})
	if a.FirstContent() {
		t.Error("first content before any text")
	}
	a.Add(Event{Data: `{"choices":[{"index":0,"delta":{"content":"Hi"}}]}`})
	if !a.FirstContent() {
		t.Error("no first content after text")
	}
	r := NewStreamAssembler(Responses, 10)
	r.Add(Event{Event: "response.created", Data: `{"type":"response.created","response":{"id":"resp_1","status":"in_progress"}}`})
	if r.FirstContent() {
		t.Error("first content before any delta")
	}
	r.Add(Event{Event: "response.function_call_arguments.delta", Data: `{"type":"response.function_call_arguments.delta","item_id":"fc_1","output_index":0,"delta":"{\"a\""}`})
	if !r.FirstContent() {
		t.Error("no first content after an arguments delta")
	}
	if got := r.Result().Choices[0].ToolCalls[0].Arguments; got != `{"a"` {
		t.Errorf("arguments %q", got)
	}
}

func TestParseStreamBodyIncomplete(t *testing.T) {
	body := fixture(t, "streams/chat.sse")
	cut := body[:strings.LastIndex(string(body), "data: [DONE]")+8]
	r, err := ParseResponse(ChatCompletions, 200, "text/event-stream", cut)
	if err == nil || r.Choices[0].Content != "Hello! How can I assist you today?" {
		t.Errorf("err %v, result %+v", err, r)
	}
}

func TestStreamAssemblerResponsesWithoutDeltas(t *testing.T) {
	a := NewStreamAssembler(Responses, 0)
	for _, d := range []string{
		`{"type":"response.created","response":{"id":"resp_9","model":"gpt-5","status":"in_progress"}}`,
		`{"type":"response.output_item.added","output_index":0,"item":{"type":"function_call","id":"fc_1","call_id":"call_1","name":"lookup","arguments":""}}`,
		`{"type":"response.function_call_arguments.delta","output_index":0,"delta":"{\"q\":"}`,
		`{"type":"response.function_call_arguments.delta","output_index":0,"item_id":"fc_1","delta":"1}"}`,
		`{"type":"response.output_item.done","output_index":1,"item":{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Only in the done event."},{"type":"refusal","refusal":"No."}]}}`,
		`{"type":"response.output_item.added","output_index":2,"item":{"type":"custom_tool_call","id":"ctc_1","call_id":"call_2","name":"shell","input":""}}`,
		`{"type":"response.custom_tool_call_input.delta","output_index":2,"item_id":"ctc_1","delta":"ls -l"}`,
		`{"type":"response.output_item.added","output_index":3,"item":{"type":"function_call","id":"fc_2","call_id":"call_3","name":"noop"}}`,
		`{"type":"response.function_call_arguments.done","output_index":3,"item_id":"fc_2","arguments":"{}"}`,
		`{"type":"response.output_text.done","output_index":4,"content_index":0,"text":"Text from done."}`,
	} {
		a.Add(Event{Data: d})
	}
	sameJSON(t, "result", a.Result(), Response{ID: "resp_9", Model: "gpt-5", Status: "in_progress", UsageSource: UsageNone,
		Choices: []Choice{{Role: "assistant", Content: "Only in the done event.\nText from done.", Refusal: "No.", ToolCalls: []ToolCall{
			{ID: "call_1", Type: "function", Name: "lookup", Arguments: `{"q":1}`},
			{ID: "call_2", Type: "custom", Name: "shell", Arguments: "ls -l"},
			{ID: "call_3", Type: "function", Name: "noop", Arguments: "{}"},
		}}}})
	if a.Done() || a.Malformed() != 0 || !a.FirstContent() {
		t.Errorf("done %v, malformed %d, first %v", a.Done(), a.Malformed(), a.FirstContent())
	}
}
