package proxy

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/promptrail/promptrail/agent/mask"
	"github.com/promptrail/promptrail/agent/openai"
	"github.com/promptrail/promptrail/audit"
)

// maskedSSE masks a server-sent event stream on its way to the client.
// The text deltas of each choice (content, refusal, tool-call arguments;
// Responses output text and arguments) go through one mask.Stream each,
// which holds back only what could still become a secret; held text is
// released, masked, into the event that ends its part, or into an event of
// the same shape made for it. Events that carry complete text (the final
// Responses object, say) are masked whole. Edits use sjson, so every other
// byte of an event's JSON stays as the upstream wrote it.
type maskedSSE struct {
	src    io.ReadCloser
	ep     openai.Endpoint
	m      *mask.Masker
	ss     *mask.StreamSet
	parser *openai.SSEParser
	buf    []byte
	unfed  []byte // read from upstream, not yet parsed
	out    bytes.Buffer
	done   bool
	err    error

	findings  []mask.Finding
	template  []byte            // the last chat chunk, to shape events for held text
	lastDelta map[string][]byte // Responses: the last delta event per key
	seqShift  int64             // Responses: events added so far
	nextSeq   int64             // Responses: the upstream's next sequence number
}

func newMaskedSSE(src io.ReadCloser, ep openai.Endpoint, m *mask.Masker) *maskedSSE {
	return &maskedSSE{src: src, ep: ep, m: m, ss: m.NewStreamSet("response"), parser: openai.NewSSEParser(4 << 20),
		buf: make([]byte, 32<<10), lastDelta: map[string][]byte{}}
}

func (s *maskedSSE) Read(p []byte) (int, error) {
	for s.out.Len() == 0 && !s.done {
		if len(s.unfed) == 0 {
			n, err := s.src.Read(s.buf)
			s.unfed = s.buf[:n]
			if errors.Is(err, io.EOF) && n == 0 {
				s.flushAll()
				s.done = true
				break
			} else if err != nil && !errors.Is(err, io.EOF) {
				s.fail(err)
				break
			}
		}
		// One event at a time: a read that brought a burst of events must not
		// hold the first one back until the last is masked.
		n := eventEnd(s.unfed)
		if ferr := s.parser.Feed(s.unfed[:n], s.event); ferr != nil && !errors.Is(ferr, openai.ErrEventTooLarge) {
			s.fail(ferr)
			break
		}
		s.unfed = s.unfed[n:]
	}
	if s.out.Len() > 0 {
		return s.out.Read(p)
	}
	if s.err != nil {
		return 0, s.err
	}
	return 0, io.EOF
}

// eventEnd returns the length of b up to and including the blank line
// that ends its first event, or len(b) if none does.
func eventEnd(b []byte) int {
	for i := 0; i+1 < len(b); i++ {
		if b[i] == '\n' && (b[i+1] == '\n' || (b[i+1] == '\r' && i+2 < len(b) && b[i+2] == '\n')) {
			if b[i+1] == '\n' {
				return i + 2
			}
			return i + 3
		}
	}
	return len(b)
}

// fail drops held text: it is never flushed unmasked.
func (s *maskedSSE) fail(err error) {
	s.ss.Abort()
	s.err, s.done = err, true
}

func (s *maskedSSE) Close() error {
	if !s.done {
		s.ss.Abort()
	}
	return s.src.Close()
}

// AuditFindings returns what was masked in the stream, for the record.
func (s *maskedSSE) AuditFindings() []audit.Finding {
	return auditFindings(append(append([]mask.Finding(nil), s.findings...), s.ss.Findings()...))
}

// closeKeys ends the streams whose key starts with prefix and returns the
// text they still held, masked.
func (s *maskedSSE) closeKeys(prefix string) map[string][]byte {
	out := map[string][]byte{}
	for _, k := range s.ss.Keys() {
		if strings.HasPrefix(k, prefix) {
			out[k] = s.ss.Close(k)
		}
	}
	return out
}

