package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
)

// envGoClient makes the test binary act as a workload using the official
// OpenAI Go SDK with its default base URL; its value is the mode.
const envGoClient = "PROMPTRAIL_E2E_GO_CLIENT"

// envPrompt and envFakeReply let a test choose the Go client's prompt and
// (through the fake upstream's X-Fake-Reply header) the reply.
const (
	envPrompt    = "PROMPTRAIL_E2E_PROMPT"
	envFakeReply = "PROMPTRAIL_E2E_FAKE_REPLY"
	// envFakeStall makes the fake upstream stall a stream after N events.
	envFakeStall = "PROMPTRAIL_E2E_FAKE_STALL"
	// envCount and envPace shape mode "many": that many chat requests,
	// each worker pausing envPace between its requests.
	envCount = "PROMPTRAIL_E2E_COUNT"
	envPace  = "PROMPTRAIL_E2E_PACE"
	// envModel is the model the Go client asks for (default gpt-4o-mini).
	envModel = "PROMPTRAIL_E2E_MODEL"
)

// clientResult is what every client (Go, Node, curl) reports.
type clientResult struct {
	PID   int            `json:"pid"`
	Mode  string         `json:"mode"`
	Text  string         `json:"text"`
	Usage map[string]any `json:"usage,omitempty"`
	Error string         `json:"error,omitempty"`
	// APIError is the Go SDK's API error: what the SDK gives a program
	// (its Error() says only the status).
	APIError *apiErrorResult `json:"api_error,omitempty"`
	// LatenciesMS are the durations of mode "many"'s requests.
	LatenciesMS []float64 `json:"latencies_ms,omitempty"`
}

// apiErrorResult is an API error as the Go SDK parsed it.
type apiErrorResult struct {
	Status  int    `json:"status"`
	Code    string `json:"code"`
	Type    string `json:"type"`
	Message string `json:"message"`
	// ApprovalID is the approval_id promptrail puts beside the code of a
	// held request's error, as the SDK keeps it (an extra field).
	ApprovalID string `json:"approval_id,omitempty"`
}

// goClientMain runs the Go SDK client if the environment asks for it.
func goClientMain() {
	mode := os.Getenv(envGoClient)
	if mode == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out := clientResult{PID: os.Getpid(), Mode: mode}
	if err := goClient(ctx, mode, &out); err != nil {
		out.Error = err.Error()
		if ae := (*openai.Error)(nil); errors.As(err, &ae) {
			out.APIError = &apiErrorResult{Status: ae.StatusCode, Code: ae.Code, Type: ae.Type, Message: ae.Message}
			json.Unmarshal([]byte(ae.JSON.ExtraFields["approval_id"].Raw()), &out.APIError.ApprovalID)
		}
	}
	json.NewEncoder(os.Stdout).Encode(out)
	os.Exit(0)
}

func goClient(ctx context.Context, mode string, out *clientResult) error {
	// Default base URL and transport: only SSL_CERT_FILE (the agent's CA)
	// and, in explicit mode, HTTPS_PROXY come from the environment.
	opts := []option.RequestOption{option.WithAPIKey("sk-test-not-a-real-key"), option.WithMaxRetries(0)}
	if reply := os.Getenv(envFakeReply); reply != "" {
		opts = append(opts, option.WithHeader("X-Fake-Reply", reply))
	}
	if stall := os.Getenv(envFakeStall); stall != "" {
		opts = append(opts, option.WithHeader("X-Fake-Stall", stall))
	}
	client := openai.NewClient(opts...)
	prompt := "Say hello from go"
	if p := os.Getenv(envPrompt); p != "" {
		prompt = p
	}
	chat := openai.ChatCompletionNewParams{
		Model:    openai.ChatModelGPT4oMini,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
	}
	if m := os.Getenv(envModel); m != "" {
		chat.Model = m
	}
	switch mode {
	case "many":
		return manyChats(ctx, client, prompt, out)
	case "chat":
		r, err := client.Chat.Completions.New(ctx, chat)
		if err != nil {
			return err
		}
		out.Text = r.Choices[0].Message.Content
		out.Usage = map[string]any{"total_tokens": r.Usage.TotalTokens}
	case "chat-stream":
		chat.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		s := client.Chat.Completions.NewStreaming(ctx, chat)
		for s.Next() {
			c := s.Current()
			if len(c.Choices) > 0 {
				out.Text += c.Choices[0].Delta.Content
			}
			if c.Usage.TotalTokens > 0 {
				out.Usage = map[string]any{"total_tokens": c.Usage.TotalTokens}
			}
		}
		return s.Err()
	case "responses":
		r, err := client.Responses.New(ctx, responses.ResponseNewParams{
			Model: openai.ChatModelGPT4oMini,
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Respond hello from go")},
		})
		if err != nil {
			return err
		}
		out.Text = r.OutputText()
		out.Usage = map[string]any{"total_tokens": r.Usage.TotalTokens}
	case "responses-stream":
		s := client.Responses.NewStreaming(ctx, responses.ResponseNewParams{
			Model: openai.ChatModelGPT4oMini,
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Stream a response from go")},
		})
		for s.Next() {
			ev := s.Current()
			if ev.Type == "response.output_text.delta" {
				out.Text += ev.Delta
			}
		}
		return s.Err()
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	return nil
}

// manyChats sends envCount chat requests from 4 workers, prompt "<prompt>
// #<i>", and reports how many succeeded in Text ("ok N failed M").
func manyChats(ctx context.Context, client openai.Client, prompt string, out *clientResult) error {
	n, err := strconv.Atoi(os.Getenv(envCount))
	if err != nil {
		return fmt.Errorf("%s: %w", envCount, err)
	}
	pace, _ := time.ParseDuration(os.Getenv(envPace))
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var mu sync.Mutex
	next := make(chan int)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				start := time.Now()
				_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
					Model:    openai.ChatModelGPT4oMini,
					Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(fmt.Sprintf("%s #%d", prompt, i))},
				})
				mu.Lock()
				out.LatenciesMS = append(out.LatenciesMS, float64(time.Since(start).Microseconds())/1000)
				mu.Unlock()
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				} else {
					ok.Add(1)
				}
				time.Sleep(pace)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	out.Text = fmt.Sprintf("ok %d failed %d", ok.Load(), failed.Load())
	if e, _ := firstErr.Load().(string); e != "" {
		out.Error = e
	}
	return nil
}
