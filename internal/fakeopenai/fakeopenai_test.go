package fakeopenai_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/param"
	"github.com/openai/openai-go/v3/responses"

	"github.com/promptrail/promptrail/internal/fakeopenai"
)

// newClient starts a fake over TLS and returns an official SDK client for it
// that trusts the fake's CA and never retries.
func newClient(t *testing.T, cfg fakeopenai.Config, opts ...option.RequestOption) (*fakeopenai.TLSServer, openai.Client) {
	t.Helper()
	ts := fakeopenai.NewTLSServer(t, cfg, "")
	opts = append([]option.RequestOption{
		option.WithBaseURL(ts.BaseURL),
		option.WithHTTPClient(ts.Client()),
		option.WithAPIKey("sk-test"),
		option.WithMaxRetries(0),
	}, opts...)
	return ts, openai.NewClient(opts...)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var weatherParams = map[string]any{
	"type": "object",
	"properties": map[string]any{
		"location": map[string]any{"type": "string"},
		"unit":     map[string]any{"type": "string", "enum": []any{"celsius", "fahrenheit"}},
	},
	"required": []any{"location", "unit"},
}

func TestChatCompletion(t *testing.T) {
	ts, client := newClient(t, fakeopenai.Config{})
	tests := []struct {
		name, setReply, header, want string
		n                            int64
	}{
		{name: "default", want: fakeopenai.DefaultReply},
		{name: "SetReply", setReply: "chosen by the test", want: "chosen by the test"},
		{name: "header", setReply: "not this", header: "from a header", want: "from a header"},
		{name: "n=3", want: fakeopenai.DefaultReply, n: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts.SetReply(tc.setReply)
			ts.Reset()
			var opts []option.RequestOption
			if tc.header != "" {
				opts = append(opts, option.WithHeader("X-Fake-Reply", tc.header))
			}
			params := openai.ChatCompletionNewParams{
				Model:    "gpt-4o-mini",
				Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("be brief"), openai.UserMessage("say hello now")},
			}
			if tc.n > 0 {
				params.N = param.NewOpt(tc.n)
			}
			res, err := client.Chat.Completions.New(ctxT(t), params, opts...)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(res.ID, "chatcmpl-") || res.Model != "gpt-4o-mini" || res.Object != "chat.completion" {
				t.Errorf("id %q model %q object %q", res.ID, res.Model, res.Object)
			}
			if want := max(tc.n, 1); int64(len(res.Choices)) != want {
				t.Fatalf("%d choices, want %d", len(res.Choices), want)
			}
			for i, c := range res.Choices {
				if c.Message.Content != tc.want || c.FinishReason != "stop" || c.Index != int64(i) {
					t.Errorf("choice %d: %q %q %d", i, c.Message.Content, c.FinishReason, c.Index)
				}
			}
			words := int64(len(strings.Fields(tc.want)))
			if u := res.Usage; u.PromptTokens != 5 || u.CompletionTokens != words*max(tc.n, 1) || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
				t.Errorf("usage %+v", u)
			}
			reqs := ts.Requests()
			if len(reqs) != 1 || reqs[0].Path != "/v1/chat/completions" || reqs[0].Proto != "HTTP/2.0" ||
				reqs[0].Header.Get("Authorization") != "Bearer sk-test" || !strings.Contains(string(reqs[0].Body), "say hello now") {
				t.Errorf("recorded %+v", reqs)
			}
		})
	}
}

