package fakeopenai

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// Shapes follow the OpenAI API reference for Chat Completions
// (POST /v1/chat/completions, the chat completion object and the chat
// completion chunk object) and for the legacy Completions API.

type chatRequest struct {
	Model         string          `json:"model"`
	Messages      []chatMessage   `json:"messages"`
	Stream        bool            `json:"stream"`
	StreamOptions *streamOptions  `json:"stream_options"`
	N             *int            `json:"n"`
	Tools         []chatTool      `json:"tools"`
	ToolChoice    json.RawMessage `json:"tool_choice"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type chatTool struct {
	Type     string `json:"type"`
	Function struct {
		Name       string          `json:"name"`
		Parameters json.RawMessage `json:"parameters"`
	} `json:"function"`
}

// toolSpec is a function tool offered by a request.
type toolSpec struct {
	name   string
	params json.RawMessage
}

// toolCall is the call the fake answers with.
type toolCall struct {
	id, name, args string
}

// pickTool decides whether to answer with a tool call: when X-Fake-Tool-Call
// names one; else, with tools offered and tool_choice not "none", when the
// last message is not a tool result and either tool_choice forces a tool
// ("required" or a named function) or the last message mentions a tool's name.
func pickTool(header string, tools []toolSpec, choice json.RawMessage, lastIsResult bool, lastText string) *toolCall {
	call := func(t toolSpec) *toolCall {
		return &toolCall{id: randID("call_", 24), name: t.name, args: fakeArguments(t.params)}
	}
	find := func(name string) toolSpec {
		for _, t := range tools {
			if t.name == name {
				return t
			}
		}
		return toolSpec{name: name}
	}
	if header != "" {
		return call(find(header))
	}
	if len(tools) == 0 || lastIsResult {
		return nil
	}
	var mode string
	var named struct {
		Name     string `json:"name"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if json.Unmarshal(choice, &mode) != nil && json.Unmarshal(choice, &named) == nil {
		if n := named.Function.Name + named.Name; n != "" {
			return call(find(n))
		}
	}
	switch mode {
	case "none":
		return nil
	case "required":
		return call(tools[0])
	}
	lower := strings.ToLower(lastText)
	for _, t := range tools {
		if t.name != "" && strings.Contains(lower, strings.ToLower(t.name)) {
			return call(t)
		}
	}
	return nil
}

// fakeArguments builds deterministic JSON arguments from a JSON Schema
// "parameters" object: each property gets a value of its type.
func fakeArguments(params json.RawMessage) string {
	var schema struct {
		Properties map[string]struct {
			Type any   `json:"type"`
			Enum []any `json:"enum"`
		} `json:"properties"`
	}
	_ = json.Unmarshal(params, &schema)
	args := map[string]any{}
	for name, p := range schema.Properties {
		if len(p.Enum) > 0 {
			args[name] = p.Enum[0]
			continue
		}
		typ, _ := p.Type.(string)
		if types, ok := p.Type.([]any); ok && len(types) > 0 {
			typ, _ = types[0].(string)
		}
		switch typ {
		case "integer", "number":
			args[name] = 1
		case "boolean":
			args[name] = true
		case "array":
			args[name] = []any{}
		case "object":
			args[name] = map[string]any{}
		case "null":
			args[name] = nil
		default:
			args[name] = "fake " + name
		}
	}
	b, _ := marshal(args)
	return string(b)
}

func chatUsage(prompt, completion int) obj {
	return obj{
		{"prompt_tokens", prompt},
		{"completion_tokens", completion},
		{"total_tokens", prompt + completion},
		{"prompt_tokens_details", obj{{"cached_tokens", 0}, {"audio_tokens", 0}}},
		{"completion_tokens_details", obj{
			{"reasoning_tokens", 0}, {"audio_tokens", 0},
			{"accepted_prediction_tokens", 0}, {"rejected_prediction_tokens", 0},
		}},
	}
}

