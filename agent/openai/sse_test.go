package openai

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// parseAll feeds chunks to a new parser and returns its events, the number
// of errors Feed returned, and what Incomplete said after Flush.
func parseAll(maxEvent int, chunks ...[]byte) (evs []Event, errs int, p *SSEParser) {
	p = NewSSEParser(maxEvent)
	emit := func(e Event) { evs = append(evs, e) }
	for _, c := range chunks {
		if err := p.Feed(c, emit); err != nil {
			errs++
		}
	}
	p.Flush(emit)
	return evs, errs, p
}

func TestSSESpec(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		want       []Event
		incomplete bool
	}{
		{"LF", "data: a\n\n", []Event{{Data: "a"}}, false},
		{"CRLF", "data: a\r\n\r\n", []Event{{Data: "a"}}, false},
		{"CR", "data: a\r\r", []Event{{Data: "a"}}, false},
		{"mixed endings", "data: a\r\ndata: b\rdata: c\n\r\n", []Event{{Data: "a\nb\nc"}}, false},
		{"BOM", "\xEF\xBB\xBFdata: a\n\n", []Event{{Data: "a"}}, false},
		{"second BOM is data", "\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\n", nil, false},
		{"partial BOM is data", "\xEF\xBBdata: a\n\n", nil, false},
		{"no space after colon", "data:a\n\n", []Event{{Data: "a"}}, false},
		{"only one space dropped", "data:  a \n\n", []Event{{Data: " a "}}, false},
		{"field without colon", "data\n\n", []Event{{Data: ""}}, false},
		{"empty data twice", "data\ndata\n\n", []Event{{Data: "\n"}}, false},
		{"no data, no event", "event: ping\n\n", nil, false},
		{"event and id", "event: response.created\nid: 7\ndata: {}\n\n", []Event{{Event: "response.created", ID: "7", Data: "{}"}}, false},
		{"id persists, event type does not", "event: x\nid: 1\ndata: a\n\ndata: b\n\n",
			[]Event{{Event: "x", ID: "1", Data: "a"}, {ID: "1", Data: "b"}}, false},
		{"id with NUL ignored", "id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
			[]Event{{ID: "1", Data: "a"}, {ID: "1", Data: "b"}}, false},
		{"empty id resets", "id: 1\ndata: a\n\nid\ndata: b\n\n", []Event{{ID: "1", Data: "a"}, {Data: "b"}}, false},
		{"retry digits only", "retry: 1500\ndata: a\n\nretry: 15x\ndata: b\n\n",
			[]Event{{Retry: 1500, Data: "a"}, {Data: "b"}}, false},
		{"unknown field ignored", "foo: bar\ndata: a\n\n", []Event{{Data: "a"}}, false},
		{"comments", ": keep-alive\n:x\ndata: a\n: mid\n\n",
			[]Event{{Comment: true, Data: "keep-alive"}, {Comment: true, Data: "x"}, {Comment: true, Data: "mid"}, {Data: "a"}}, false},
		{"unfinished event discarded", "data: a\n\ndata: b\n", []Event{{Data: "a"}}, true},
		{"unfinished line discarded", "data: a\n\ndata: b", []Event{{Data: "a"}}, true},
		{"trailing CR is a line end", "data: a\n\r", []Event{{Data: "a"}}, false},
		{"empty stream", "", nil, false},
		{"lone BOM start", "\xEF", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, errs, p := parseAll(0, []byte(tt.in))
			if errs != 0 {
				t.Errorf("%d errors", errs)
			}
			sameJSON(t, "events", evs, tt.want)
			if p.Incomplete() != tt.incomplete {
				t.Errorf("Incomplete() = %v, want %v", p.Incomplete(), tt.incomplete)
			}
		})
	}
}

// trickyStream exercises every line ending, comments, a BOM, fields without
// colons and an over-large event.
const trickyStream = "\xEF\xBB\xBF: hello\r\nevent: a\rid: 1\r\ndata: x\n\ndata\r\ndata:  y\r\r" +
	"retry: 10\ndata: zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\n" +
	"data: more\n\n:" + "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\n" +
	"data: lost\n\ndata: after\r\n\r\n" + "data: tail\n"

