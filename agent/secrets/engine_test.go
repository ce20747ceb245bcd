package secrets

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"regexp/syntax"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/viper"
	"github.com/zricethezav/gitleaks/v8/config"
)

// TestGitleaksConfigDecode checks that decoding gitleaks' default
// configuration with go-toml gives what viper gives (as gitleaks loads it).
func TestGitleaksConfigDecode(t *testing.T) {
	var viaToml config.ViperConfig
	if err := tomlUnmarshal([]byte(config.DefaultConfig), &viaToml); err != nil {
		t.Fatal(err)
	}
	v := viper.New()
	v.SetConfigType("toml")
	if err := v.ReadConfig(strings.NewReader(config.DefaultConfig)); err != nil {
		t.Fatal(err)
	}
	var viaViper config.ViperConfig
	if err := v.Unmarshal(&viaViper); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(viaToml, viaViper) {
		t.Error("go-toml and viper decode gitleaks' default config differently")
	}
	if len(viaToml.Rules) < 200 {
		t.Errorf("%d rules decoded", len(viaToml.Rules))
	}
}

func TestRules(t *testing.T) {
	e := engine(t)
	rules := e.Rules()
	bySource := map[string]int{}
	for _, r := range rules {
		bySource[r.Source]++
		if len(r.Keywords) == 0 || r.Action != ActionMask {
			t.Errorf("rule %s: keywords %v, action %q", r.ID, r.Keywords, r.Action)
		}
	}
	if !slices.IsSortedFunc(rules, func(a, b RuleInfo) int { return strings.Compare(a.ID, b.ID) }) {
		t.Error("Rules is not sorted by ID")
	}
	t.Logf("%d rules: %v", len(rules), bySource)
	if want := len(gitleaksRuleIDs(t)) - 1; bySource["gitleaks"] != want { // minus the path-only pkcs12-file
		t.Errorf("%d gitleaks rules, want %d", bySource["gitleaks"], want)
	}
	if bySource["promptrail"] != 8 {
		t.Errorf("%d promptrail rules, want 8", bySource["promptrail"])
	}
}

func TestConfig(t *testing.T) {
	const token = "ghp_0123456789abcdefghijABCDEFGHIJ012345"
	text := []byte("see " + token + "\n")
	for _, tc := range []struct {
		name    string
		text    string // default "see <token>"
		cfg     Config
		wantErr string
		found   []string // rule IDs Find reports on text
		action  map[string]Action
	}{
		{name: "default", found: []string{"github-pat"}, action: map[string]Action{"github-pat": ActionMask, "nope": ActionMask}},
		{name: "specific over generic", text: "my token: " + token + "\n", found: []string{"github-pat"}},
		{name: "disabled", cfg: Config{DisabledRules: []string{"github-pat"}}, found: nil},
		{name: "unknown disabled", cfg: Config{DisabledRules: []string{"no-such-rule"}}, wantErr: `disabled rule "no-such-rule"`},
		{name: "allowlist", cfg: Config{Allowlist: []string{`^ghp_0123`}}, found: nil},
		{name: "bad allowlist", cfg: Config{Allowlist: []string{`(`}}, wantErr: "allowlist regex"},
		{name: "block", cfg: Config{Actions: map[string]Action{"github-pat": ActionBlock}},
			found: []string{"github-pat"}, action: map[string]Action{"github-pat": ActionBlock}},
		{name: "unknown action rule", cfg: Config{Actions: map[string]Action{"nope": ActionBlock}}, wantErr: `action for rule "nope"`},
		{name: "bad action", cfg: Config{Actions: map[string]Action{"github-pat": "drop"}}, wantErr: `unknown action "drop"`},
		{name: "custom", cfg: Config{CustomRules: []RuleConfig{{ID: "acme", Regex: `acme_[a-z0-9]{12}`, Keywords: []string{"ACME_"}, Action: ActionBlock}}},
			found: []string{"github-pat"}, action: map[string]Action{"acme": ActionBlock}},
		{name: "custom bad regex", cfg: Config{CustomRules: []RuleConfig{{ID: "acme", Regex: `acme_[`, Keywords: []string{"acme"}}}}, wantErr: `rule "acme"`},
		{name: "custom no keywords", cfg: Config{CustomRules: []RuleConfig{{ID: "acme", Regex: `acme_x`}}}, wantErr: "no keywords"},
		{name: "custom duplicate", cfg: Config{CustomRules: []RuleConfig{{ID: "github-pat", Regex: `x`, Keywords: []string{"x"}}}}, wantErr: "duplicate"},
		{name: "custom bad group", cfg: Config{CustomRules: []RuleConfig{{ID: "acme", Regex: `acme(x)`, SecretGroup: 2, Keywords: []string{"acme"}}}}, wantErr: "secret group"},
		{name: "custom bad action", cfg: Config{CustomRules: []RuleConfig{{ID: "acme", Regex: `acme`, Keywords: []string{"acme"}, Action: "x"}}}, wantErr: "unknown action"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := NewEngine(tc.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			in := text
			if tc.text != "" {
				in = []byte(tc.text)
			}
			var got []string
			for _, m := range e.Find(in) {
				got = append(got, m.RuleID)
			}
			if !slices.Equal(got, tc.found) {
				t.Errorf("found %v, want %v", got, tc.found)
			}
			for id, a := range tc.action {
				if e.Action(id) != a {
					t.Errorf("Action(%s) = %q, want %q", id, e.Action(id), a)
				}
			}
		})
	}
}

