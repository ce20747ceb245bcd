package fakeopenai

import (
	"encoding/json"
	"time"
)

// Shapes follow the OpenAI API reference for the Responses API
// (POST /v1/responses, the response object, and its streaming events).

type responsesRequest struct {
	Model              string          `json:"model"`
	Input              json.RawMessage `json:"input"`
	Instructions       json.RawMessage `json:"instructions"`
	Stream             bool            `json:"stream"`
	Tools              json.RawMessage `json:"tools"`
	ToolChoice         json.RawMessage `json:"tool_choice"`
	Temperature        json.RawMessage `json:"temperature"`
	TopP               json.RawMessage `json:"top_p"`
	MaxOutputTokens    json.RawMessage `json:"max_output_tokens"`
	Metadata           json.RawMessage `json:"metadata"`
	PreviousResponseID json.RawMessage `json:"previous_response_id"`
	ParallelToolCalls  json.RawMessage `json:"parallel_tool_calls"`
	Store              json.RawMessage `json:"store"`
	Text               json.RawMessage `json:"text"`
	Reasoning          json.RawMessage `json:"reasoning"`
	User               json.RawMessage `json:"user"`
}

// inputItem is one element of an "input" list: a message (with or without
// "type":"message"), a function_call_output, or another item kind.
type inputItem struct {
	Type    string          `json:"type"`
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
	Output  json.RawMessage `json:"output"`
}

// echo is the request's raw value for a field, or def when it was not sent.
func echo(raw json.RawMessage, def any) any {
	if len(raw) == 0 || string(raw) == "null" {
		return def
	}
	return raw
}

func responseUsage(in, out int) obj {
	return obj{
		{"input_tokens", in},
		{"input_tokens_details", obj{{"cached_tokens", 0}}},
		{"output_tokens", out},
		{"output_tokens_details", obj{{"reasoning_tokens", 0}}},
		{"total_tokens", in + out},
	}
}

// responseObject is a "response" object in the given status.
func responseObject(rq *responsesRequest, id string, created int64, status string, output []obj, usage any) obj {
	o := obj{
		{"id", id}, {"object", "response"}, {"created_at", created}, {"status", status},
		{"background", false}, {"error", nil}, {"incomplete_details", nil},
		{"instructions", echo(rq.Instructions, nil)},
		{"max_output_tokens", echo(rq.MaxOutputTokens, nil)}, {"max_tool_calls", nil},
		{"model", rq.Model}, {"output", output},
		{"parallel_tool_calls", echo(rq.ParallelToolCalls, true)},
		{"previous_response_id", echo(rq.PreviousResponseID, nil)},
		{"prompt_cache_key", nil},
		{"reasoning", echo(rq.Reasoning, obj{{"effort", nil}, {"summary", nil}})},
		{"safety_identifier", nil}, {"service_tier", "default"},
		{"store", echo(rq.Store, true)},
		{"temperature", echo(rq.Temperature, 1.0)},
		{"text", echo(rq.Text, obj{{"format", obj{{"type", "text"}}}, {"verbosity", "medium"}})},
		{"tool_choice", echo(rq.ToolChoice, "auto")},
		{"tools", echo(rq.Tools, []any{})},
		{"top_logprobs", 0}, {"top_p", echo(rq.TopP, 1.0)}, {"truncation", "disabled"},
		{"usage", usage}, {"user", echo(rq.User, nil)},
		{"metadata", echo(rq.Metadata, obj{})},
	}
	if status == "completed" {
		o = append(o, kv{"completed_at", time.Now().Unix()})
	}
	return o
}

func outputText(text string) obj {
	return obj{{"type", "output_text"}, {"annotations", []any{}}, {"logprobs", []any{}}, {"text", text}}
}

func messageItem(id, status string, content []obj) obj {
	return obj{{"id", id}, {"type", "message"}, {"status", status}, {"content", content}, {"role", "assistant"}}
}

func functionCallItem(id, status string, c *toolCall, args string) obj {
	return obj{{"id", id}, {"type", "function_call"}, {"status", status},
		{"arguments", args}, {"call_id", c.id}, {"name", c.name}}
}