// choiceCount validates the request's "n" (1 to 128, as the API allows).
func choiceCount(n *int) (int, *apiError) {
	if n == nil {
		return 1, nil
	}
	if *n < 1 || *n > 128 {
		return 0, invalidParam("n", "Invalid 'n': integer must be between 1 and 128, got "+strconv.Itoa(*n)+".")
	}
	return *n, nil
}

func (s *Server) chatCompletions(x *exchange) {
	var req chatRequest
	if !x.decode(&req) {
		return
	}
	n, bad := choiceCount(req.N)
	switch {
	case req.Model == "":
		bad = missingParam("model")
	case len(req.Messages) == 0:
		bad = missingParam("messages")
	}
	if bad != nil {
		writeError(x.w, bad)
		return
	}
	var prompt []string
	for _, m := range req.Messages {
		prompt = append(prompt, contentText(m.Content))
	}
	var tools []toolSpec
	for _, t := range req.Tools {
		tools = append(tools, toolSpec{t.Function.Name, t.Function.Parameters})
	}
	last := req.Messages[len(req.Messages)-1]
	call := pickTool(x.o.toolCall, tools, req.ToolChoice, last.Role == "tool" || last.Role == "function", prompt[len(prompt)-1])

	reply, finish := x.o.reply, "stop"
	perChoice := countTokens(reply)
	if call != nil {
		finish, perChoice = "tool_calls", len(call.args)/4+1
	}
	usage := chatUsage(max(1, countTokens(prompt...)), n*perChoice)
	id, created := randID("chatcmpl-", 29), time.Now().Unix()
	head := obj{{"id", id}, {"object", "chat.completion"}, {"created", created}, {"model", req.Model}}

	if !req.Stream {
		choices := make([]obj, n)
		for i := range choices {
			msg := obj{{"role", "assistant"}, {"content", reply}, {"refusal", nil}, {"annotations", []any{}}}
			if call != nil {
				msg = msg.set("content", nil).set("tool_calls", []obj{{
					{"id", call.id}, {"type", "function"},
					{"function", obj{{"name", call.name}, {"arguments", call.args}}},
				}})
			}
			choices[i] = obj{{"index", i}, {"message", msg}, {"logprobs", nil}, {"finish_reason", finish}}
		}
		x.writeJSON(append(head, kv{"choices", choices}, kv{"usage", usage},
			kv{"service_tier", "default"}, kv{"system_fingerprint", "fp_fake"}))
		return
	}

	includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	head = head.set("object", "chat.completion.chunk")
	chunk := func(choices []obj) obj {
		c := append(obj{}, head...)
		c = append(c, kv{"service_tier", "default"}, kv{"system_fingerprint", "fp_fake"}, kv{"choices", choices})
		if includeUsage {
			c = append(c, kv{"usage", nil})
		}
		return c
	}
	choice := func(i int, delta obj, finish any) []obj {
		return []obj{{{"index", i}, {"delta", delta}, {"logprobs", nil}, {"finish_reason", finish}}}
	}
	e := x.startSSE()
	// One chunk per choice and step, as the API interleaves choices.
	for i := range n {
		first := obj{{"role", "assistant"}, {"content", ""}, {"refusal", nil}}
		if call != nil {
			first = first.set("content", nil).set("tool_calls", []obj{{
				{"index", 0}, {"id", call.id}, {"type", "function"},
				{"function", obj{{"name", call.name}, {"arguments", ""}}},
			}})
		}
		if !e.send("", chunk(choice(i, first, nil))) {
			return
		}
	}
	text := reply
	if call != nil {
		text = call.args
	}
	for _, piece := range chunks(text, x.o.chunkSize) {
		for i := range n {
			delta := obj{{"content", piece}}
			if call != nil {
				delta = obj{{"tool_calls", []obj{{{"index", 0}, {"function", obj{{"arguments", piece}}}}}}}
			}
			if !e.send("", chunk(choice(i, delta, nil))) {
				return
			}
		}
	}
	for i := range n {
		if !e.send("", chunk(choice(i, obj{}, finish))) {
			return
		}
	}
	if includeUsage && !x.o.noUsage {
		c := chunk([]obj{})
		if !e.send("", c.set("usage", usage)) {
			return
		}
	}
	e.send("", "[DONE]")
}

