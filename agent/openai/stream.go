package openai

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Bounds on what a StreamAssembler tracks, whatever a stream says: choices
// of a chat stream, tool calls of one choice, and text parts and calls of
// a Responses stream. Deltas for anything past them are counted in
// Malformed.
const (
	maxStreamChoices = 128
	maxStreamCalls   = 128
	maxStreamParts   = 1024
)

// RecordedEvent is a raw event kept for the record.
type RecordedEvent struct {
	Event string `json:"event,omitempty"`
	Data  string `json:"data"`
}

// StreamAssembler rebuilds a streamed answer from its server-sent events
// (OpenAI API reference: "The chat completion chunk object", "Streaming
// events" of the Responses API, streamed legacy completions). It takes
// events of any endpoint: chunks carrying "choices" as chat or completions
// chunks, events whose type starts with "response." (or is "error") as
// Responses API events. A StreamAssembler is not safe for concurrent use.
type StreamAssembler struct {
	ep        Endpoint
	maxEvents int
	events    []RecordedEvent
	dropped   int
	malformed int
	done      bool
	first     bool

	id, model, status string
	usage             *Usage
	err               *APIError

	choices []*choiceAcc // chat and completions, in order of arrival

	responses bool       // Responses API events arrived
	texts     []*textAcc // Responses output text and refusal parts
	calls     []*callAcc // Responses function and custom tool calls
	final     *Response  // from response.completed/incomplete/failed
}

type choiceAcc struct {
	index            int
	role, finish     string
	content, refusal []byte
	calls            []*toolAcc
}

type toolAcc struct {
	index         int
	id, typ, name string
	args          []byte
}

type textAcc struct {
	out, part int
	refusal   bool
	text      []byte
}

type callAcc struct {
	out                 int
	itemID, callID, typ string
	name                string
	args                []byte
}

// wireStreamEvent holds the fields of every kind of streamed event.
type wireStreamEvent struct {
	Type    string             `json:"type"`
	ID      string             `json:"id"`
	Model   string             `json:"model"`
	Choices []wireStreamChoice `json:"choices"`
	Usage   *wireUsage         `json:"usage"`
	Error   *wireError         `json:"error"`
	// Responses API events.
	Response     *wireResponse `json:"response"`
	Item         *wireItem     `json:"item"`
	ItemID       string        `json:"item_id"`
	OutputIndex  int           `json:"output_index"`
	ContentIndex int           `json:"content_index"`
	Delta        rawJSON       `json:"delta"` // a string, decoded only where it is text
	Text         string        `json:"text"`
	Refusal      string        `json:"refusal"`
	Arguments    string        `json:"arguments"`
	Input        string        `json:"input"`
	Code         flexString    `json:"code"`
	Message      flexString    `json:"message"`
	Param        flexString    `json:"param"`
}

type wireStreamChoice struct {
	Index int `json:"index"`
	Delta struct {
		Role      string         `json:"role"`
		Content   string         `json:"content"`
		Refusal   string         `json:"refusal"`
		ToolCalls []wireToolCall `json:"tool_calls"`
	} `json:"delta"`
	Text         string `json:"text"` // completions
	FinishReason string `json:"finish_reason"`
}

// NewStreamAssembler returns an assembler for a stream of endpoint ep that
// keeps at most maxEvents raw events for the record and counts the rest.
func NewStreamAssembler(ep Endpoint, maxEvents int) *StreamAssembler {
	return &StreamAssembler{ep: ep, maxEvents: max(maxEvents, 0)}
}

// Add takes the next event of the stream. Comments are ignored. Data that
// is not a JSON object (or "[DONE]") is counted in Malformed and otherwise
// ignored.
func (a *StreamAssembler) Add(ev Event) {
	if ev.Comment {
		return
	}
	if len(a.events) < a.maxEvents {
		a.events = append(a.events, RecordedEvent{Event: ev.Event, Data: ev.Data})
	} else {
		a.dropped++
	}
	data := strings.TrimSpace(ev.Data)
	if data == "[DONE]" {
		a.done = true
		return
	}
	if len(data) == 0 || data[0] != '{' {
		a.malformed++
		return
	}
	var w wireStreamEvent
	if err := json.Unmarshal([]byte(data), &w); err != nil {
		if se := (*json.SyntaxError)(nil); errors.As(err, &se) {
			a.malformed++
			return
		}
		// A field of the wrong type is left unset; the rest is good.
	}
	typ := w.Type
	if typ == "" {
		typ = ev.Event
	}
	if strings.HasPrefix(typ, "response.") || typ == "error" {
		a.addResponses(typ, &w)
		return
	}
	a.addChunk(&w)
}

