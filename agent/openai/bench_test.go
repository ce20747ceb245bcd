package openai

import (
	"bytes"
	"testing"
)

// realisticChatStream is a chat stream as the API sends it: chunks with
// usage null, a usage chunk, [DONE]; repeated to about 64 KiB.
func realisticChatStream(b *testing.B) []byte {
	one := fixture(b, "streams/chat_usage.sse")
	return bytes.Repeat(one, 64<<10/len(one)+1)
}

// BenchmarkSSEParser: bytes per second through the parser, fed in 4 KiB
// chunks as reads from a TLS connection would come.
func BenchmarkSSEParser(b *testing.B) {
	stream := realisticChatStream(b)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	n := 0
	emit := func(Event) { n++ }
	for b.Loop() {
		p := NewSSEParser(0)
		for rest := stream; len(rest) > 0; {
			k := min(len(rest), 4096)
			if err := p.Feed(rest[:k], emit); err != nil {
				b.Fatal(err)
			}
			rest = rest[k:]
		}
		p.Flush(emit)
	}
}

// BenchmarkAssembleChatStream: events per second through the assembler.
func BenchmarkAssembleChatStream(b *testing.B) {
	var events []Event
	p := NewSSEParser(0)
	_ = p.Feed(fixture(b, "streams/chat_usage.sse"), func(e Event) { events = append(events, e) })
	b.ReportAllocs()
	total := 0
	for b.Loop() {
		a := NewStreamAssembler(ChatCompletions, 256)
		for _, e := range events {
			a.Add(e)
		}
		if !a.Done() {
			b.Fatal("not done")
		}
		total += len(events)
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(total), "ns/event")
}

// BenchmarkAssembleResponsesStream: the same for a Responses API stream.
func BenchmarkAssembleResponsesStream(b *testing.B) {
	var events []Event
	p := NewSSEParser(0)
	_ = p.Feed(fixture(b, "streams/responses.sse"), func(e Event) { events = append(events, e) })
	b.ReportAllocs()
	total := 0
	for b.Loop() {
		a := NewStreamAssembler(Responses, 256)
		for _, e := range events {
			a.Add(e)
		}
		total += len(events)
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkParseRequest: a chat request of about 1 KB.
func BenchmarkParseRequest(b *testing.B) {
	body := fixture(b, "requests/chat_1k.json")
	b.Logf("request of %d bytes", len(body))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseRequest(ChatCompletions, "application/json", body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseRequestImage: a chat request carrying a 1 MB base64 image.
func BenchmarkParseRequestImage(b *testing.B) {
	body := []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":[{"type":"text","text":"What is this?"},` +
		`{"type":"image_url","image_url":{"url":"data:image/png;base64,` + string(bytes.Repeat([]byte("iVBORw0K"), 1<<17)) + `"}}]}]}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseRequest(ChatCompletions, "application/json", body); err != nil {
			b.Fatal(err)
		}
	}
}
