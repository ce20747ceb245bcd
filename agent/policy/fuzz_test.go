package policy

import (
	"strings"
	"testing"
)

// FuzzParse: any file either loads or is refused with an error; a loaded
// one decides without panicking, and its version is stable.
func FuzzParse(f *testing.F) {
	f.Add([]byte("rules:\n  - {name: a, when: 'request.model == \"x\"', action: block}\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		p, err := Parse(strings.NewReader(string(src)))
		if err != nil {
			if p != nil {
				t.Fatal("a policy with an error")
			}
			return
		}
		q, err := Parse(strings.NewReader(string(src)))
		if err != nil || q.Version() != p.Version() {
			t.Fatalf("second parse: %v, version %s then %s", err, p.Version(), q.Version())
		}
		for _, in := range []Input{{}, exampleInput()} {
			d := p.Decide(&in)
			switch d.Action {
			case Allow, Mask, Block:
			default:
				t.Fatalf("action %q", d.Action)
			}
		}
	})
}