// addChunk takes a chat or completions chunk.
func (a *StreamAssembler) addChunk(w *wireStreamEvent) {
	a.note(w.ID, w.Model)
	if w.Error != nil {
		a.err = w.Error.apiError()
	}
	if w.Usage != nil {
		a.usage = w.Usage.usage()
	}
	for i := range w.Choices {
		c := &w.Choices[i]
		acc := a.choice(c.Index)
		if acc == nil {
			a.malformed++
			continue
		}
		d := &c.Delta
		if acc.role == "" {
			acc.role = d.Role
		}
		acc.content = a.appendText(acc.content, d.Content)
		acc.content = a.appendText(acc.content, c.Text)
		acc.refusal = a.appendText(acc.refusal, d.Refusal)
		for k := range d.ToolCalls {
			tc := &d.ToolCalls[k]
			t := acc.tool(tc.Index)
			if t == nil {
				a.malformed++
				continue
			}
			if t.id == "" {
				t.id = tc.ID
			}
			if t.typ == "" {
				t.typ = tc.Type
			}
			if t.name == "" {
				t.name = tc.Function.Name + tc.Custom.Name
			}
			t.args = a.appendText(t.args, tc.Function.Arguments)
			t.args = a.appendText(t.args, tc.Custom.Input)
		}
		if c.FinishReason != "" {
			acc.finish = c.FinishReason
		}
	}
}

// appendText appends a delta, noting the first one.
func (a *StreamAssembler) appendText(b []byte, s string) []byte {
	if s == "" {
		return b
	}
	a.first = true
	return append(b, s...)
}

func (a *StreamAssembler) note(id, model string) {
	if a.id == "" {
		a.id = id
	}
	if a.model == "" {
		a.model = model
	}
}

func (a *StreamAssembler) choice(index int) *choiceAcc {
	for _, c := range a.choices {
		if c.index == index {
			return c
		}
	}
	if index < 0 || len(a.choices) >= maxStreamChoices {
		return nil
	}
	c := &choiceAcc{index: index}
	a.choices = append(a.choices, c)
	return c
}

func (c *choiceAcc) tool(index int) *toolAcc {
	for _, t := range c.calls {
		if t.index == index {
			return t
		}
	}
	if index < 0 || len(c.calls) >= maxStreamCalls {
		return nil
	}
	t := &toolAcc{index: index}
	c.calls = append(c.calls, t)
	return t
}

// addResponses takes a Responses API event.
func (a *StreamAssembler) addResponses(typ string, w *wireStreamEvent) {
	a.responses = true
	switch typ {
	case "response.created", "response.queued", "response.in_progress":
		a.noteResponse(w.Response)
	case "response.output_item.added", "response.output_item.done":
		a.noteItem(w.OutputIndex, w.Item, typ == "response.output_item.done")
	case "response.output_text.delta", "response.refusal.delta":
		if t := a.text(w.OutputIndex, w.ContentIndex, typ == "response.refusal.delta"); t != nil {
			s, _ := unquote(w.Delta)
			t.text = a.appendText(t.text, s)
		}
	case "response.output_text.done", "response.refusal.done":
		if t := a.text(w.OutputIndex, w.ContentIndex, typ == "response.refusal.done"); t != nil && len(t.text) == 0 {
			t.text = append(t.text, w.Text+w.Refusal...)
		}
	case "response.function_call_arguments.delta", "response.custom_tool_call_input.delta":
		if c := a.call(w.OutputIndex, w.ItemID); c != nil {
			s, _ := unquote(w.Delta)
			c.args = a.appendText(c.args, s)
		}
	case "response.function_call_arguments.done", "response.custom_tool_call_input.done":
		if c := a.call(w.OutputIndex, w.ItemID); c != nil && len(c.args) == 0 {
			c.args = append(c.args, w.Arguments+w.Input...)
		}
	case "response.completed", "response.incomplete", "response.failed":
		a.done = true
		if r := w.Response; r != nil {
			a.noteResponse(r)
			final := Response{UsageSource: UsageNone}
			final.fill(Responses, r)
			a.final = &final
			if r.Usage != nil {
				a.usage = r.Usage.usage()
			}
			if r.Error != nil {
				a.err = r.Error.apiError()
			}
		}
	case "error":
		a.err = w.Error.apiError()
		if a.err == nil {
			a.err = &APIError{Message: string(w.Message), Code: string(w.Code), Param: string(w.Param)}
		}
	}
}

func (a *StreamAssembler) noteResponse(r *wireResponse) {
	if r == nil {
		return
	}
	a.note(r.ID, r.Model)
	if r.Status != "" {
		a.status = r.Status
	}
}

func (a *StreamAssembler) noteItem(out int, it *wireItem, done bool) {
	if it == nil {
		return
	}
	switch it.Type {
	case "function_call", "custom_tool_call":
		c := a.call(out, it.ID)
		if c == nil {
			return
		}
		c.typ = "function"
		if it.Type == "custom_tool_call" {
			c.typ = "custom"
		}
		if c.callID == "" {
			c.callID = it.CallID
		}
		if c.name == "" {
			c.name = it.Name
		}
		if done && len(c.args) == 0 {
			c.args = append(c.args, it.Arguments+it.Input...)
		}
	case "message":
		if !done || slices.ContainsFunc(a.texts, func(t *textAcc) bool { return t.out == out }) {
			return
		}
		if t := a.text(out, 0, false); t != nil {
			t.text = append(t.text, it.Content.text...)
		}
		if t := a.text(out, 0, true); t != nil {
			t.text = append(t.text, it.Content.refusal...)
		}
	}
}

