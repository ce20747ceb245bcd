package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Where a Response's usage came from.
const (
	UsageFromResponse = "response" // the usage object of a JSON body
	UsageFromStream   = "stream"   // a usage chunk, or response.completed
	UsageNone         = "none"     // no usage arrived
)

// maxErrorText bounds the text kept of an error body that is not JSON.
const maxErrorText = 512

// Usage counts tokens. Chat and completions report prompt_tokens and
// completion_tokens, the Responses API input_tokens and output_tokens;
// both become InputTokens and OutputTokens.
type Usage struct {
	InputTokens     int `json:"input_tokens"`
	OutputTokens    int `json:"output_tokens"`
	TotalTokens     int `json:"total_tokens"`
	CachedTokens    int `json:"cached_tokens,omitempty"`
	ReasoningTokens int `json:"reasoning_tokens,omitempty"`
}

// Choice is one answer of the model.
type Choice struct {
	Index        int        `json:"index"`
	Role         string     `json:"role,omitempty"`
	Content      string     `json:"content,omitempty"`
	Refusal      string     `json:"refusal,omitempty"`
	ToolCalls    []ToolCall `json:"tool_calls,omitempty"`
	FinishReason string     `json:"finish_reason,omitempty"`
}

// APIError is an error the API reported.
type APIError struct {
	Message string `json:"message,omitempty"`
	Type    string `json:"type,omitempty"`
	Code    string `json:"code,omitempty"`
	Param   string `json:"param,omitempty"`
}

// Response is what a record keeps of a response.
type Response struct {
	ID    string `json:"id,omitempty"`
	Model string `json:"model,omitempty"`
	// Choices: chat's and completions' choices. For the Responses API one
	// Choice: the output_text parts joined by newlines, refusal parts as
	// Refusal, function_call items (and other *_call items, by type) as
	// ToolCalls, and as FinishReason incomplete_details.reason if there is
	// one, else the status.
	Choices     []Choice  `json:"choices,omitempty"`
	Usage       *Usage    `json:"usage,omitempty"`
	UsageSource string    `json:"usage_source"` // UsageFromResponse, UsageFromStream or UsageNone
	Error       *APIError `json:"error,omitempty"`
	Embeddings  int       `json:"embeddings,omitempty"` // number of vectors; vectors are never kept
	Status      string    `json:"status,omitempty"`     // the Responses API's status
}

// wireResponse holds the response fields of every endpoint.
type wireResponse struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Model             string       `json:"model"`
	Choices           []wireChoice `json:"choices"`
	Usage             *wireUsage   `json:"usage"`
	Error             *wireError   `json:"error"`
	Data              []skipValue  `json:"data"`
	Status            string       `json:"status"`
	Output            []wireItem   `json:"output"`
	IncompleteDetails *struct {
		Reason string `json:"reason"`
	} `json:"incomplete_details"`
}

type wireChoice struct {
	Index        int       `json:"index"`
	Message      *wireItem `json:"message"`
	Text         string    `json:"text"`
	FinishReason string    `json:"finish_reason"`
}