func (s *maskedSSE) write(ev openai.Event, data []byte) {
	if ev.Event != "" {
		s.out.WriteString("event: " + ev.Event + "\n")
	}
	if ev.ID != "" {
		s.out.WriteString("id: " + ev.ID + "\n")
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		s.out.WriteString("data: ")
		s.out.Write(line)
		s.out.WriteByte('\n')
	}
	s.out.WriteByte('\n')
}

func (s *maskedSSE) event(ev openai.Event) {
	if ev.Comment {
		s.out.WriteString(":" + ev.Data + "\n\n")
		return
	}
	data := []byte(ev.Data)
	switch {
	case ev.Data == "[DONE]":
		s.flushAll()
		s.write(ev, data)
	case !gjson.ValidBytes(data):
		masked, f := s.m.Text("response", "", data)
		s.findings = append(s.findings, f...)
		s.write(ev, masked)
	case s.ep == openai.Responses:
		s.responsesEvent(ev, data)
	case gjson.GetBytes(data, "choices").IsArray():
		s.write(ev, s.chatChunk(data))
	default:
		s.write(ev, s.whole(data))
	}
}

// whole masks a complete JSON document; one that is not valid JSON
// comes back masked as text, never as it was.
func (s *maskedSSE) whole(data []byte) []byte {
	masked, f, _ := s.m.JSON("response", data)
	s.findings = append(s.findings, f...)
	return masked
}

// chatChunk masks the deltas of a chat or completions chunk.
func (s *maskedSSE) chatChunk(data []byte) []byte {
	s.template = data
	choices := gjson.GetBytes(data, "choices").Array()
	for ci, c := range choices {
		idx := c.Get("index").String()
		base := "choices." + strconv.Itoa(ci)
		data = s.maskDelta(data, "c"+idx+"/content", base+".delta.content", c.Get("delta.content"))
		data = s.maskDelta(data, "c"+idx+"/refusal", base+".delta.refusal", c.Get("delta.refusal"))
		data = s.maskDelta(data, "c"+idx+"/text", base+".text", c.Get("text"))
		for ti, tc := range c.Get("delta.tool_calls").Array() {
			key := "c" + idx + "/tool" + tc.Get("index").String()
			data = s.maskDelta(data, key, base+".delta.tool_calls."+strconv.Itoa(ti)+".function.arguments", tc.Get("function.arguments"))
		}
		if fr := c.Get("finish_reason"); fr.Exists() && fr.Type != gjson.Null {
			data = s.releaseChoice(data, idx, base)
		}
	}
	return data
}

func (s *maskedSSE) maskDelta(data []byte, key, path string, v gjson.Result) []byte {
	if v.Type != gjson.String {
		return data
	}
	out, err := sjson.SetBytes(data, path, string(s.ss.Write(key, []byte(v.String()))))
	if err != nil {
		return data
	}
	return out
}

// releaseChoice puts the held text of a finishing choice into its final
// chunk, which usually has an empty delta.
func (s *maskedSSE) releaseChoice(data []byte, idx, base string) []byte {
	for key, held := range s.closeKeys("c" + idx + "/") {
		if len(held) == 0 {
			continue
		}
		part := strings.TrimPrefix(key, "c"+idx+"/")
		path := base + ".delta." + part
		switch {
		case part == "text":
			path = base + ".text"
		case strings.HasPrefix(part, "tool"):
			path = base + ".delta.tool_calls.-1"
			tc := `{"index":` + strings.TrimPrefix(part, "tool") + `,"function":{"arguments":` + strconv.Quote(string(held)) + `}}`
			if out, err := sjson.SetRawBytes(data, path, []byte(tc)); err == nil {
				data = out
			}
			continue
		}
		prev := gjson.GetBytes(data, path).String()
		if out, err := sjson.SetBytes(data, path, string(held)+prev); err == nil {
			data = out
		}
	}
	return data
}

