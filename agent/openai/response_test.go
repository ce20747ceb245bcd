package openai

import (
	"errors"
	"strings"
	"testing"
)

func TestParseResponseFixtures(t *testing.T) {
	tests := []struct {
		file   string
		ep     Endpoint
		status int
		want   Response
	}{
		{"chat.json", ChatCompletions, 200, Response{
			ID: "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", Model: "gpt-4o-2024-08-06",
			Choices: []Choice{{Index: 0, Role: "assistant", FinishReason: "stop",
				Content: "The image shows a wooden boardwalk path running through a lush green field."}},
			Usage:       &Usage{InputTokens: 1117, OutputTokens: 46, TotalTokens: 1163, CachedTokens: 1024},
			UsageSource: UsageFromResponse}},
		{"chat_tools_n2.json", ChatCompletions, 200, Response{
			ID: "chatcmpl-abc123", Model: "gpt-4o-mini-2024-07-18",
			Choices: []Choice{
				{Index: 0, Role: "assistant", FinishReason: "tool_calls", ToolCalls: []ToolCall{
					{ID: "call_abc123", Type: "function", Name: "get_current_weather", Arguments: "{\n\"location\": \"Boston, MA\"\n}"}}},
				{Index: 1, Role: "assistant", FinishReason: "stop", Refusal: "I'm sorry, I can't help with that."},
			},
			Usage:       &Usage{InputTokens: 82, OutputTokens: 17, TotalTokens: 99},
			UsageSource: UsageFromResponse}},
		{"responses.json", Responses, 200, Response{
			ID: "resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41", Model: "o3-2025-04-16", Status: "completed",
			Choices: []Choice{{Role: "assistant", FinishReason: "completed",
				Content: "The image depicts a scenic landscape with a wooden boardwalk.\nIt suggests a peaceful nature walk."}},
			Usage:       &Usage{InputTokens: 328, OutputTokens: 52, TotalTokens: 380},
			UsageSource: UsageFromResponse}},
		{"responses_function_call.json", Responses, 200, Response{
			ID: "resp_67ca09c5efe0819096d0511c92b8c890096610f474011cc0", Model: "gpt-4.1-2025-04-14", Status: "completed",
			Choices: []Choice{{Role: "assistant", FinishReason: "completed", ToolCalls: []ToolCall{
				{ID: "ws_67ca09c7d4d88190a0e1e5d3d3f0a4c8", Type: "web_search_call"},
				{ID: "call_unLAR8MvFNptuiZK6K6HCy5k", Type: "function", Name: "get_current_weather", Arguments: `{"location":"Boston, MA","unit":"celsius"}`},
			}}},
			Usage:       &Usage{InputTokens: 291, OutputTokens: 23, TotalTokens: 314},
			UsageSource: UsageFromResponse}},
		{"responses_incomplete.json", Other, 200, Response{
			ID: "resp_6820f5a1c1a48191a1d9b4a5e3f6b0aa", Model: "gpt-4.1-mini-2025-04-14", Status: "incomplete",
			Choices:     []Choice{{Role: "assistant", FinishReason: "max_output_tokens", Content: "Once upon a time, in a land far"}},
			Usage:       &Usage{InputTokens: 12, OutputTokens: 10, TotalTokens: 22},
			UsageSource: UsageFromResponse}},
		{"completions.json", Completions, 200, Response{
			ID: "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7", Model: "gpt-3.5-turbo-instruct",
			Choices:     []Choice{{Index: 0, Content: "\n\nThis is indeed a test", FinishReason: "length"}},
			Usage:       &Usage{InputTokens: 5, OutputTokens: 7, TotalTokens: 12},
			UsageSource: UsageFromResponse}},
		{"embeddings.json", Embeddings, 200, Response{
			Model: "text-embedding-3-small", Embeddings: 2,
			Usage: &Usage{InputTokens: 8, TotalTokens: 8}, UsageSource: UsageFromResponse}},
		{"error_400.json", ChatCompletions, 400, Response{UsageSource: UsageNone, Error: &APIError{
			Message: "Invalid type for 'messages[0].content': expected one of a string or array of objects, but got an integer instead.",
			Type:    "invalid_request_error", Param: "messages[0].content", Code: "invalid_type"}}},
		{"error_401.json", Responses, 401, Response{UsageSource: UsageNone, Error: &APIError{
			Message: "Incorrect API key provided: sk-proj-********************************************wxyz. You can find your API key at https://platform.openai.com/account/api-keys.",
			Type:    "invalid_request_error", Code: "invalid_api_key"}}},
		{"error_429.json", ChatCompletions, 429, Response{UsageSource: UsageNone, Error: &APIError{
			Message: "Rate limit reached for gpt-4o in organization org-abc123 on tokens per min (TPM): Limit 30000, Used 29950, Requested 1200. Please try again in 2.3s. Visit https://platform.openai.com/account/rate-limits to learn more.",
			Type:    "tokens", Code: "rate_limit_exceeded"}}},
		{"error_500.json", Embeddings, 500, Response{UsageSource: UsageNone, Error: &APIError{
			Message: "The server had an error while processing your request. Sorry about that!", Type: "server_error"}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := ParseResponse(tt.ep, tt.status, "application/json", fixture(t, "responses/"+tt.file))
			if err != nil {
				t.Fatal(err)
			}
			sameJSON(t, "response", got, tt.want)
		})
	}
}