func (s *Server) responses(x *exchange) {
	var rq responsesRequest
	if !x.decode(&rq) {
		return
	}
	var texts []string
	var last inputItem
	var str string
	switch {
	case rq.Model == "":
		writeError(x.w, missingParam("model"))
		return
	case json.Unmarshal(rq.Input, &str) == nil:
		texts = append(texts, str)
		last = inputItem{Role: "user"}
	default:
		var items []inputItem
		if err := json.Unmarshal(rq.Input, &items); err != nil || len(items) == 0 {
			writeError(x.w, invalidParam("input", "Invalid 'input': expected a string or a non-empty array of input items."))
			return
		}
		for _, it := range items {
			texts = append(texts, contentText(it.Content)+contentText(it.Output))
		}
		last = items[len(items)-1]
	}
	var tools []toolSpec
	var decl []struct {
		Type       string          `json:"type"`
		Name       string          `json:"name"`
		Parameters json.RawMessage `json:"parameters"`
	}
	_ = json.Unmarshal(rq.Tools, &decl)
	for _, t := range decl {
		if t.Type == "function" {
			tools = append(tools, toolSpec{t.Name, t.Parameters})
		}
	}
	call := pickTool(x.o.toolCall, tools, rq.ToolChoice, last.Type == "function_call_output", texts[len(texts)-1])

	reply := x.o.reply
	outTokens := countTokens(reply)
	itemID := randID("msg_", 48)
	final := messageItem(itemID, "completed", []obj{outputText(reply)})
	if call != nil {
		itemID = randID("fc_", 48)
		outTokens = len(call.args)/4 + 1
		final = functionCallItem(itemID, "completed", call, call.args)
	}
	var usage any = responseUsage(max(1, countTokens(append(texts, contentText(rq.Instructions))...)), outTokens)
	if x.o.noUsage {
		usage = nil
	}
	id, created := randID("resp_", 48), time.Now().Unix()

	if !rq.Stream {
		x.writeJSON(responseObject(&rq, id, created, "completed", []obj{final}, usage))
		return
	}

	e := x.startSSE()
	seq := 0
	event := func(typ string, fields ...kv) (string, obj) {
		o := append(obj{{"type", typ}}, fields...)
		o = append(o, kv{"sequence_number", seq})
		seq++
		return typ, o
	}
	send := func(typ string, fields ...kv) bool { return e.send(event(typ, fields...)) }
	e.fail = func() (string, any) {
		// It replaces the event being sent, which already took its number.
		seq--
		f := streamError()
		return event("error", kv{"code", f.typ}, kv{"message", f.message}, kv{"param", nil})
	}
	inProgress := responseObject(&rq, id, created, "in_progress", []obj{}, nil)
	if !send("response.created", kv{"response", inProgress}) ||
		!send("response.in_progress", kv{"response", inProgress}) {
		return
	}
	at := []kv{{"item_id", itemID}, {"output_index", 0}}
	if call != nil {
		if !send("response.output_item.added", kv{"output_index", 0},
			kv{"item", functionCallItem(itemID, "in_progress", call, "")}) {
			return
		}
		for _, piece := range chunks(call.args, x.o.chunkSize) {
			if !send("response.function_call_arguments.delta", append(at, kv{"delta", piece})...) {
				return
			}
		}
		if !send("response.function_call_arguments.done", append(at, kv{"name", call.name}, kv{"arguments", call.args})...) {
			return
		}
	} else {
		at = append(at, kv{"content_index", 0})
		if !send("response.output_item.added", kv{"output_index", 0},
			kv{"item", messageItem(itemID, "in_progress", []obj{})}) ||
			!send("response.content_part.added", append(at, kv{"part", outputText("")})...) {
			return
		}
		for _, piece := range chunks(reply, x.o.chunkSize) {
			if !send("response.output_text.delta", append(at, kv{"delta", piece}, kv{"logprobs", []any{}})...) {
				return
			}
		}
		if !send("response.output_text.done", append(at, kv{"text", reply}, kv{"logprobs", []any{}})...) ||
			!send("response.content_part.done", append(at, kv{"part", outputText(reply)})...) {
			return
		}
	}
	if !send("response.output_item.done", kv{"output_index", 0}, kv{"item", final}) {
		return
	}
	send("response.completed", kv{"response", responseObject(&rq, id, created, "completed", []obj{final}, usage)})
}
