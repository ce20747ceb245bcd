package openai

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// checkScan checks the scanner against encoding/json on b: the same idea of
// well-formed, and a repair that is always well-formed.
func checkScan(t testing.TB, b []byte) {
	sc := scanJSON(b)
	if sc.valid != json.Valid(b) {
		t.Fatalf("scanJSON(%q).valid = %v, json.Valid says %v", b, sc.valid, !sc.valid)
	}
	if sc.cut < 0 || sc.cut > len(b) {
		t.Fatalf("scanJSON(%q).cut = %d", b, sc.cut)
	}
	if !sc.valid && sc.cut == 0 && !sc.inString {
		return
	}
	if fixed := repairJSON(b, &sc); !json.Valid(fixed) {
		t.Fatalf("repairJSON(%q) = %q, not valid JSON", b, fixed)
	}
}

func TestScanJSON(t *testing.T) {
	cases := []string{
		``, ` `, `{}`, `[]`, `{`, `[`, `}`, `{"a"`, `{"a":`, `{"a":1`, `{"a":1,`, `{"a":1,}`, `[1,]`, `[1 2]`,
		`{"a" 1}`, `{1:2}`, `"abc`, `"abc"`, `"a\`, `"a\u12`, `"a\u12g4"`, `"a\x"`, "\"a\x01\"", `"\ud83d"`,
		`-`, `-0`, `01`, `1.`, `1.5`, `1e`, `1e+`, `1e+5`, `-1.5E-3`, `[1e5]`, `[-]`, `[0x1]`,
		`t`, `tru`, `true`, `truex`, `nul`, `null`, `[null,false,true]`, `{"a":nul`, `{"a":[1,2,{"b":"c`,
		`{} {}`, `{}x`, "{}\n", "\t[ 1 , 2 ]\r\n", `{"a":{"b":[[],{}]}}`, `"\u00e9"`, "\"\xff\"",
		`{"\u004dodel":"x","Model":"y","model":"z"}`,
	}
	for _, c := range cases {
		checkScan(t, []byte(c))
		for i := range len(c) { // every prefix: a body cut short anywhere
			checkScan(t, []byte(c[:i]))
		}
	}
}

func TestScanJSONDepth(t *testing.T) {
	for _, depth := range []int{maxDepth - 1, maxDepth, maxDepth + 1} {
		b := []byte(strings.Repeat("[", depth) + strings.Repeat("]", depth))
		checkScan(t, b)
		checkScan(t, b[:depth+1])
	}
}

// TestWireFieldNames: keys are neutralized on the premise that every field
// name of a wire type is lower-case ASCII (see keyNeedsCare).
func TestWireFieldNames(t *testing.T) {
	var check func(reflect.Type, map[reflect.Type]bool)
	check = func(ty reflect.Type, seen map[reflect.Type]bool) {
		for ty.Kind() == reflect.Pointer || ty.Kind() == reflect.Slice {
			ty = ty.Elem()
		}
		if ty.Kind() != reflect.Struct || seen[ty] {
			return
		}
		seen[ty] = true
		for i := range ty.NumField() {
			f := ty.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || strings.ContainsFunc(name, func(r rune) bool { return !(r == '_' || r >= 'a' && r <= 'z') }) {
				t.Errorf("%s.%s: JSON name %q is not lower-case ASCII", ty.Name(), f.Name, name)
			}
			check(f.Type, seen)
		}
	}
	seen := map[reflect.Type]bool{}
	for _, v := range []any{wireRequest{}, wireResponse{}, wireStreamEvent{}, contentPart{}} {
		check(reflect.TypeOf(v), seen)
	}
}