func streamFixtures(t *testing.T) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob("testdata/streams/*.sse")
	if err != nil || len(files) == 0 {
		t.Fatal("no stream fixtures", err)
	}
	m := map[string][]byte{"tricky": []byte(trickyStream)}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m[filepath.Base(f)] = b
	}
	return m
}

// TestSSEChunkingInvariance: every split point, and random multi-splits,
// give the events of the whole stream.
func TestSSEChunkingInvariance(t *testing.T) {
	for name, in := range streamFixtures(t) {
		t.Run(name, func(t *testing.T) {
			for _, maxEvent := range []int{0, 60, 300} {
				want, wantErrs, wp := parseAll(maxEvent, in)
				if maxEvent == 0 && len(want) == 0 {
					t.Fatal("no events")
				}
				check := func(how string, chunks ...[]byte) {
					got, errs, p := parseAll(maxEvent, chunks...)
					if !slices.Equal(got, want) || errs < min(wantErrs, 1) || p.Dropped() != wp.Dropped() ||
						p.Incomplete() != wp.Incomplete() {
						t.Fatalf("max %d, %s: got %d events (%d errors, %d dropped), want %d (%d errors, %d dropped)",
							maxEvent, how, len(got), errs, p.Dropped(), len(want), wantErrs, wp.Dropped())
					}
				}
				for i := 0; i <= len(in); i++ {
					check("split at "+strconv.Itoa(i), in[:i], in[i:])
				}
				r := rand.New(rand.NewPCG(1, uint64(len(in))))
				for range 200 {
					var chunks [][]byte
					rest := in
					for len(rest) > 0 {
						n := min(len(rest), 1+r.IntN(40))
						chunks = append(chunks, rest[:n])
						rest = rest[n:]
					}
					check("random splits", chunks...)
				}
				bytewise := make([][]byte, len(in))
				for i := range in {
					bytewise[i] = in[i : i+1]
				}
				check("byte by byte", bytewise...)
			}
		})
	}
}

func TestSSETrickyStream(t *testing.T) {
	evs, errs, p := parseAll(60, []byte(trickyStream))
	want := []Event{
		{Comment: true, Data: "hello"},
		{Event: "a", ID: "1", Data: "x"},
		{ID: "1", Data: "\n y"},
		// the "zzz" event is dropped, and so is the long comment and
		// what follows it up to the next blank line
		{ID: "1", Data: "after"},
	}
	sameJSON(t, "events", evs, want)
	if errs != 1 || p.Dropped() != 2 || !p.Incomplete() {
		t.Errorf("errors %d, dropped %d, incomplete %v; want 1, 2, true", errs, p.Dropped(), p.Incomplete())
	}
}

func TestSSEOverflow(t *testing.T) {
	p := NewSSEParser(100)
	var evs []Event
	emit := func(e Event) { evs = append(evs, e) }
	// An endless line: memory must stay bounded.
	if err := p.Feed([]byte("data: "), emit); err != nil {
		t.Fatal(err)
	}
	var errs int
	chunk := []byte(strings.Repeat("A", 1000))
	for range 1000 {
		if err := p.Feed(chunk, emit); err != nil {
			if !errors.Is(err, ErrEventTooLarge) {
				t.Fatal(err)
			}
			errs++
		}
		if cap(p.line) > 100 || cap(p.data) > 100 {
			t.Fatalf("buffers grew to %d and %d", cap(p.line), cap(p.data))
		}
	}
	if errs != 1 {
		t.Errorf("%d errors, want 1", errs)
	}
	// The parser reads on after the next blank line.
	if err := p.Feed([]byte("\ndata: still\n\ndata: ok\n\n"), emit); err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "events", evs, []Event{{Data: "ok"}})
	// Many small data lines add up to one event too large.
	evs = nil
	err := p.Feed([]byte(strings.Repeat("data: 0123456789\n", 20)+"\ndata: next\n\n"), emit)
	if !errors.Is(err, ErrEventTooLarge) {
		t.Errorf("error %v", err)
	}
	sameJSON(t, "events", evs, []Event{{Data: "next"}})
	if p.Dropped() != 2 {
		t.Errorf("dropped %d", p.Dropped())
	}
	// An event of exactly maxEvent bytes of field lines fits.
	evs = nil
	line := "data: " + strings.Repeat("b", 94)
	if err := p.Feed([]byte(line+"\n\n"), emit); err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "events", evs, []Event{{Data: strings.Repeat("b", 94)}})
}