func TestParseResponseErrors(t *testing.T) {
	tests := []struct {
		name   string
		status int
		ct     string
		body   string
		is     error
		want   Response
	}{
		{"HTML from a gateway", 502, "text/html", string(fixture(t, "responses/error_502.html")), ErrInvalidJSON,
			Response{UsageSource: UsageNone, Error: &APIError{Message: "HTTP 502 Bad Gateway: " +
				strings.TrimSpace(string(fixture(t, "responses/error_502.html")))}}},
		{"empty error", 503, "", "", ErrEmptyBody,
			Response{UsageSource: UsageNone, Error: &APIError{Message: "HTTP 503 Service Unavailable"}}},
		{"empty success", 200, "application/json", "", ErrEmptyBody, Response{UsageSource: UsageNone}},
		{"truncated chat", 200, "application/json",
			`{"id":"chatcmpl-1","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Half an ans`,
			ErrInvalidJSON, Response{ID: "chatcmpl-1", Model: "gpt-4o", UsageSource: UsageNone,
				Choices: []Choice{{Role: "assistant", Content: "Half an ans"}}}},
		{"long error body is bounded", 500, "text/plain", strings.Repeat("x", 2000), ErrInvalidJSON,
			Response{UsageSource: UsageNone, Error: &APIError{Message: "HTTP 500 Internal Server Error: " + strings.Repeat("x", maxErrorText) + "…"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseResponse(ChatCompletions, tt.status, tt.ct, []byte(tt.body))
			if !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			sameJSON(t, "response", got, tt.want)
		})
	}
}

func TestParseResponseSmall(t *testing.T) {
	tests := []struct {
		name   string
		ep     Endpoint
		status int
		body   string
		want   Response
	}{
		{"error without an error object", ChatCompletions, 404, `{"detail":"Not Found"}`,
			Response{UsageSource: UsageNone, Error: &APIError{Message: "HTTP 404 Not Found"}}},
		{"error as a string, numeric code", ChatCompletions, 400, `{"error":{"message":"bad","code":400}}`,
			Response{UsageSource: UsageNone, Error: &APIError{Message: "bad", Code: "400"}}},
		{"bare string error", ChatCompletions, 500, `{"error":"upstream failed"}`,
			Response{UsageSource: UsageNone, Error: &APIError{Message: "upstream failed"}}},
		{"failed response", Responses, 200, `{"id":"resp_1","object":"response","status":"failed","error":{"code":"server_error","message":"boom"},"output":[]}`,
			Response{ID: "resp_1", Status: "failed", UsageSource: UsageNone,
				Error:   &APIError{Code: "server_error", Message: "boom"},
				Choices: []Choice{{Role: "assistant", FinishReason: "failed"}}}},
		{"audio answer", ChatCompletions, 200, `{"choices":[{"index":0,"message":{"role":"assistant","content":null,"audio":{"id":"audio_1","data":"UklGRg==","transcript":"Hello there"}},"finish_reason":"stop"}]}`,
			Response{UsageSource: UsageNone, Choices: []Choice{{Role: "assistant", Content: "Hello there", FinishReason: "stop"}}}},
		{"other endpoint guesses embeddings", Other, 200, `{"object":"list","data":[{"embedding":[1,2]}],"model":"m"}`,
			Response{Model: "m", Embeddings: 1, UsageSource: UsageNone}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseResponse(tt.ep, tt.status, "application/json", []byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			sameJSON(t, "response", got, tt.want)
		})
	}
}
