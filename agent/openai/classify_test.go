package openai

import "testing"

func TestClassify(t *testing.T) {
	tests := []struct {
		method, path string
		want         Endpoint
	}{
		{"POST", "/v1/chat/completions", ChatCompletions},
		{"POST", "/v1/chat/completions/", ChatCompletions},
		{"POST", "/v1/chat/completions?api-version=2024-10-21", ChatCompletions},
		{"POST", "/openai/v1/chat/completions", ChatCompletions},
		{"POST", "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21", ChatCompletions},
		{"POST", "https://api.openai.com/v1/chat/completions", ChatCompletions},
		{"POST", "//v1//chat//completions//", ChatCompletions},
		{"POST", "/chat/completions", ChatCompletions},
		{"POST", "/v1/responses", Responses},
		{"POST", "/v1/responses?stream=true", Responses},
		{"POST", "/openai/v1/responses/", Responses},
		{"POST", "/v1/completions", Completions},
		{"POST", "/v1/completions#frag", Completions},
		{"POST", "/v1/embeddings", Embeddings},
		{"POST", "/base/path/v1/embeddings", Embeddings},
		{"GET", "/v1/chat/completions", Other},
		{"post", "/v1/chat/completions", Other},
		{"GET", "/v1/responses/resp_123", Other},
		{"POST", "/v1/responses/resp_123/cancel", Other},
		{"POST", "/v1/chat/completions/chatcmpl-123", Other},
		{"POST", "/v1/files", Other},
		{"POST", "/v1/audio/transcriptions", Other},
		{"POST", "/v1/models", Other},
		{"POST", "/", Other},
		{"POST", "", Other},
		{"POST", "/v1/chat/completionsx", Other},
		{"POST", "/v1/xchat/completions", Completions},
	}
	for _, tt := range tests {
		if got := Classify(tt.method, tt.path); got != tt.want {
			t.Errorf("Classify(%q, %q) = %q, want %q", tt.method, tt.path, got, tt.want)
		}
	}
}