type completionRequest struct {
	Model         string          `json:"model"`
	Prompt        json.RawMessage `json:"prompt"`
	Stream        bool            `json:"stream"`
	StreamOptions *streamOptions  `json:"stream_options"`
	N             *int            `json:"n"`
}

// inputTexts reads a prompt or embeddings input: a string, an array of
// strings, an array of token ids or an array of such arrays. Token ids become
// space-separated numbers, so that each id counts as one token.
func inputTexts(raw json.RawMessage) ([]string, bool) {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}, true
	}
	var many []string
	if json.Unmarshal(raw, &many) == nil {
		return many, true
	}
	ids := func(v []int64) string {
		parts := make([]string, len(v))
		for i, id := range v {
			parts[i] = strconv.FormatInt(id, 10)
		}
		return strings.Join(parts, " ")
	}
	var tokens []int64
	if json.Unmarshal(raw, &tokens) == nil {
		return []string{ids(tokens)}, true
	}
	var lists [][]int64
	if json.Unmarshal(raw, &lists) == nil {
		out := make([]string, len(lists))
		for i, l := range lists {
			out[i] = ids(l)
		}
		return out, true
	}
	return nil, false
}

func (s *Server) completions(x *exchange) {
	var req completionRequest
	if !x.decode(&req) {
		return
	}
	n, bad := choiceCount(req.N)
	prompts, ok := inputTexts(req.Prompt)
	switch {
	case req.Model == "":
		bad = missingParam("model")
	case len(req.Prompt) == 0 || string(req.Prompt) == "null":
		bad = missingParam("prompt")
	case !ok:
		bad = invalidParam("prompt", "Invalid 'prompt': expected a string, an array of strings or token arrays.")
	}
	if bad != nil {
		writeError(x.w, bad)
		return
	}
	n *= max(1, len(prompts))
	reply := x.o.reply
	usage := obj{
		{"prompt_tokens", max(1, countTokens(prompts...))},
		{"completion_tokens", n * countTokens(reply)},
	}
	usage = append(usage, kv{"total_tokens", usage[0].v.(int) + usage[1].v.(int)})
	head := obj{{"id", randID("cmpl-", 29)}, {"object", "text_completion"}, {"created", time.Now().Unix()},
		{"model", req.Model}, {"system_fingerprint", "fp_fake"}}
	choice := func(i int, text string, finish any) obj {
		return obj{{"text", text}, {"index", i}, {"logprobs", nil}, {"finish_reason", finish}}
	}
	if !req.Stream {
		choices := make([]obj, n)
		for i := range choices {
			choices[i] = choice(i, reply, "stop")
		}
		x.writeJSON(append(head, kv{"choices", choices}, kv{"usage", usage}))
		return
	}
	includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	chunk := func(choices []obj) obj {
		c := append(append(obj{}, head...), kv{"choices", choices})
		if includeUsage {
			c = append(c, kv{"usage", nil})
		}
		return c
	}
	e := x.startSSE()
	for _, piece := range chunks(reply, x.o.chunkSize) {
		for i := range n {
			if !e.send("", chunk([]obj{choice(i, piece, nil)})) {
				return
			}
		}
	}
	for i := range n {
		if !e.send("", chunk([]obj{choice(i, "", "stop")})) {
			return
		}
	}
	if includeUsage && !x.o.noUsage {
		if !e.send("", chunk([]obj{}).set("usage", usage)) {
			return
		}
	}
	e.send("", "[DONE]")
}
