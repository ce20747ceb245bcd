package openai

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParseRequestFixtures(t *testing.T) {
	tests := []struct {
		file string
		ep   Endpoint
		want Request
	}{
		{"chat_basic.json", ChatCompletions, Request{
			Endpoint: ChatCompletions, Model: "gpt-4o-mini", MaxTokens: 256, Temperature: ptr(0.2), User: "user-1234",
			Messages: []Message{
				{Role: "developer", Content: "You are a terse assistant. Answer in one sentence."},
				{Role: "user", Content: "What is the capital of Australia?"},
				{Role: "assistant", Content: "Canberra."},
				{Role: "user", Name: "alice", Content: "And its population?"},
			}}},
		{"chat_parts.json", ChatCompletions, Request{
			Endpoint: ChatCompletions, Model: "gpt-4o", MaxTokens: 300,
			Messages: []Message{
				{Role: "system", Content: "Describe images precisely."},
				{Role: "user", Content: "What is in these two pictures?\n[image]\n" +
					"[image: https://upload.wikimedia.org/wikipedia/commons/3/3f/Fronalpstock_big.jpg]\n[audio: wav]\n[file: report.pdf]"},
			}}},
		{"chat_tools.json", ChatCompletions, Request{
			Endpoint: ChatCompletions, Model: "gpt-4.1", Stream: true, IncludeUsage: true,
			Tools: []string{"get_weather", "get_time"},
			Messages: []Message{
				{Role: "user", Content: "What's the weather like in Boston and Paris today?"},
				{Role: "assistant", ToolCalls: []ToolCall{
					{ID: "call_8nYqP0rDkwqxfNAmgOUwQhHO", Type: "function", Name: "get_weather", Arguments: `{"location": "Boston, MA"}`},
					{ID: "call_Z4uXc7jRkTq1bQn2mP8sVw3e", Type: "function", Name: "get_weather", Arguments: `{"location": "Paris, France"}`},
				}},
				{Role: "tool", ToolCallID: "call_8nYqP0rDkwqxfNAmgOUwQhHO", Content: `{"temperature": 22, "unit": "celsius"}`},
				{Role: "tool", ToolCallID: "call_Z4uXc7jRkTq1bQn2mP8sVw3e", Content: `{"temperature": 17, "unit": "celsius"}`},
			}}},
		{"responses_string.json", Responses, Request{
			Endpoint: Responses, Model: "gpt-4.1", Stream: true, MaxTokens: 500, Temperature: ptr(1.0),
			Messages: []Message{
				{Role: "system", Content: "Talk like a pirate."},
				{Role: "user", Content: "Are semicolons optional in JavaScript?"},
			}}},
		{"responses_items.json", Responses, Request{
			Endpoint: Responses, Model: "o4-mini",
			PreviousResponseID: "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
			Tools:              []string{"get_weather", "web_search_preview", "mcp:deepwiki"},
			Messages: []Message{
				{Role: "developer", Content: "Use tools when they help."},
				{Role: "user", Content: "What's in this image, and what's the weather where it was taken?\n[image]\n[file: file-6F2ksmvXxt4VdoqmHRw6kL]"},
				{Role: "reasoning", Content: "The user wants the weather; call get_weather."},
				{Role: "assistant", ToolCalls: []ToolCall{{ID: "call_12345xyz", Type: "function", Name: "get_weather", Arguments: `{"location":"Paris, France"}`}}},
				{Role: "tool", ToolCallID: "call_12345xyz", Content: `{"temperature": 14}`},
				{Role: "assistant", Content: "It is 14°C in Paris."},
				{Role: "item", Content: "[item_reference: msg_67ccd2bf17f0819081ff3bb2cf6508e6]"},
				{Role: "item", Content: "[web_search_call]"},
			}}},
		{"completions.json", Completions, Request{
			Endpoint: Completions, Model: "gpt-3.5-turbo-instruct", Prompt: "Say this is a test",
			MaxTokens: 7, Temperature: ptr(0.0), Stream: true, IncludeUsage: true}},
		{"completions_batch.json", Completions, Request{
			Endpoint: Completions, Model: "gpt-3.5-turbo-instruct", MaxTokens: 16,
			Prompt: "Once upon a time\n[4 tokens]\nThe end"}},
		{"embeddings.json", Embeddings, Request{
			Endpoint: Embeddings, Model: "text-embedding-3-small", User: "user-42",
			Input: []string{"The food was delicious and the waiter was friendly.", "The service was slow."}}},
		{"embeddings_tokens.json", Embeddings, Request{
			Endpoint: Embeddings, Model: "text-embedding-ada-002", Input: []string{"[5 tokens]", "[2 tokens]"}}},
		{"embeddings_string.json", Embeddings, Request{
			Endpoint: Embeddings, Model: "text-embedding-3-large", Input: []string{"The quick brown fox jumped over the lazy dog"}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			body := fixture(t, "requests/"+tt.file)
			got, err := ParseRequest(tt.ep, "application/json", body)
			if err != nil {
				t.Fatal(err)
			}
			sameJSON(t, "request", got, tt.want)
		})
	}
}

