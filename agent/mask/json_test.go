package mask

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestJSON(t *testing.T) {
	type want struct{ rule, path string }
	tests := []struct {
		file      string
		findings  []want
		untouched bool // byte-identical output
	}{
		{"chat_pem.json", []want{{"private-key", "$.messages[1].content"}}, false},
		{"chat_escape.json", []want{{"openai-key", "$.messages[0].content"}, {"aws-access-key", "$.messages[0].content"}}, false},
		{"chat_clean.json", nil, true},
		{"tools.json", []want{
			{"aws-access-key", "$.messages[0].content[0].text"},
			{"openai-key", "$.messages[1].tool_calls[0].function.arguments"},
			{"openai-key", "$.metadata['note key']"},
			{"openai-key", `$.metadata['a\'b'][1]`},
		}, false},
		{"secret_key.json", []want{
			{"openai-key", "$.metadata['[MASKED:openai-key:"}, // the key
			{"openai-key", "$.metadata['[MASKED:openai-key:"}, // its value
			{"aws-access-key", "$.s[0][0][0]"},
		}, false},
		{"scalar_string.json", []want{{"aws-access-key", "$"}}, false},
	}
	m := newTestMasker(1 << 16)
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", "json", tt.file)
			doc, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			got, fs, err := m.JSON("request", doc)
			if err != nil {
				t.Fatal(err)
			}
			if tt.untouched != bytes.Equal(got, doc) {
				t.Errorf("output byte-identical: %v, want %v", bytes.Equal(got, doc), tt.untouched)
			}
			if !tt.untouched {
				golden(t, strings.TrimSuffix(path, ".json")+".golden", got)
			}
			checkJSONMasked(t, m, doc, got)
			checkNoSecret(t, got, jsonSecrets(t, m.d, doc, true))
			if len(fs) != len(tt.findings) {
				t.Fatalf("findings %+v\nwant %+v", fs, tt.findings)
			}
			for i, f := range fs {
				w := tt.findings[i]
				if f.Rule != w.rule || !strings.HasPrefix(f.Path, w.path) || f.Where != "request" || f.Count != 1 {
					t.Errorf("finding %+v, want rule %s at %s", f, w.rule, w.path)
				}
				checkNoSecret(t, []byte(f.Path), jsonSecrets(t, m.d, doc, true))
			}
		})
	}
}

// checkJSONMasked checks that out is valid JSON that decodes to doc with
// every string value masked as Text masks it.
func checkJSONMasked(t *testing.T, m *Masker, doc, out []byte) {
	t.Helper()
	if !json.Valid(out) {
		t.Fatalf("output is not valid JSON:\n%s", out)
	}
	in, got := decodeAny(t, doc), decodeAny(t, out)
	want := maskTree(m, in)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded output\n%#v\nwant\n%#v", got, want)
	}
}

func decodeAny(t *testing.T, doc []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decoding %q: %v", doc, err)
	}
	return v
}

// maskTree masks every string value of a decoded document with Text.
func maskTree(m *Masker, v any) any {
	switch v := v.(type) {
	case string:
		out, _ := m.Text("", "", []byte(v))
		return string(out)
	case []any:
		for i := range v {
			v[i] = maskTree(m, v[i])
		}
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			mk, _ := m.Text("", "", []byte(k))
			out[string(mk)] = maskTree(m, e)
		}
		return out
	}
	return v
}

// jsonSecrets returns the secrets in the string values of doc, and in its
// object keys if keys is set.
func jsonSecrets(t *testing.T, d Detector, doc []byte, keys bool) [][]byte {
	var out [][]byte
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			out = append(out, secretsOf(d, []byte(v))...)
		case []any:
			for _, e := range v {
				walk(e)
			}
		case map[string]any:
			for k, e := range v {
				if keys {
					out = append(out, secretsOf(d, []byte(k))...)
				}
				walk(e)
			}
		}
	}
	walk(decodeAny(t, doc))
	return out
}

func TestJSONInvalid(t *testing.T) {
	sk := "sk-abcdefghijklmnopqrstuvwxyz0123456789"
	m := newTestMasker(1 << 16)
	for _, doc := range []string{
		`{"messages":[{"content":"` + sk + `"}]`,
		`{"a":"` + sk + `",}`,
		``,
		`nul`,
		`{"a":1} {"b":2}`,
		`"` + sk + "\x01\"",
	} {
		got, fs, err := m.JSON("request", []byte(doc))
		if !errors.Is(err, ErrInvalidJSON) {
			t.Errorf("%q: error %v, want ErrInvalidJSON", doc, err)
		}
		want, wantFs := m.Text("request", "", []byte(doc))
		if !bytes.Equal(got, want) || !slices.Equal(fs, wantFs) {
			t.Errorf("%q: masked %q %+v, want %q %+v", doc, got, fs, want, wantFs)
		}
		checkNoSecret(t, got, [][]byte{[]byte(sk)})
	}
}

func TestDecodeString(t *testing.T) {
	for _, raw := range []string{
		``, `plain`, `a\"b\\c\/d\b\f\n\r\t`, `caf\u00e9`, `\ud83d\ude00!`, `\ud83d`, `\ude00x`,
		`\ud83d\u0041`, `\u0000\u001f\u007f`, `\u2028\uFFFF`, `é😀`,
	} {
		var want string
		if err := json.Unmarshal([]byte(`"`+raw+`"`), &want); err != nil {
			t.Fatal(err)
		}
		var off []int
		got := decodeString(nil, []byte(raw), &off)
		if string(got) != want {
			t.Errorf("decodeString(%q) = %q, want %q", raw, got, want)
		}
		if len(off) != len(got)+1 || off[0] > 0 || off[len(got)] != len(raw) {
			t.Fatalf("decodeString(%q): offsets %v", raw, off)
		}
		// Every split of the decoded string re-encodes to the same decoding.
		for a := 0; a <= len(got); a++ {
			enc := appendSegment(nil, []byte(raw), got, off, 0, a)
			enc = appendSegment(enc, []byte(raw), got, off, a, len(got))
			var back string
			if err := json.Unmarshal([]byte(`"`+string(enc)+`"`), &back); err != nil || back != want && utf8Valid(got) {
				t.Errorf("%q split at %d: %q decodes to %q (%v)", raw, a, enc, back, err)
			}
		}
	}
}

func utf8Valid(b []byte) bool { return string([]rune(string(b))) == string(b) }
