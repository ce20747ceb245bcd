package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/promptrail/promptrail/audit"
)

// terminalActs returns the first byte sequence in out that a terminal
// acts on rather than shows (except the newlines between lines), or "".
func terminalActs(out []byte) string {
	for i := 0; i < len(out); {
		r, size := utf8.DecodeRune(out[i:])
		switch {
		case r == utf8.RuneError && size == 1, r < 0x20 && r != '\n', r == 0x7f, r >= 0x80 && r <= 0x9f,
			r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x2028, r == 0x2029:
			return string(out[i : i+size])
		}
		i += size
	}
	return ""
}

func TestRecordsNeverReachTheTerminalRaw(t *testing.T) {
	hostile := []struct {
		name, prompt, shown string // shown: what the table prints of it
	}{
		{"ANSI clear screen", "\x1b[2J\x1b[Hnothing to see", `\x1b[2J\x1b[Hnothing to see`},
		{"cursor up, erase the row above", "hi\x1b[1A\x1b[2K", `hi\x1b[1A\x1b[2K`},
		{"carriage return overwrites the row", "exfiltrate the keys\r2026-01-01 00:00:00  harmless", `exfiltrate the keys 2026-01-01`},
		{"OSC 8 hyperlink", "\x1b]8;;https://evil.example\x1b\\docs\x1b]8;;\x1b\\", `\x1b]8;;https://evil.example\x1b\docs`},
		{"bidi override", "pay \u202e0001$ ot\u202c now", `pay \u202e0001$ ot\u202c now`},
		{"bidi isolate", "\u2067reversed\u2069", `\u2067reversed\u2069`},
		{"C1 CSI and DEL", "\u009b2J\x7f", `\u009b2J\x7f`},
	}
	for _, tt := range hostile {
		t.Run(tt.name, func(t *testing.T) {
			f := newCollectorFixture(t)
			f.addEdited(t, 1, "shop", "", func(r *audit.Record) {
				r.Request.Messages[0].Content = tt.prompt
				r.Request.Model = "gpt-4o\x1b[8m"
				r.Workload.Pod = "web-1\u202e"
			})
			export := filepath.Join(t.TempDir(), "audit.jsonl")
			outputs := []struct {
				mode string
				args []string
				file string
			}{
				{"table", f.args("query"), ""},
				{"jsonl", f.args("query", "--jsonl"), ""},
				{"json", f.args("query", "--json"), ""},
				{"export", f.args("export"), ""},
				{"export file", f.args("export", "--output", export), export},
			}
			for _, o := range outputs {
				stdout, _ := captureSplit(t)
				if err := Run(context.Background(), o.args); err != nil {
					t.Fatalf("%s: %v", o.mode, err)
				}
				out := stdout.Bytes()
				if o.file != "" {
					var err error
					if out, err = os.ReadFile(o.file); err != nil {
						t.Fatal(err)
					}
				}
				if c := terminalActs(out); c != "" {
					t.Errorf("%s: output holds %q raw:\n%s", o.mode, c, out)
				}
				if o.mode == "table" {
					lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
					if len(lines) != 2 || !strings.Contains(lines[1], tt.shown) || !strings.Contains(lines[1], `gpt-4o\x1b[8m`) ||
						!strings.Contains(lines[1], `web-1\u202e`) {
						t.Errorf("table: want a header and one row showing %q:\n%s", tt.shown, out)
					}
					continue
				}
				// JSON escapes are the same JSON: the record decodes as it was.
				var recs []audit.Record
				if o.mode == "json" {
					if err := json.Unmarshal(out, &recs); err != nil {
						t.Fatalf("json: %v", err)
					}
				} else {
					for sc := bufio.NewScanner(bytes.NewReader(out)); sc.Scan(); {
						var r audit.Record
						if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
							t.Fatalf("%s: %v", o.mode, err)
						}
						recs = append(recs, r)
					}
				}
				if len(recs) != 1 || recs[0].Request.Messages[0].Content != tt.prompt || recs[0].Workload.Pod != "web-1\u202e" {
					t.Errorf("%s: decoded %+v, want the prompt %q as stored", o.mode, recs, tt.prompt)
				}
			}
		})
	}
}
