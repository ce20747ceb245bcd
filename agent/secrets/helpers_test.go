package secrets

import (
	"bufio"
	"encoding/json"
	"os"
	"regexp/syntax"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/zricethezav/gitleaks/v8/config"
	"github.com/zricethezav/gitleaks/v8/detect"
)

// testEngine is the default engine, shared by the tests.
var testEngine = sync.OnceValues(func() (*Engine, error) { return NewEngine(Config{}) })

func engine(t testing.TB) *Engine {
	t.Helper()
	e, err := testEngine()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// gitleaksDetector returns gitleaks' detector over the same configuration
// (detect.NewDetector(cfg), as gitleaks builds it).
func gitleaksDetector(t testing.TB) *detect.Detector {
	t.Helper()
	cfg, err := gitleaksConfig()
	if err != nil {
		t.Fatal(err)
	}
	return detect.NewDetector(cfg)
}

// aloneEngine returns an engine with only the built-in rule id.
func aloneEngine(t testing.TB, id string) *Engine {
	t.Helper()
	var off []string
	for _, r := range engine(t).rules {
		if r.id != id {
			off = append(off, r.id)
		}
	}
	e, err := NewEngine(Config{DisabledRules: off})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// contexts embeds a secret in prose, code and the decoded content of a
// chat request (JSON), each mentioning kw (gitleaks needs a rule's keyword
// somewhere in the text even when the match does not contain it).
func contexts(t testing.TB, sample, kw string) map[string]string {
	t.Helper()
	body, err := json.Marshal(map[string]any{
		"model": "gpt-4o",
		"messages": []map[string]string{{
			"role":    "user",
			"content": "Why does my " + kw + " setup fail? This is the config:\n\n" + sample + "\n\nThanks!",
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var req struct {
		Messages []struct{ Content string } `json:"messages"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"prose": "Hi team, the " + kw + " deploy to staging failed again last night. I copied this from the logs: " +
			sample + " and then the job exited with status 1. Can someone rotate it before the demo?\n",
		"code": "package main\n\nimport \"os\"\n\n// Settings for the " + kw + " client.\nfunc main() {\n\tcfg := `" +
			sample + "`\n\t_ = cfg\n\tos.Exit(0)\n}\n",
		"json": req.Messages[0].Content,
	}
}

// handSamples reads testdata/samples.txt: "rule-id<TAB>sample" lines, the
// sample as a Go string literal; for rules whose generated samples would
// be unrealistic.
func handSamples(t testing.TB) map[string]string {
	t.Helper()
	f, err := os.Open("testdata/samples.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, lit, ok := strings.Cut(line, "\t")
		s, err := strconv.Unquote(lit)
		if !ok || err != nil {
			t.Fatalf("testdata/samples.txt: bad line %q", line)
		}
		out[id] = s
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// sample is a secret for a rule and where the rule alone finds it in each
// context.
type sample struct {
	rule, text, keyword string
	hand                bool
}

// samples returns a sample for every rule of the default engine: the hand
// written one, or the first generated one that the rule alone finds in all
// contexts. Rules without a sample are reported as errors. The samples are
// computed once.
func samples(t *testing.T) []sample {
	t.Helper()
	res := sampleSet(t)
	for _, id := range res.missing {
		t.Errorf("rule %s: no sample (none generated, none in testdata/samples.txt)", id)
	}
	return res.samples
}

type sampleResult struct {
	samples []sample
	missing []string
}

var sampleCache struct {
	once sync.Once
	res  sampleResult
}

func sampleSet(t *testing.T) sampleResult {
	sampleCache.once.Do(func() { sampleCache.res = makeSamples(t) })
	return sampleCache.res
}

func makeSamples(t *testing.T) sampleResult {
	hand := handSamples(t)
	var res sampleResult
	for _, r := range engine(t).rules {
		kw := firstKeyword(r)
		if s, ok := hand[r.id]; ok {
			res.samples = append(res.samples, sample{rule: r.id, text: s, keyword: kw, hand: true})
			continue
		}
		alone := aloneEngine(t, r.id)
		tree, err := syntax.Parse(r.regex, syntax.Perl)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for seed := uint64(1); seed <= 300 && !found; seed++ {
			s := newSampleGen(seed).generate(tree)
			if foundInAll(t, alone, s, kw) {
				res.samples = append(res.samples, sample{rule: r.id, text: s, keyword: kw})
				found = true
			}
		}
		if !found {
			res.missing = append(res.missing, r.id)
		}
	}
	return res
}

// firstKeyword is the rule's first keyword in its configuration.
func firstKeyword(r *rule) string { return r.keywords[0] }

// foundInAll reports whether e finds a secret inside s in every context.
func foundInAll(t testing.TB, e *Engine, s, kw string) bool {
	for _, text := range contexts(t, s, kw) {
		if _, ok := secretIn(e, text, s); !ok {
			return false
		}
	}
	return true
}

// secretIn returns the match of e that lies within the occurrence of s in
// text.
func secretIn(e *Engine, text, s string) (Match, bool) {
	at := strings.Index(text, s)
	if at < 0 {
		return Match{}, false
	}
	for _, m := range e.Find([]byte(text)) {
		if m.Start >= at && m.End <= at+len(s) && m.End > m.Start {
			return m, true
		}
	}
	return Match{}, false
}

// covered reports whether every byte of text[a:b] is inside some match.
func covered(ms []Match, a, b int) bool {
	for _, m := range ms {
		if m.Start <= a && a < m.End {
			a = m.End
		}
		if a >= b {
			return true
		}
	}
	return a >= b
}

// gitleaksRuleIDs returns the IDs of gitleaks' default rules.
func gitleaksRuleIDs(t testing.TB) map[string]config.Rule {
	cfg, err := gitleaksConfig()
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Rules
}
