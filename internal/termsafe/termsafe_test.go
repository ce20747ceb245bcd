package termsafe

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// hostile are record contents that act on a terminal when printed raw.
var hostile = []struct {
	name, in, want string
}{
	{"plain text", "Summarise the quarterly numbers", "Summarise the quarterly numbers"},
	{"non-ASCII text", "naïve café, 東京, emoji 🙂", "naïve café, 東京, emoji 🙂"},
	{"ANSI clear screen", "\x1b[2J\x1b[Hall clear", `\x1b[2J\x1b[Hall clear`},
	{"cursor up and erase line", "ok\x1b[1A\x1b[2Kforged line", `ok\x1b[1A\x1b[2Kforged line`},
	{"colour hides text", "\x1b[8mhidden\x1b[0m", `\x1b[8mhidden\x1b[0m`},
	{"carriage return overwrites", "rm -rf /\rls -l    ", `rm -rf /\x0dls -l    `},
	{"newline forges a row", "hi\n2026-12-04 12:00:00  01J… allow", `hi\x0a2026-12-04 12:00:00  01J… allow`},
	{"backspaces", "secret\b\b\b\b\b\bpublic", `secret\x08\x08\x08\x08\x08\x08public`},
	{"OSC 8 hyperlink", "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\", `\x1b]8;;https://evil.example\x1b\click\x1b]8;;\x1b\`},
	{"OSC title with BEL", "\x1b]0;owned\x07", `\x1b]0;owned\x07`},
	{"C1 CSI", "\u009b2J", `\u009b2J`},
	{"C1 next line", "a\u0085b", `a\u0085b`},
	{"DEL", "a\x7fb", `a\x7fb`},
	{"NUL", "a\x00b", `a\x00b`},
	{"bidi override", "invoice\u202egpj.exe", `invoice\u202egpj.exe`},
	{"bidi embeddings", "\u202a\u202b\u202c\u202d", `\u202a\u202b\u202c\u202d`},
	{"bidi isolates", "\u2066a\u2067b\u2068c\u2069", `\u2066a\u2067b\u2068c\u2069`},
	{"bidi marks", "\u200e\u200f\u061c", `\u200e\u200f\u061c`},
	{"line separator", "a\u2028b\u2029c", `a\u2028b\u2029c`},
	{"raw C1 byte, not UTF-8", "a\x9b2Jb", `a\x9b2Jb`},
	{"invalid UTF-8", "\xff\xfe", `\xff\xfe`},
}

func TestString(t *testing.T) {
	for _, tt := range hostile {
		t.Run(tt.name, func(t *testing.T) {
			if got := String(tt.in); got != tt.want {
				t.Errorf("String(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestJSONStaysTheSameJSON(t *testing.T) {
	for _, tt := range hostile {
		t.Run(tt.name, func(t *testing.T) {
			v := map[string]any{"prompt": tt.in, "list": []string{tt.in, "x"}}
			compact, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			indented, _ := json.MarshalIndent(v, "", "\t")
			for _, raw := range [][]byte{compact, indented} {
				safe := JSON(raw)
				if c := firstUnsafe(strings.NewReplacer("\n", "", "\t", "").Replace(string(safe))); c != "" {
					t.Errorf("JSON(%s) = %s keeps %q", raw, safe, c)
				}
				var back, want any
				if err := json.Unmarshal(safe, &back); err != nil {
					t.Fatalf("JSON made invalid JSON: %v: %s", err, safe)
				}
				json.Unmarshal(raw, &want)
				if !reflect.DeepEqual(back, want) {
					t.Errorf("JSON changed the value: %v, want %v", back, want)
				}
			}
		})
	}
}

// firstUnsafe returns the first character of s that a terminal may act
// on, or "".
func firstUnsafe(s string) string {
	for i, r := range s {
		if unsafe(r) || r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD") {
			return string(r)
		}
	}
	return ""
}

func FuzzString(f *testing.F) {
	for _, tt := range hostile {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := String(s)
		if c := firstUnsafe(out); c != "" || !utf8.ValidString(out) {
			t.Fatalf("String(%q) = %q keeps %q (valid UTF-8 %v)", s, out, c, utf8.ValidString(out))
		}
		if !needsEscape(s) && out != s {
			t.Fatalf("String changed safe text %q to %q", s, out)
		}
	})
}

func FuzzJSON(f *testing.F) {
	for _, tt := range hostile {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		raw, _ := json.MarshalIndent([]string{s}, "", " ")
		safe := JSON(raw)
		if c := firstUnsafe(strings.ReplaceAll(string(safe), "\n", "")); c != "" {
			t.Fatalf("JSON(%s) = %s keeps %q", raw, safe, c)
		}
		var a, b []string
		if err := json.Unmarshal(safe, &a); err != nil {
			t.Fatalf("invalid JSON %s: %v", safe, err)
		}
		json.Unmarshal(raw, &b)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("value changed: %q, want %q", a, b)
		}
	})
}
