package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Message is one message of a conversation, as text.
type Message struct {
	Role string `json:"role"`
	// Content is the message's text: array content parts joined by
	// newlines, images as "[image]" or "[image: URL]" (never a data: URL's
	// base64), audio as "[audio]", files as "[file: NAME]".
	Content    string     `json:"content,omitempty"`
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
	Name       string     `json:"name,omitempty"`
}

// ToolCall is a call of a tool that the model made.
type ToolCall struct {
	ID        string `json:"id,omitempty"`
	Type      string `json:"type,omitempty"`
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments,omitempty"`
}

// Request is what a record keeps of a request body.
type Request struct {
	Endpoint     Endpoint `json:"endpoint"`
	Model        string   `json:"model,omitempty"`
	Stream       bool     `json:"stream,omitempty"`
	IncludeUsage bool     `json:"include_usage,omitempty"` // stream_options.include_usage
	// Messages: chat's messages; for the Responses API, instructions as a
	// system message, then the input: a string as one user message, a list
	// of items as messages (function_call items as assistant tool calls,
	// function_call_output items as role "tool", reasoning items as role
	// "reasoning" with their summary, other items as role "item" with
	// "[TYPE]" as content).
	Messages []Message `json:"messages,omitempty"`
	// Prompt: the completions prompt; prompts of a batch joined by
	// newlines, token arrays as "[N tokens]".
	Prompt string `json:"prompt,omitempty"`
	// Input: the embeddings input texts, token arrays as "[N tokens]".
	Input []string `json:"input,omitempty"`
	// Tools: names of the tools offered (for a tool without a name, such
	// as a built-in one, its type).
	Tools []string `json:"tools,omitempty"`
	// MaxTokens: max_completion_tokens, else max_tokens; for the Responses
	// API max_output_tokens.
	MaxTokens   int      `json:"max_tokens,omitempty"`
	Temperature *float64 `json:"temperature,omitempty"`
	User        string   `json:"user,omitempty"`
	// PreviousResponseID: the Responses API's previous_response_id, whose
	// conversation this request continues.
	PreviousResponseID string `json:"previous_response_id,omitempty"`
}

// wireRequest holds the request fields of every endpoint (OpenAI API
// reference: "Create chat completion", "Create a model response", "Create
// completion", "Create embeddings").
type wireRequest struct {
	Model               string     `json:"model"`
	Messages            []wireItem `json:"messages"`
	Input               rawJSON    `json:"input"`
	Instructions        content    `json:"instructions"`
	Prompt              rawJSON    `json:"prompt"`
	Tools               []wireTool `json:"tools"`
	Functions           []wireTool `json:"functions"`
	MaxTokens           int        `json:"max_tokens"`
	MaxCompletionTokens int        `json:"max_completion_tokens"`
	MaxOutputTokens     int        `json:"max_output_tokens"`
	Temperature         *float64   `json:"temperature"`
	User                string     `json:"user"`
	Stream              bool       `json:"stream"`
	StreamOptions       struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	PreviousResponseID string `json:"previous_response_id"`
}

// wireItem is a chat message, a Responses input item or a Responses
// output item.
type wireItem struct {
	Type       string         `json:"type"`
	ID         string         `json:"id"`
	Role       string         `json:"role"`
	Status     string         `json:"status"`
	Content    content        `json:"content"`
	Refusal    string         `json:"refusal"`
	Name       string         `json:"name"`
	ToolCalls  []wireToolCall `json:"tool_calls"`
	ToolCallID string         `json:"tool_call_id"`
	// FunctionCall is chat's deprecated single function call.
	FunctionCall *wireFunction `json:"function_call"`
	Audio        struct {      // a chat answer's audio; data is not decoded
		Transcript string `json:"transcript"`
	} `json:"audio"`
	// Responses items: function_call, custom_tool_call, their outputs,
	// reasoning.
	CallID    string        `json:"call_id"`
	Arguments string        `json:"arguments"`
	Input     string        `json:"input"`
	Output    content       `json:"output"`
	Summary   []contentPart `json:"summary"`
}