func TestCustomRuleErrorWraps(t *testing.T) {
	_, err := NewEngine(Config{CustomRules: []RuleConfig{{ID: "acme", Regex: `a(b`, Keywords: []string{"a"}}}})
	var se *syntax.Error
	if !errors.As(err, &se) || !strings.Contains(err.Error(), `"acme"`) {
		t.Errorf("err = %v: want a wrapped *syntax.Error naming the rule", err)
	}
}

// TestCustomRules checks a custom rule whose matches start with its keyword
// and one whose keyword is only next to its matches.
func TestCustomRules(t *testing.T) {
	e, err := NewEngine(Config{CustomRules: []RuleConfig{
		{ID: "acme-key", Regex: `acme_(?:live|test)_[a-z0-9]{16}`, Keywords: []string{"acme_live", "acme_test"}},
		{ID: "employee-ssn", Regex: `\b(\d{3}-\d{2}-\d{4})\b`, SecretGroup: 1, Keywords: []string{"ssn"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		text, want string
	}{
		{"key acme_live_0123456789abcdef here", "acme_live_0123456789abcdef"},
		{"SSN: 123-45-6789.", "123-45-6789"},
		{"123-45-6789 (ssn)", "123-45-6789"},
		{"call 123-45-6789 now, it is a phone number, not anyone's ssn, promise.", ""},
		{"order 123-45-6789", ""},
	} {
		var got string
		for _, m := range e.Find([]byte(tc.text)) {
			got = tc.text[m.Start:m.End]
		}
		if got != tc.want {
			t.Errorf("Find(%q) = %q, want %q", tc.text, got, tc.want)
		}
	}
	// A number at the end may be followed by "ssn": it is held.
	if text := "the number is 123-45-6789"; e.Pending([]byte(text)) > strings.Index(text, "123") {
		t.Errorf("Pending(%q) = %d: the number could still become a secret", text, e.Pending([]byte(text)))
	}
	if text := "ssn: 123-4"; e.Pending([]byte(text)) > 0 {
		t.Errorf("Pending(%q) = %d, want the keyword held", text, e.Pending([]byte(text)))
	}
}

// TestKelvinSign checks that keywords are found when spelled with U+212A
// for k (Go's (?i) matches it, and gitleaks lower-cases it to k).
func TestKelvinSign(t *testing.T) {
	text := "api_\u212aey = \"Zx8Qm2Lp7Vw4Rt9Yb3Nc6Hd1\"\n"
	ms := engine(t).Find([]byte(text))
	if len(ms) != 1 || text[ms[0].Start:ms[0].End] != "Zx8Qm2Lp7Vw4Rt9Yb3Nc6Hd1" {
		t.Errorf("Find(%q) = %v", text, ms)
	}
	if fs := gitleaksDetector(t).DetectString(text); len(fs) != 1 {
		t.Errorf("gitleaks finds %d", len(fs))
	}
}

// TestScanQuarters checks the four-way keyword scan against a plain one.
func TestScanQuarters(t *testing.T) {
	ix := engine(t).index
	rng := rand.New(rand.NewPCG(1, 2))
	words := []string{"token", "key", "ghp_", "ey", "s.", " ", "x", "\n", "AKIA", "secret", "pat", "://"}
	for range 50 {
		var sb strings.Builder
		for sb.Len() < 5000+rng.IntN(20000) {
			sb.WriteString(words[rng.IntN(len(words))])
		}
		text := []byte(sb.String())
		var a, b [][3]int
		ix.scan4(text, func(s, e, k int) { a = append(a, [3]int{s, e, k}) })
		ix.scanRange(text, 0, 0, len(text), func(s, e, k int) { b = append(b, [3]int{s, e, k}) })
		cmp := func(x, y [3]int) int { return slices.Compare(x[:], y[:]) }
		slices.SortFunc(a, cmp)
		slices.SortFunc(b, cmp)
		if !slices.Equal(a, b) {
			t.Fatalf("scan4 found %d hits, a plain scan %d", len(a), len(b))
		}
	}
}