func TestChatStream(t *testing.T) {
	ts, client := newClient(t, fakeopenai.Config{Reply: "One two three four five six seven."})
	tests := []struct {
		name         string
		includeUsage bool
		headers      map[string]string
		want         string
		wantUsage    bool
	}{
		{name: "plain", want: "One two three four five six seven."},
		{name: "include_usage", includeUsage: true, want: "One two three four five six seven.", wantUsage: true},
		{name: "no-usage header", includeUsage: true, headers: map[string]string{"X-Fake-No-Usage": "1"}, want: "One two three four five six seven."},
		{name: "utf-8 by rune", headers: map[string]string{
			"X-Fake-Reply-Base64": base64.StdEncoding.EncodeToString([]byte("héllo wörld ✓ 🙂")),
			"X-Fake-Chunk-Size":   "1", "X-Fake-Event-Delay": "1ms",
		}, want: "héllo wörld ✓ 🙂"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var opts []option.RequestOption
			for k, v := range tc.headers {
				opts = append(opts, option.WithHeader(k, v))
			}
			params := openai.ChatCompletionNewParams{
				Model:    "gpt-4o",
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("stream please")},
			}
			if tc.includeUsage {
				params.StreamOptions.IncludeUsage = openai.Bool(true)
			}
			stream := client.Chat.Completions.NewStreaming(ctxT(t), params, opts...)
			var acc openai.ChatCompletionAccumulator
			chunks, usageChunks := 0, 0
			var finished string
			for stream.Next() {
				chunk := stream.Current()
				if !acc.AddChunk(chunk) {
					t.Fatalf("accumulator rejected chunk %s", chunk.RawJSON())
				}
				if chunk.JSON.Usage.Valid() {
					usageChunks++
				}
				if c, ok := acc.JustFinishedContent(); ok {
					finished = c
				}
				chunks++
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			if got := acc.Choices[0].Message.Content; got != tc.want || finished != tc.want {
				t.Errorf("content %q (finished %q), want %q", got, finished, tc.want)
			}
			if acc.Choices[0].FinishReason != "stop" || acc.Model != "gpt-4o" {
				t.Errorf("finish %q model %q", acc.Choices[0].FinishReason, acc.Model)
			}
			if least := len([]rune(tc.want))/5 + 2; chunks < least {
				t.Errorf("%d chunks, want at least %d", chunks, least)
			}
			hasUsage := acc.Usage.TotalTokens > 0
			if hasUsage != tc.wantUsage || (tc.wantUsage && usageChunks != 1) {
				t.Errorf("usage %+v in %d chunks, want usage %v", acc.Usage, usageChunks, tc.wantUsage)
			}
			if tc.wantUsage && acc.Usage.CompletionTokens != int64(len(strings.Fields(tc.want))) {
				t.Errorf("completion tokens %d", acc.Usage.CompletionTokens)
			}
			if got := ts.Requests(); got[len(got)-1].Proto != "HTTP/2.0" {
				t.Errorf("proto %q", got[len(got)-1].Proto)
			}
		})
	}
}

