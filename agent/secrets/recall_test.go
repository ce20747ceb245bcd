package secrets

import (
	"sort"
	"strings"
	"testing"

	"github.com/zricethezav/gitleaks/v8/report"
)

// TestRecallVsGitleaks runs gitleaks' detector (detect.NewDetector over the
// same default configuration, DetectString) and Find on the same inputs:
// every sample in every context, and the corpus of ordinary text. Every
// secret gitleaks finds must be covered by Find's matches.
func TestRecallVsGitleaks(t *testing.T) {
	e, det := engine(t), gitleaksDetector(t)
	var inputs []string
	for _, s := range samples(t) {
		for _, name := range []string{"prose", "code", "json"} {
			inputs = append(inputs, contexts(t, s.text, s.keyword)[name])
		}
	}
	nSamples := len(inputs)
	for _, doc := range corpus(t) {
		inputs = append(inputs, doc.text)
	}
	total, byRule := 0, map[string]int{}
	var missed []string
	for i, text := range inputs {
		ours := e.Find([]byte(text))
		for _, f := range det.DetectString(text) {
			total++
			byRule[f.RuleID]++
			if !coversFinding(ours, text, f) {
				missed = append(missed, f.RuleID+": "+f.Secret)
				if len(missed) <= 20 {
					t.Errorf("input %d: gitleaks finds %s %q, Find does not cover it (matches %v)", i, f.RuleID, f.Secret, ours)
				}
			}
		}
	}
	t.Logf("gitleaks: %d findings (%d inputs with samples, %d corpus documents, %d rules); Find covers %d (recall %.4f)",
		total, nSamples, len(inputs)-nSamples, len(byRule), total-len(missed), float64(total-len(missed))/float64(max(total, 1)))
	gitleaksRules := gitleaksRuleIDs(t)
	var silent []string
	for id, r := range gitleaksRules {
		if byRule[id] == 0 && r.Regex != nil {
			silent = append(silent, id)
		}
	}
	sort.Strings(silent)
	t.Logf("gitleaks rules that found none of their samples (path rules are not run by DetectString): %s", strings.Join(silent, ", "))
}

// coversFinding reports whether some occurrence of the finding's secret in
// text is covered by ms.
func coversFinding(ms []Match, text string, f report.Finding) bool {
	if f.Secret == "" {
		return true
	}
	for from := 0; ; {
		i := strings.Index(text[from:], f.Secret)
		if i < 0 {
			return false
		}
		at := from + i
		if covered(ms, at, at+len(f.Secret)) {
			return true
		}
		from = at + 1
	}
}