type wireFunction struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// wireToolCall is a tool call in a chat message, or a streamed delta of one.
type wireToolCall struct {
	Index    int          `json:"index"`
	ID       string       `json:"id"`
	Type     string       `json:"type"`
	Function wireFunction `json:"function"`
	Custom   struct {
		Name  string `json:"name"`
		Input string `json:"input"`
	} `json:"custom"`
}

func (tc *wireToolCall) toolCall() ToolCall {
	t := ToolCall{ID: tc.ID, Type: tc.Type, Name: tc.Function.Name, Arguments: tc.Function.Arguments}
	if tc.Custom.Name != "" || tc.Custom.Input != "" {
		t.Name, t.Arguments = tc.Custom.Name, tc.Custom.Input
	}
	return t
}

// wireTool is a tool offered: chat {"type":"function","function":{"name"}}
// or {"type":"custom","custom":{"name"}}, Responses {"type":"function",
// "name"}, a built-in tool {"type":"web_search"}, an MCP server
// {"type":"mcp","server_label"}, or a deprecated chat function {"name"}.
type wireTool struct {
	Type     string `json:"type"`
	Name     string `json:"name"`
	Function struct {
		Name string `json:"name"`
	} `json:"function"`
	Custom struct {
		Name string `json:"name"`
	} `json:"custom"`
	ServerLabel string `json:"server_label"`
}

func (t *wireTool) name() string {
	switch {
	case t.Function.Name != "":
		return t.Function.Name
	case t.Custom.Name != "":
		return t.Custom.Name
	case t.Name != "":
		return t.Name
	case t.ServerLabel != "":
		return t.Type + ":" + t.ServerLabel
	}
	return t.Type
}

// ParseRequest reads what a record keeps of a request body for endpoint
// ep. A body that is not valid JSON yields the fields that came before the
// fault and an error wrapping ErrInvalidJSON; a field of the wrong type is
// left unset and reported. contentType may be empty; a form or multipart
// body is not JSON (see ParseMultipart).
func ParseRequest(ep Endpoint, contentType string, body []byte) (Request, error) {
	req := Request{Endpoint: ep}
	switch mt := mediaType(contentType); mt {
	case "multipart/form-data", "application/x-www-form-urlencoded":
		return req, fmt.Errorf("openai: %s request: content type %s: %w", ep, mt, ErrNotJSON)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return req, fmt.Errorf("openai: %s request: %w", ep, ErrEmptyBody)
	}
	var w wireRequest
	err := decodeJSON(body, &w)
	req.fill(ep, &w)
	if err != nil {
		return req, fmt.Errorf("openai: %s request: %w", ep, err)
	}
	return req, nil
}

func (r *Request) fill(ep Endpoint, w *wireRequest) {
	r.Model, r.Stream, r.User = w.Model, w.Stream, w.User
	r.IncludeUsage = w.StreamOptions.IncludeUsage
	r.Temperature = w.Temperature
	r.PreviousResponseID = w.PreviousResponseID
	r.MaxTokens = w.MaxTokens
	if w.MaxCompletionTokens != 0 {
		r.MaxTokens = w.MaxCompletionTokens
	}
	if w.MaxOutputTokens != 0 {
		r.MaxTokens = w.MaxOutputTokens
	}
	for _, tools := range [][]wireTool{w.Tools, w.Functions} {
		for i := range tools {
			r.Tools = append(r.Tools, tools[i].name())
		}
	}
	if len(w.Messages) > 0 {
		r.Messages = make([]Message, 0, len(w.Messages))
		for i := range w.Messages {
			r.Messages = append(r.Messages, w.Messages[i].chatMessage())
		}
	}
	switch ep {
	case Responses:
		r.fillResponsesInput(w)
	case Completions:
		r.Prompt = strings.Join(textsOf(w.Prompt), "\n")
	case Embeddings:
		r.Input = textsOf(w.Input)
	}
}

// chatMessage turns a chat message into a Message.
func (it *wireItem) chatMessage() Message {
	m := Message{Role: it.Role, Content: it.Content.text, Name: it.Name, ToolCallID: it.ToolCallID}
	for _, refusal := range []string{it.Content.refusal, it.Refusal} {
		if refusal != "" && m.Content == "" {
			m.Content = refusal
		}
	}
	for i := range it.ToolCalls {
		m.ToolCalls = append(m.ToolCalls, it.ToolCalls[i].toolCall())
	}
	if f := it.FunctionCall; f != nil {
		m.ToolCalls = append(m.ToolCalls, ToolCall{Type: "function", Name: f.Name, Arguments: f.Arguments})
	}
	return m
}

