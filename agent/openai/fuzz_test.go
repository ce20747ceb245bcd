package openai

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"
)

// The fuzz targets' seed corpora are under testdata/fuzz/<Name>/.

// FuzzSSEParser: the parser never panics, any chunking gives the events of
// the whole stream, and its buffers stay within maxEvent.
func FuzzSSEParser(f *testing.F) {
	f.Add([]byte(trickyStream), uint16(7), uint16(60))
	f.Fuzz(func(t *testing.T, data []byte, split uint16, maxEvent uint16) {
		m := int(maxEvent%1024) + 1
		run := func(chunks ...[]byte) ([]Event, *SSEParser) {
			var evs []Event
			p := NewSSEParser(m)
			emit := func(e Event) { evs = append(evs, e) }
			for _, c := range chunks {
				_ = p.Feed(c, emit)
				if cap(p.line) > m || cap(p.data) > m || cap(p.event) > m || len(p.id) > m {
					t.Fatalf("buffers over %d: line %d, data %d, event %d, id %d",
						m, cap(p.line), cap(p.data), cap(p.event), len(p.id))
				}
			}
			p.Flush(emit)
			return evs, p
		}
		want, wp := run(data)
		k := int(split) % (len(data) + 1)
		variants := [][][]byte{{data[:k], data[k:]}, {data[:k], nil, data[k:]}}
		if len(data) <= 512 {
			var bytewise [][]byte
			for i := range data {
				bytewise = append(bytewise, data[i:i+1])
			}
			variants = append(variants, bytewise)
		}
		for _, chunks := range variants {
			got, p := run(chunks...)
			if !slices.Equal(got, want) || p.Dropped() != wp.Dropped() || p.Incomplete() != wp.Incomplete() {
				t.Fatalf("split into %d chunks at %d: %d events, %d dropped, incomplete %v; whole: %d, %d, %v",
					len(chunks), k, len(got), p.Dropped(), p.Incomplete(), len(want), wp.Dropped(), wp.Incomplete())
			}
		}
	})
}

// FuzzParseRequest: parsing never panics, the JSON scanner agrees with
// encoding/json, and no data: URL reaches a message.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, which uint8) {
		checkScan(t, data)
		eps := []Endpoint{ChatCompletions, Responses, Completions, Embeddings, Other}
		req, _ := ParseRequest(eps[int(which)%len(eps)], "application/json", data)
		for _, m := range req.Messages {
			if bytes.Contains([]byte(m.Content), []byte("[image: data:")) {
				t.Fatalf("data URL in %q", m.Content)
			}
		}
		_, _ = ParseResponse(eps[int(which)%len(eps)], 200+int(which), "application/json", data)

		// The content-part walker decodes as encoding/json does.
		var want contentPart
		if json.Unmarshal(data, &want) == nil && len(scanJSON(data).keys) == 0 &&
			!bytes.Contains(data, []byte("null")) && bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")) {
			if got := decodePart(data); got != want {
				t.Fatalf("decodePart(%q) = %+v, encoding/json: %+v", data, got, want)
			}
		}
	})
}

// FuzzStreamAssembler: assembling never panics, whether the input is a
// stream or one event's data.
func FuzzStreamAssembler(f *testing.F) {
	f.Add([]byte("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, ep := range []Endpoint{ChatCompletions, Responses, Completions, Other} {
			a := NewStreamAssembler(ep, 8)
			p := NewSSEParser(4096)
			_ = p.Feed(data, a.Add)
			p.Flush(a.Add)
			a.Add(Event{Data: string(data)})
			a.Add(Event{Event: "response.completed", Data: string(data)})
			r := a.Result()
			if len(a.Events()) > 8 || len(r.Choices) > maxStreamChoices {
				t.Fatalf("%d events, %d choices", len(a.Events()), len(r.Choices))
			}
			_, _ = ParseResponse(ep, 200, "text/event-stream", data)
		}
	})
}