type wireUsage struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	InputTokens         int `json:"input_tokens"`
	OutputTokens        int `json:"output_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	InputTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	CompletionTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
	OutputTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
}

func (u *wireUsage) usage() *Usage {
	return &Usage{
		InputTokens:     u.PromptTokens + u.InputTokens,
		OutputTokens:    u.CompletionTokens + u.OutputTokens,
		TotalTokens:     u.TotalTokens,
		CachedTokens:    u.PromptTokensDetails.CachedTokens + u.InputTokensDetails.CachedTokens,
		ReasoningTokens: u.CompletionTokensDetails.ReasoningTokens + u.OutputTokensDetails.ReasoningTokens,
	}
}

// wireError is {"message","type","param","code"}; a bare string is taken
// as the message.
type wireError APIError

// UnmarshalJSON implements json.Unmarshaler.
func (e *wireError) UnmarshalJSON(b []byte) error {
	switch b[0] {
	case '"':
		s, err := unquote(b)
		*e = wireError{Message: s}
		return err
	case '{':
		var o struct {
			Message flexString `json:"message"`
			Type    flexString `json:"type"`
			Code    flexString `json:"code"`
			Param   flexString `json:"param"`
		}
		err := json.Unmarshal(b, &o)
		*e = wireError{Message: string(o.Message), Type: string(o.Type), Code: string(o.Code), Param: string(o.Param)}
		return err
	}
	return nil
}

func (e *wireError) apiError() *APIError {
	if e == nil {
		return nil
	}
	a := APIError(*e)
	return &a
}

// ParseResponse reads what a record keeps of a response body of endpoint
// ep. A text/event-stream body is split into events and reassembled as
// StreamAssembler does. A body that is not valid JSON yields what came
// before the fault and an error wrapping ErrInvalidJSON; if statusCode
// says the request failed, Error then holds the start of the body as text.
// The Response is meaningful even when an error is returned.
func ParseResponse(ep Endpoint, statusCode int, contentType string, body []byte) (Response, error) {
	if mediaType(contentType) == "text/event-stream" {
		return parseStreamBody(ep, body)
	}
	resp := Response{UsageSource: UsageNone}
	failed := statusCode >= 400
	if len(bytes.TrimSpace(body)) == 0 {
		if failed {
			resp.Error = &APIError{Message: httpStatus(statusCode)}
		}
		return resp, fmt.Errorf("openai: %s response: %w", ep, ErrEmptyBody)
	}
	var w wireResponse
	err := decodeJSON(body, &w)
	resp.fill(ep, &w)
	if failed && resp.Error == nil {
		msg := httpStatus(statusCode)
		if err != nil {
			msg += ": " + textSnippet(body, maxErrorText)
		}
		resp.Error = &APIError{Message: msg}
	}
	if err != nil {
		return resp, fmt.Errorf("openai: %s response: %w", ep, err)
	}
	return resp, nil
}

func httpStatus(code int) string {
	s := "HTTP " + strconv.Itoa(code)
	if t := http.StatusText(code); t != "" {
		s += " " + t
	}
	return s
}

// textSnippet returns the start of b as valid UTF-8 text.
func textSnippet(b []byte, n int) string {
	b = bytes.TrimSpace(b)
	cut := len(b) > n
	if cut {
		b = b[:n]
	}
	s := strings.ToValidUTF8(string(b), string(utf8.RuneError))
	if cut {
		s += "…"
	}
	return s
}

func (r *Response) fill(ep Endpoint, w *wireResponse) {
	r.ID, r.Model, r.Status = w.ID, w.Model, w.Status
	r.Error = w.Error.apiError()
	if w.Usage != nil {
		r.Usage, r.UsageSource = w.Usage.usage(), UsageFromResponse
	}
	if ep == Other { // guess from the object's type
		switch {
		case w.Object == "response" || w.Output != nil:
			ep = Responses
		case w.Object == "list" || w.Data != nil:
			ep = Embeddings
		}
	}
	switch ep {
	case Responses:
		if w.Output != nil || w.Status != "" {
			r.Choices = []Choice{outputChoice(w)}
		}
	case Embeddings:
		r.Embeddings = len(w.Data)
	default:
		for i := range w.Choices {
			r.Choices = append(r.Choices, w.Choices[i].choice())
		}
	}
}

// choice turns a chat or completions choice into a Choice.
func (c *wireChoice) choice() Choice {
	ch := Choice{Index: c.Index, Content: c.Text, FinishReason: c.FinishReason}
	if m := c.Message; m != nil {
		msg := m.chatMessage()
		ch.Role, ch.ToolCalls = msg.Role, msg.ToolCalls
		ch.Content, ch.Refusal = m.Content.text, m.Refusal
		if ch.Refusal == "" {
			ch.Refusal = m.Content.refusal
		}
		if ch.Content == "" {
			ch.Content = m.Audio.Transcript
		}
	}
	return ch
}

// outputChoice makes the one Choice of a Responses API response.
func outputChoice(w *wireResponse) Choice {
	ch := Choice{Role: "assistant", FinishReason: w.Status}
	if d := w.IncompleteDetails; d != nil && d.Reason != "" {
		ch.FinishReason = d.Reason
	}
	var text, refusal strings.Builder
	for i := range w.Output {
		it := &w.Output[i]
		switch {
		case it.Type == "message":
			joinTo(&text, it.Content.text)
			joinTo(&refusal, it.Content.refusal)
		case it.Type == "function_call":
			ch.ToolCalls = append(ch.ToolCalls, ToolCall{ID: it.CallID, Type: "function", Name: it.Name, Arguments: it.Arguments})
		case it.Type == "custom_tool_call":
			ch.ToolCalls = append(ch.ToolCalls, ToolCall{ID: it.CallID, Type: "custom", Name: it.Name, Arguments: it.Input})
		case strings.HasSuffix(it.Type, "_call"): // web_search_call, mcp_call, ...
			id := it.CallID
			if id == "" {
				id = it.ID
			}
			ch.ToolCalls = append(ch.ToolCalls, ToolCall{ID: id, Type: it.Type, Name: it.Name, Arguments: it.Arguments})
		}
	}
	ch.Content, ch.Refusal = text.String(), refusal.String()
	return ch
}
