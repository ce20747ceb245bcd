package recorder

import (
	"encoding/json"
	"unicode/utf8"

	"github.com/promptrail/promptrail/agent/openai"
	"github.com/promptrail/promptrail/audit"
)

// budget is what is left of the bytes one side of a record (request or
// response) may keep of the text it holds.
type budget struct {
	left int
	cut  bool
}

// take keeps what the budget allows of *s, cut on a UTF-8 boundary.
func (b *budget) take(s *string) {
	if len(*s) <= b.left {
		b.left -= len(*s)
		return
	}
	n := max(b.left, 0)
	for n > 0 && !utf8.RuneStart((*s)[n]) {
		n--
	}
	*s = (*s)[:n]
	b.left, b.cut = 0, true
}

func (b *budget) toolCalls(calls []openai.ToolCall) {
	for i := range calls {
		b.take(&calls[i].Arguments)
	}
}

// boundRequest makes the request's texts (the parsed messages, prompt,
// input and tools first, as they are what people read and search; then
// the raw body) fit limit bytes together, flagging what it cut. Before,
// only the body counted, and a 4.6 MB prompt made a record of more than
// 4 MiB.
func boundRequest(q *audit.Request, limit int) (kept int) {
	b := budget{left: limit}
	for i := range q.Messages {
		b.take(&q.Messages[i].Content)
		b.toolCalls(q.Messages[i].ToolCalls)
	}
	b.take(&q.Prompt)
	for i := range q.Input {
		b.take(&q.Input[i])
	}
	for i := range q.Tools {
		b.take(&q.Tools[i])
	}
	if q.Multipart != nil {
		for i := range q.Multipart.Fields {
			b.take(&q.Multipart.Fields[i].Value)
		}
	}
	b.take(&q.Body)
	q.Truncated = q.Truncated || b.cut
	return limit - b.left
}

// boundResponse does the same for the response: the reassembled choices,
// then the events as they came, then the raw body.
func boundResponse(r *audit.Response, limit int) (kept int) {
	if r == nil {
		return 0
	}
	b := budget{left: limit}
	for i := range r.Choices {
		b.take(&r.Choices[i].Content)
		b.take(&r.Choices[i].Refusal)
		b.toolCalls(r.Choices[i].ToolCalls)
	}
	for i := range r.Events {
		if b.left < len(r.Events[i].Data) {
			// A cut event is no event: keep whole events only.
			r.Events = r.Events[:i]
			b.cut = true
			break
		}
		b.left -= len(r.Events[i].Data)
	}
	b.take(&r.Body)
	r.Truncated = r.Truncated || b.cut
	return limit - b.left
}

// fixedBytes is what a record holds besides the texts the budgets
// bound: identity, connection, findings, names and framing.
const fixedBytes = 64 << 10

// fitRecord bounds both sides of r to limit, then shrinks r until its
// encoding fits audit.MaxRecordBytes, the largest record the collector
// takes. The budgets count bytes of text,
// and JSON may spell a byte with six (\u0000), so a record of texts
// within budget can still be too large; then the budgets shrink in
// proportion until it fits.
func fitRecord(r *audit.Record, limit int) {
	text := boundRequest(&r.Request, limit) + boundResponse(r.Response, limit)
	// Escaped six times over, with the rest of the record, it fits: the
	// usual case, which then costs no encoding.
	if 6*text+fixedBytes <= audit.MaxRecordBytes {
		return
	}
	for range 8 {
		enc, err := json.Marshal(r)
		if err != nil || len(enc) <= audit.MaxRecordBytes {
			return
		}
		limit = int(float64(limit) * float64(audit.MaxRecordBytes) / float64(len(enc)) * 0.9)
		boundRequest(&r.Request, limit)
		boundResponse(r.Response, limit)
	}
	// What is left is not text: drop the parts that grow without bound.
	r.Request.Messages, r.Request.Input, r.Request.Tools, r.Request.Body = nil, nil, nil, ""
	if r.Response != nil {
		r.Response.Events, r.Response.Choices, r.Response.Body = nil, nil, ""
		r.Response.Truncated = true
	}
	r.Request.Truncated = true
}