func TestChatToolCall(t *testing.T) {
	_, client := newClient(t, fakeopenai.Config{})
	params := openai.ChatCompletionNewParams{
		Model:    "gpt-4o",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("What does get_weather say for Paris?")},
		Tools: []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{
			Name: "get_weather", Parameters: weatherParams,
		})},
	}
	checkArgs := func(t *testing.T, args string) {
		var got map[string]any
		if err := json.Unmarshal([]byte(args), &got); err != nil || got["unit"] != "celsius" || got["location"] == nil {
			t.Errorf("arguments %q: %v", args, err)
		}
	}
	t.Run("json", func(t *testing.T) {
		res, err := client.Chat.Completions.New(ctxT(t), params)
		if err != nil {
			t.Fatal(err)
		}
		c := res.Choices[0]
		if c.FinishReason != "tool_calls" || len(c.Message.ToolCalls) != 1 {
			t.Fatalf("choice %s", c.RawJSON())
		}
		fn := c.Message.ToolCalls[0].AsFunction()
		if fn.Function.Name != "get_weather" || !strings.HasPrefix(fn.ID, "call_") {
			t.Errorf("tool call %+v", fn)
		}
		checkArgs(t, fn.Function.Arguments)

		// The tool's answer ends the loop with text.
		params := params
		params.Messages = append(params.Messages, c.Message.ToParam(), openai.ToolMessage(`{"temp":20}`, fn.ID))
		res, err = client.Chat.Completions.New(ctxT(t), params)
		if err != nil || res.Choices[0].Message.Content != fakeopenai.DefaultReply {
			t.Fatalf("after tool result: %v %v", err, res)
		}
	})
	t.Run("stream", func(t *testing.T) {
		stream := client.Chat.Completions.NewStreaming(ctxT(t), params)
		var acc openai.ChatCompletionAccumulator
		argDeltas := 0
		var done openai.FinishedChatCompletionToolCall
		for stream.Next() {
			chunk := stream.Current()
			if !acc.AddChunk(chunk) {
				t.Fatalf("rejected %s", chunk.RawJSON())
			}
			if len(chunk.Choices) > 0 && len(chunk.Choices[0].Delta.ToolCalls) > 0 && chunk.Choices[0].Delta.ToolCalls[0].Function.Arguments != "" {
				argDeltas++
			}
			if tc, ok := acc.JustFinishedToolCall(); ok {
				done = tc
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if argDeltas < 2 || done.Name != "get_weather" || acc.Choices[0].FinishReason != "tool_calls" {
			t.Errorf("%d argument deltas, finished %+v, finish %q", argDeltas, done, acc.Choices[0].FinishReason)
		}
		checkArgs(t, done.Arguments)
	})
	t.Run("header", func(t *testing.T) {
		params := openai.ChatCompletionNewParams{Model: "gpt-4o", Messages: params.Messages}
		res, err := client.Chat.Completions.New(ctxT(t), params, option.WithHeader("X-Fake-Tool-Call", "lookup"))
		if err != nil {
			t.Fatal(err)
		}
		if fn := res.Choices[0].Message.ToolCalls[0].AsFunction(); fn.Function.Name != "lookup" || fn.Function.Arguments != "{}" {
			t.Errorf("tool call %+v", fn)
		}
	})
}

func TestResponses(t *testing.T) {
	_, client := newClient(t, fakeopenai.Config{Reply: "A responses reply."})
	inputs := map[string]responses.ResponseNewParamsInputUnion{
		"string": {OfString: openai.String("hi there")},
		"messages": {OfInputItemList: responses.ResponseInputParam{
			responses.ResponseInputItemParamOfMessage("hi", responses.EasyInputMessageRoleUser),
			responses.ResponseInputItemParamOfMessage("there", responses.EasyInputMessageRoleUser),
		}},
	}
	for name, input := range inputs {
		t.Run(name, func(t *testing.T) {
			res, err := client.Responses.New(ctxT(t), responses.ResponseNewParams{
				Model: "gpt-4.1", Input: input, Instructions: openai.String("be nice"),
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.OutputText() != "A responses reply." || res.Status != "completed" || !strings.HasPrefix(res.ID, "resp_") ||
				res.Model != "gpt-4.1" || res.Instructions.OfString != "be nice" {
				t.Errorf("response %s", res.RawJSON())
			}
			if u := res.Usage; u.InputTokens != 4 || u.OutputTokens != 3 || u.TotalTokens != 7 || !u.JSON.InputTokensDetails.Valid() {
				t.Errorf("usage %+v", u)
			}
		})
	}
}

// readResponseStream drains a Responses stream, checking sequence numbers
// and feeding every event to the SDK's strict ResponseAccumulator.
func readResponseStream(t *testing.T, stream interface {
	Next() bool
	Current() responses.ResponseStreamEventUnion
	Err() error
}) (types []string, deltas string, final responses.Response, acc *responses.ResponseAccumulator) {
	t.Helper()
	acc = &responses.ResponseAccumulator{}
	for stream.Next() {
		ev := stream.Current()
		if ev.SequenceNumber != int64(len(types)) {
			t.Errorf("event %q has sequence_number %d, want %d", ev.Type, ev.SequenceNumber, len(types))
		}
		types = append(types, ev.Type)
		var server responses.ResponsesServerEventUnion
		if err := json.Unmarshal([]byte(ev.RawJSON()), &server); err != nil {
			t.Fatal(err)
		}
		if err := acc.AddEvent(server); err != nil {
			t.Fatalf("accumulator: %v on %s", err, ev.RawJSON())
		}
		switch ev.Type {
		case "response.output_text.delta", "response.function_call_arguments.delta":
			deltas += ev.Delta
		case "response.completed":
			final = ev.AsResponseCompleted().Response
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	return types, deltas, final, acc
}

func TestResponsesStream(t *testing.T) {
	const reply = "Streaming through the Responses API works."
	_, client := newClient(t, fakeopenai.Config{Reply: reply, ChunkSize: 7})
	stream := client.Responses.NewStreaming(ctxT(t), responses.ResponseNewParams{
		Model: "gpt-4.1-mini", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("go")},
	})
	types, deltas, final, acc := readResponseStream(t, stream)
	want := []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"}
	for range (len(reply) + 6) / 7 {
		want = append(want, "response.output_text.delta")
	}
	want = append(want, "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed")
	if strings.Join(types, ",") != strings.Join(want, ",") {
		t.Errorf("events\n%v\nwant\n%v", types, want)
	}
	if deltas != reply || final.OutputText() != reply || final.Status != "completed" || final.Usage.TotalTokens == 0 {
		t.Errorf("deltas %q, final %s", deltas, final.RawJSON())
	}
	if snap := acc.Snapshot(); snap.TerminalEvent != "response.completed" || snap.OutputText() != reply {
		t.Errorf("accumulator snapshot %+v", snap)
	}
}

func TestResponsesToolCall(t *testing.T) {
	_, client := newClient(t, fakeopenai.Config{})
	params := responses.ResponseNewParams{
		Model: "gpt-4.1",
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("call get_weather for Oslo")},
		Tools: []responses.ToolUnionParam{responses.ToolParamOfFunction("get_weather", weatherParams, true)},
	}
	res, err := client.Responses.New(ctxT(t), params)
	if err != nil {
		t.Fatal(err)
	}
	fc := res.Output[0].AsFunctionCall()
	if res.Output[0].Type != "function_call" || fc.Name != "get_weather" || !strings.Contains(fc.Arguments, `"unit":"celsius"`) {
		t.Fatalf("output %s", res.RawJSON())
	}
	types, deltas, final, _ := readResponseStream(t, client.Responses.NewStreaming(ctxT(t), params))
	if deltas != fc.Arguments || final.Output[0].AsFunctionCall().Arguments != fc.Arguments || !strings.Contains(strings.Join(types, ","), "response.function_call_arguments.done") {
		t.Errorf("stream %v deltas %q", types, deltas)
	}
}

func TestLegacyCompletions(t *testing.T) {
	_, client := newClient(t, fakeopenai.Config{Reply: "legacy text here"})
	params := openai.CompletionNewParams{
		Model:  "gpt-3.5-turbo-instruct",
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Say this is a test")},
	}
	res, err := client.Completions.New(ctxT(t), params)
	if err != nil || res.Choices[0].Text != "legacy text here" || res.Usage.PromptTokens != 5 || res.Object != "text_completion" {
		t.Fatalf("%v %s", err, res.RawJSON())
	}
	params.StreamOptions.IncludeUsage = openai.Bool(true)
	stream := client.Completions.NewStreaming(ctxT(t), params)
	var text string
	var usage int64
	for stream.Next() {
		c := stream.Current()
		if len(c.Choices) > 0 {
			text += c.Choices[0].Text
		}
		usage += c.Usage.TotalTokens
	}
	if stream.Err() != nil || text != "legacy text here" || usage != 8 {
		t.Errorf("stream: %v %q usage %d", stream.Err(), text, usage)
	}
}

func TestEmbeddings(t *testing.T) {
	_, client := newClient(t, fakeopenai.Config{})
	for _, format := range []openai.EmbeddingNewParamsEncodingFormat{"", "float", "base64"} {
		t.Run(string(format)+"_", func(t *testing.T) {
			res, err := client.Embeddings.New(ctxT(t), openai.EmbeddingNewParams{
				Model:          "text-embedding-3-small",
				Input:          openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"first text", "second"}},
				EncodingFormat: format,
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Data) != 2 || res.Usage.PromptTokens != 3 || res.Model != "text-embedding-3-small" {
				t.Fatalf("%s", res.RawJSON())
			}
			for i, text := range []string{"first text", "second"} {
				want := fakeopenai.Vector(text, 8)
				got := res.Data[i].Embedding
				if len(got) != len(want) || res.Data[i].Index != int64(i) {
					t.Fatalf("embedding %d: %v", i, got)
				}
				for j := range want {
					if math.Abs(got[j]-float64(want[j])) > 1e-6 {
						t.Errorf("embedding %d[%d] = %v, want %v", i, j, got[j], want[j])
					}
				}
			}
		})
	}
	res, err := client.Embeddings.New(ctxT(t), openai.EmbeddingNewParams{
		Model: "text-embedding-3-large", Dimensions: openai.Int(3),
		Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("x")},
	})
	if err != nil || len(res.Data[0].Embedding) != 3 {
		t.Errorf("dimensions: %v %v", err, res)
	}
}

func TestModels(t *testing.T) {
	_, client := newClient(t, fakeopenai.Config{Models: []string{"m1", "m2"}})
	page, err := client.Models.List(ctxT(t))
	if err != nil || len(page.Data) != 2 || page.Data[1].ID != "m2" || page.Data[0].Object != "model" {
		t.Fatalf("%v %+v", err, page)
	}
	if m, err := client.Models.Get(ctxT(t), "m1"); err != nil || m.ID != "m1" {
		t.Errorf("get: %v %v", err, m)
	}
	_, err = client.Models.Get(ctxT(t), "nope")
	if apiErr := (*openai.Error)(nil); !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" {
		t.Errorf("missing model: %v", err)
	}
}