func (a *StreamAssembler) text(out, part int, refusal bool) *textAcc {
	for k := len(a.texts) - 1; k >= 0; k-- {
		if t := a.texts[k]; t.out == out && t.part == part && t.refusal == refusal {
			return t
		}
	}
	if len(a.texts) >= maxStreamParts {
		a.malformed++
		return nil
	}
	t := &textAcc{out: out, part: part, refusal: refusal}
	a.texts = append(a.texts, t)
	return t
}

func (a *StreamAssembler) call(out int, itemID string) *callAcc {
	for k := len(a.calls) - 1; k >= 0; k-- {
		c := a.calls[k]
		if itemID != "" && c.itemID != "" {
			if c.itemID == itemID {
				return c
			}
			continue
		}
		if c.out == out {
			if c.itemID == "" {
				c.itemID = itemID
			}
			return c
		}
	}
	if len(a.calls) >= maxStreamCalls {
		a.malformed++
		return nil
	}
	c := &callAcc{out: out, itemID: itemID, typ: "function"}
	a.calls = append(a.calls, c)
	return c
}

// Result returns the answer assembled so far. Its UsageSource is
// UsageFromStream if a usage chunk or a final Responses event arrived, else
// UsageNone. For the Responses API, the final event's output is taken when
// it has any, else what the deltas built.
func (a *StreamAssembler) Result() Response {
	r := Response{ID: a.id, Model: a.model, Status: a.status, Error: a.err, UsageSource: UsageNone}
	if a.usage != nil {
		u := *a.usage
		r.Usage, r.UsageSource = &u, UsageFromStream
	}
	if a.responses || (a.ep == Responses && a.final != nil) {
		r.Choices = []Choice{a.responsesChoice()}
		return r
	}
	cs := slices.Clone(a.choices)
	slices.SortStableFunc(cs, func(x, y *choiceAcc) int { return x.index - y.index })
	for _, c := range cs {
		ch := Choice{Index: c.index, Role: c.role, Content: string(c.content),
			Refusal: string(c.refusal), FinishReason: c.finish}
		calls := slices.Clone(c.calls)
		slices.SortStableFunc(calls, func(x, y *toolAcc) int { return x.index - y.index })
		for _, t := range calls {
			ch.ToolCalls = append(ch.ToolCalls, ToolCall{ID: t.id, Type: t.typ, Name: t.name, Arguments: string(t.args)})
		}
		r.Choices = append(r.Choices, ch)
	}
	return r
}

func (a *StreamAssembler) responsesChoice() Choice {
	if f := a.final; f != nil && len(f.Choices) == 1 {
		if ch := f.Choices[0]; ch.Content != "" || ch.Refusal != "" || len(ch.ToolCalls) > 0 {
			return ch
		}
	}
	ch := Choice{Role: "assistant"}
	if f := a.final; f != nil && len(f.Choices) == 1 {
		ch.FinishReason = f.Choices[0].FinishReason
	}
	texts := slices.Clone(a.texts)
	slices.SortStableFunc(texts, func(x, y *textAcc) int {
		if x.out != y.out {
			return x.out - y.out
		}
		return x.part - y.part
	})
	var text, refusal strings.Builder
	for _, t := range texts {
		if t.refusal {
			joinTo(&refusal, string(t.text))
		} else {
			joinTo(&text, string(t.text))
		}
	}
	ch.Content, ch.Refusal = text.String(), refusal.String()
	calls := slices.Clone(a.calls)
	slices.SortStableFunc(calls, func(x, y *callAcc) int { return x.out - y.out })
	for _, c := range calls {
		ch.ToolCalls = append(ch.ToolCalls, ToolCall{ID: c.callID, Type: c.typ, Name: c.name, Arguments: string(c.args)})
	}
	return ch
}

// Events returns the raw events kept for the record, at most maxEvents.
// The caller must not change the slice.
func (a *StreamAssembler) Events() []RecordedEvent { return a.events }

// Done reports whether the stream said it was over: "[DONE]", or a
// response.completed, response.incomplete or response.failed event.
func (a *StreamAssembler) Done() bool { return a.done }

// Malformed counts events whose data was not a JSON object, and deltas for
// choices, tool calls or parts past the assembler's bounds.
func (a *StreamAssembler) Malformed() int { return a.malformed }

// Dropped counts events that arrived after maxEvents were kept.
func (a *StreamAssembler) Dropped() int { return a.dropped }

// FirstContent reports whether a content, text, refusal or arguments delta
// has arrived; the first Add after which it is true marks the first token.
func (a *StreamAssembler) FirstContent() bool { return a.first }

// parseStreamBody reads a whole event stream body.
func parseStreamBody(ep Endpoint, body []byte) (Response, error) {
	p := NewSSEParser(len(body) + 1)
	a := NewStreamAssembler(ep, 0)
	_ = p.Feed(body, a.Add) // nothing is over a bound of the whole body
	p.Flush(a.Add)
	r := a.Result()
	if p.Incomplete() {
		return r, fmt.Errorf("openai: %s response: %w", ep, ErrIncompleteStream)
	}
	return r, nil
}