func TestParseRequestNoBase64(t *testing.T) {
	for _, file := range []string{"chat_parts.json", "responses_items.json"} {
		body := fixture(t, "requests/"+file)
		ep := ChatCompletions
		if strings.HasPrefix(file, "responses") {
			ep = Responses
		}
		req, err := ParseRequest(ep, "application/json; charset=utf-8", body)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range req.Messages {
			for _, bad := range []string{"base64", "iVBORw0KGgo", "/9j/4AAQ", "UklGR", "JVBERi0", "data:"} {
				if strings.Contains(m.Content, bad) {
					t.Errorf("%s: message content holds %q: %q", file, bad, m.Content)
				}
			}
		}
	}
}

func TestParseRequestSmall(t *testing.T) {
	tests := []struct {
		name string
		ep   Endpoint
		body string
		want Request
	}{
		{"responses input parts as string", Responses,
			`{"model":"m","input":[{"role":"user","content":"hi"},{"type":"function_call_output","call_id":"c1","output":[{"type":"input_text","text":"ok"},{"type":"input_image","image_url":"https://x/y.png"}]}]}`,
			Request{Endpoint: Responses, Model: "m", Messages: []Message{
				{Role: "user", Content: "hi"}, {Role: "tool", ToolCallID: "c1", Content: "ok\n[image: https://x/y.png]"}}}},
		{"chat refusal part and legacy function call", ChatCompletions,
			`{"model":"m","functions":[{"name":"f"}],"messages":[{"role":"assistant","content":[{"type":"refusal","refusal":"no"}]},{"role":"assistant","function_call":{"name":"f","arguments":"{}"}},{"role":"function","name":"f","content":"1"}]}`,
			Request{Endpoint: ChatCompletions, Model: "m", Tools: []string{"f"}, Messages: []Message{
				{Role: "assistant", Content: "no"},
				{Role: "assistant", ToolCalls: []ToolCall{{Type: "function", Name: "f", Arguments: "{}"}}},
				{Role: "function", Name: "f", Content: "1"}}}},
		{"custom tools", ChatCompletions,
			`{"model":"m","tools":[{"type":"custom","custom":{"name":"grammar"}}],"messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"custom","custom":{"name":"grammar","input":"x+1"}}]}]}`,
			Request{Endpoint: ChatCompletions, Model: "m", Tools: []string{"grammar"}, Messages: []Message{
				{Role: "assistant", ToolCalls: []ToolCall{{ID: "c", Type: "custom", Name: "grammar", Arguments: "x+1"}}}}}},
		{"escaped key matches as the API does", ChatCompletions,
			`{"\u006dodel":"real","messages":[{"role":"user","content":"a"}]}`,
			Request{Endpoint: ChatCompletions, Model: "real", Messages: []Message{{Role: "user", Content: "a"}}}},
		{"keys differing in case are not the API's", ChatCompletions,
			`{"model":"real","MODEL":"fake","messages":[{"role":"user","content":"seen by the API"}],"Messages":[{"role":"user","content":"fake"}],"Stream":true,"\u004dodel":"fake","modeK":1,"mode\u212a":"x"}`,
			Request{Endpoint: ChatCompletions, Model: "real", Messages: []Message{{Role: "user", Content: "seen by the API"}}}},
		{"completions token prompt", Completions, `{"model":"m","prompt":[1,2,3]}`,
			Request{Endpoint: Completions, Model: "m", Prompt: "[3 tokens]"}},
		{"embeddings tokens", Embeddings, `{"model":"m","input":[1,2,3,4]}`,
			Request{Endpoint: Embeddings, Model: "m", Input: []string{"[4 tokens]"}}},
		{"other endpoint keeps the common fields", Other, `{"model":"m","stream":true,"user":"u"}`,
			Request{Endpoint: Other, Model: "m", Stream: true, User: "u"}},
		{"data URL in upper case", ChatCompletions,
			`{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"DATA:image/png;base64,AAAA"}}]}]}`,
			Request{Endpoint: ChatCompletions, Messages: []Message{{Role: "user", Content: "[image]"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRequest(tt.ep, "", []byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			sameJSON(t, "request", got, tt.want)
		})
	}
}

func TestParseRequestErrors(t *testing.T) {
	tests := []struct {
		name    string
		ep      Endpoint
		ct      string
		body    string
		is      error
		inError string
		want    Request
	}{
		{"empty", ChatCompletions, "application/json", "  \n", ErrEmptyBody, "empty", Request{Endpoint: ChatCompletions}},
		{"multipart", Other, "multipart/form-data; boundary=x", "--x--", ErrNotJSON, "multipart/form-data", Request{Endpoint: Other}},
		{"not JSON", ChatCompletions, "", "hello", ErrInvalidJSON, "byte 0", Request{Endpoint: ChatCompletions}},
		{"truncated in a message", ChatCompletions, "",
			`{"model":"gpt-4o","stream":true,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Tell me about the Eiff`,
			ErrInvalidJSON, "unexpected end of JSON input",
			Request{Endpoint: ChatCompletions, Model: "gpt-4o", Stream: true, Messages: []Message{
				{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Tell me about the Eiff"}}}},
		{"truncated in an escape", ChatCompletions, "", `{"model":"m","messages":[{"role":"user","content":"a\u00`,
			ErrInvalidJSON, "", Request{Endpoint: ChatCompletions, Model: "m", Messages: []Message{{Role: "user", Content: "a"}}}},
		{"truncated in a rune", ChatCompletions, "", "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"caf\xc3",
			ErrInvalidJSON, "", Request{Endpoint: ChatCompletions, Model: "m", Messages: []Message{{Role: "user", Content: "caf"}}}},
		{"truncated in a number", Completions, "", `{"model":"m","prompt":"p","max_tokens":12`,
			ErrInvalidJSON, "", Request{Endpoint: Completions, Model: "m", Prompt: "p"}},
		{"syntax error in the middle", ChatCompletions, "", `{"model":"m","temperature":0.5,,"user":"u"}`,
			ErrInvalidJSON, "invalid character ','", Request{Endpoint: ChatCompletions, Model: "m", Temperature: ptr(0.5)}},
		{"trailing garbage", ChatCompletions, "", `{"model":"m"} x`,
			ErrInvalidJSON, "after top-level value", Request{Endpoint: ChatCompletions, Model: "m"}},
		{"wrong type", ChatCompletions, "", `{"model":5,"user":"u","messages":[{"role":"user","content":"hi"}]}`,
			nil, `field "model" holds a JSON number`,
			Request{Endpoint: ChatCompletions, User: "u", Messages: []Message{{Role: "user", Content: "hi"}}}},
		{"array body", ChatCompletions, "", `[1,2]`, nil, "not an object", Request{Endpoint: ChatCompletions}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRequest(tt.ep, tt.ct, []byte(tt.body))
			if err == nil {
				t.Fatal("no error")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.inError) {
				t.Errorf("error %q does not say %q", err, tt.inError)
			}
			sameJSON(t, "request", got, tt.want)
		})
	}
}

func TestParseRequestLongURL(t *testing.T) {
	long := "https://example.com/" + strings.Repeat("a\\/é", 3000)
	body := `{"messages":[{"role":"user","content":[{"type":"image_url","image_url":"` + long + `"}]}]}`
	req, err := ParseRequest(ChatCompletions, "", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	c := req.Messages[0].Content
	if !strings.HasPrefix(c, "[image: https://example.com/a/éa/é") || !strings.HasSuffix(c, "…]") || len(c) > maxURLShown+20 {
		t.Errorf("content %d bytes: %.60q…%q", len(c), c, c[len(c)-10:])
	}
}

func TestParseRequestErrorUnwraps(t *testing.T) {
	_, err := ParseRequest(ChatCompletions, "", []byte(`{"model":["x"]}`))
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) || te.Field != "model" {
		t.Errorf("error %v does not unwrap to the field's type error", err)
	}
}