// flushAll releases everything still held at the end of the stream, in
// chunks shaped like the last one the upstream sent.
func (s *maskedSSE) flushAll() {
	for key, held := range s.closeKeys("") {
		if len(held) == 0 {
			continue
		}
		if s.ep == openai.Responses {
			s.emitResponsesDelta(key, held, s.nextSeq)
			continue
		}
		if s.template == nil {
			continue
		}
		idx, part, _ := strings.Cut(strings.TrimPrefix(key, "c"), "/")
		chunk, _ := sjson.SetRawBytes(s.template, "choices", []byte(`[{"index":`+idx+`,"delta":{}}]`))
		chunk = s.releaseChoice(chunkWith(chunk, part, held), idx, "choices.0")
		s.write(openai.Event{}, chunk)
	}
}

func chunkWith(chunk []byte, part string, held []byte) []byte {
	path := "choices.0.delta." + part
	switch {
	case part == "text":
		path = "choices.0.text"
	case strings.HasPrefix(part, "tool"):
		tc := `[{"index":` + strings.TrimPrefix(part, "tool") + `,"function":{"arguments":` + strconv.Quote(string(held)) + `}}]`
		out, _ := sjson.SetRawBytes(chunk, "choices.0.delta.tool_calls", []byte(tc))
		return out
	}
	out, _ := sjson.SetBytes(chunk, path, string(held))
	return out
}

// responsesEvent masks one Responses API event; sequence numbers shift by
// the events added for held text, so SDKs that check them stay content.
func (s *maskedSSE) responsesEvent(ev openai.Event, data []byte) {
	typ := gjson.GetBytes(data, "type").String()
	seq := gjson.GetBytes(data, "sequence_number").Int()
	s.nextSeq = seq + 1
	key := ""
	switch typ {
	case "response.output_text.delta", "response.refusal.delta":
		key = "t/" + gjson.GetBytes(data, "item_id").String() + "/" + gjson.GetBytes(data, "content_index").String()
	case "response.function_call_arguments.delta":
		key = "a/" + gjson.GetBytes(data, "item_id").String()
	}
	switch {
	case key != "":
		s.lastDelta[key] = data
		data = s.maskDelta(data, key, "delta", gjson.GetBytes(data, "delta"))
	case strings.HasSuffix(typ, ".done") && (strings.HasPrefix(typ, "response.output_text") || strings.HasPrefix(typ, "response.refusal") || strings.HasPrefix(typ, "response.function_call_arguments")):
		prefix := "t/" + gjson.GetBytes(data, "item_id").String() + "/" + gjson.GetBytes(data, "content_index").String()
		if strings.HasPrefix(typ, "response.function_call_arguments") {
			prefix = "a/" + gjson.GetBytes(data, "item_id").String()
		}
		for k, held := range s.closeKeys(prefix) {
			s.emitResponsesDelta(k, held, seq)
		}
		data = s.whole(data)
	default:
		data = s.whole(data)
	}
	s.write(ev, s.shiftSeq(data))
}

// emitResponsesDelta adds a delta event with held text, taking the place
// of upstream sequence number seq; later events shift by one.
func (s *maskedSSE) emitResponsesDelta(key string, held []byte, seq int64) {
	tmpl, ok := s.lastDelta[key]
	if !ok || len(held) == 0 {
		return
	}
	out, err := sjson.SetBytes(tmpl, "delta", string(held))
	if err == nil {
		out, err = sjson.SetBytes(out, "sequence_number", seq+s.seqShift)
	}
	if err != nil {
		return
	}
	s.seqShift++
	s.write(openai.Event{Event: gjson.GetBytes(tmpl, "type").String()}, out)
}

func (s *maskedSSE) shiftSeq(data []byte) []byte {
	seq := gjson.GetBytes(data, "sequence_number")
	if s.seqShift == 0 || seq.Type != gjson.Number {
		return data
	}
	out, err := sjson.SetBytes(data, "sequence_number", seq.Int()+s.seqShift)
	if err != nil {
		return data
	}
	return out
}