func (r *Request) fillResponsesInput(w *wireRequest) {
	if w.Instructions.text != "" {
		r.Messages = append(r.Messages, Message{Role: "system", Content: w.Instructions.text})
	}
	in := []byte(w.Input)
	switch {
	case len(in) == 0:
	case in[0] == '"':
		s, _ := unquote(in)
		r.Messages = append(r.Messages, Message{Role: "user", Content: s})
	case in[0] == '[':
		var items []wireItem
		_ = json.Unmarshal(in, &items) // type faults cost only their item
		for i := range items {
			r.Messages = append(r.Messages, items[i].inputMessage())
		}
	}
}

// inputMessage turns a Responses input item into a Message.
func (it *wireItem) inputMessage() Message {
	switch it.Type {
	case "", "message":
		return it.chatMessage()
	case "function_call":
		return Message{Role: "assistant", ToolCalls: []ToolCall{
			{ID: it.CallID, Type: "function", Name: it.Name, Arguments: it.Arguments}}}
	case "custom_tool_call":
		return Message{Role: "assistant", ToolCalls: []ToolCall{
			{ID: it.CallID, Type: "custom", Name: it.Name, Arguments: it.Input}}}
	case "function_call_output", "custom_tool_call_output":
		return Message{Role: "tool", ToolCallID: it.CallID, Content: it.Output.text}
	case "reasoning":
		var b strings.Builder
		for i := range it.Summary {
			joinTo(&b, it.Summary[i].Text)
		}
		return Message{Role: "reasoning", Content: b.String()}
	case "item_reference":
		return Message{Role: "item", Content: "[item_reference: " + it.ID + "]"}
	}
	m := Message{Role: "item", Content: "[" + it.Type + "]", ToolCallID: it.CallID}
	if it.Output.text != "" {
		m.Content += "\n" + it.Output.text
	}
	return m
}

// textsOf reads a completions prompt or an embeddings input: a string, an
// array of strings, an array of tokens, or an array of token arrays.
func textsOf(raw rawJSON) []string {
	if len(raw) == 0 {
		return nil
	}
	switch raw[0] {
	case '"':
		s, _ := unquote(raw)
		return []string{s}
	case '[':
	default:
		return nil
	}
	var elems []promptElem
	_ = json.Unmarshal(raw, &elems)
	tokens := 0
	for _, e := range elems {
		if e.kind != '0' {
			tokens = -1
			break
		}
		tokens++
	}
	if tokens > 0 { // one prompt given as tokens
		return []string{tokenCount(tokens)}
	}
	out := make([]string, 0, len(elems))
	for _, e := range elems {
		switch e.kind {
		case '"':
			out = append(out, e.text)
		case '[':
			out = append(out, tokenCount(e.n))
		}
	}
	return out
}

func tokenCount(n int) string {
	return "[" + strconv.Itoa(n) + " tokens]"
}

// promptElem is an element of a prompt or input array: a string ('"'), a
// token ('0') or a token array ('[', n tokens).
type promptElem struct {
	kind byte
	text string
	n    int
}

// UnmarshalJSON implements json.Unmarshaler.
func (e *promptElem) UnmarshalJSON(b []byte) error {
	*e = promptElem{}
	switch {
	case b[0] == '"':
		e.kind = '"'
		e.text, _ = unquote(b)
	case b[0] == '[':
		var toks []skipValue
		_ = json.Unmarshal(b, &toks)
		e.kind, e.n = '[', len(toks)
	case b[0] == '-' || (b[0] >= '0' && b[0] <= '9'):
		e.kind = '0'
	}
	return nil
}

// mediaType returns the lower-cased media type of a Content-Type value.
func mediaType(contentType string) string {
	if i := strings.IndexByte(contentType, ';'); i >= 0 {
		contentType = contentType[:i]
	}
	return strings.ToLower(strings.TrimSpace(contentType))
}
