package secrets

import (
	"fmt"
	"sync"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/zricethezav/gitleaks/v8/config"
)

// builtinSet is the compiled built-in rules.
type builtinSet struct {
	rules      []*rule
	byID       map[string]*rule
	allowlists []*config.Allowlist // gitleaks' global allowlists
}

// builtinRules compiles the built-in rules once per process; engines copy
// the rules (compiled regexps are safe for concurrent use).
var builtinRules = sync.OnceValues(compileBuiltin)

func compileBuiltin() (*builtinSet, error) {
	cfg, err := gitleaksConfig()
	if err != nil {
		return nil, err
	}
	specs := gitleaksSpecs(cfg)
	specs = append(specs, promptrailSpecs()...)
	set := &builtinSet{byID: map[string]*rule{}, allowlists: contentAllowlists(cfg.Allowlists)}
	for _, s := range specs {
		r, err := compileRule(s)
		if err != nil {
			return nil, err
		}
		if set.byID[r.id] != nil {
			return nil, fmt.Errorf("secrets: rule %q defined twice", r.id)
		}
		set.rules = append(set.rules, r)
		set.byID[r.id] = r
	}
	return set, nil
}

// gitleaksConfig loads gitleaks' embedded default configuration the way
// gitleaks does (detect.NewDetectorDefaultConfig: decode the TOML into a
// config.ViperConfig, then ViperConfig.Translate), except that the TOML is
// decoded with go-toml, which viper itself uses, instead of through viper's
// process-wide instance. TestGitleaksConfigDecode checks that both decode
// the same.
func gitleaksConfig() (config.Config, error) {
	var vc config.ViperConfig
	if err := tomlUnmarshal([]byte(config.DefaultConfig), &vc); err != nil {
		return config.Config{}, fmt.Errorf("secrets: decoding gitleaks' default config: %w", err)
	}
	cfg, err := vc.Translate()
	if err != nil {
		return config.Config{}, fmt.Errorf("secrets: gitleaks' default config: %w", err)
	}
	return cfg, nil
}

// tomlUnmarshal decodes TOML.
func tomlUnmarshal(data []byte, v any) error { return toml.Unmarshal(data, v) }

// wholeMatchRule reports whether id is a gitleaks rule without a secret
// group whose first non-empty capture group, which gitleaks reports as the
// secret, is only a fragment of the token: the engine masks the whole match
// of such rules (entropy and allowlists still see gitleaks' secret).
func wholeMatchRule(id string) bool {
	switch id {
	case "jwt-base64", // named groups for the header's first field
		"microsoft-teams-webhook": // ([a-z0-9]{4}-){3} inside UUIDs
		return true
	}
	return false
}

// gitleaksSpecs converts gitleaks' rules, in the configuration's order.
// Rules with only a path pattern (pkcs12-file) are dropped: a text has no
// path. Rules with a path and a regex are kept with the path ignored
// (gitleaks' DetectString, given no path, reports nothing for them).
func gitleaksSpecs(cfg config.Config) []ruleSpec {
	var out []ruleSpec
	for _, r := range cfg.GetOrderedRules() {
		if r.Regex == nil || r.SkipReport {
			continue
		}
		out = append(out, ruleSpec{
			id: r.RuleID, description: r.Description, source: sourceGitleaks,
			re: r.Regex, secretGroup: r.SecretGroup, entropy: r.Entropy,
			keywords: r.Keywords, allowlists: contentAllowlists(r.Allowlists),
			wholeMatch: wholeMatchRule(r.RuleID),
		})
	}
	return out
}

// contentAllowlists keeps the allowlists that can apply to a text without
// a path or a commit: those with regexes or stop words, unless they require
// (condition AND) a path or commit to match too.
func contentAllowlists(in []*config.Allowlist) []*config.Allowlist {
	var out []*config.Allowlist
	for _, a := range in {
		if len(a.Regexes) == 0 && len(a.StopWords) == 0 {
			continue
		}
		if a.MatchCondition == config.AllowlistMatchAnd && (len(a.Paths) > 0 || len(a.Commits) > 0) {
			continue
		}
		out = append(out, a)
	}
	return out
}

// placeholder matches values that stand for a secret rather than being one:
// template variables and the like.
const placeholder = `^(?:\{[^{}]*\}|\{\{[^{}]*\}\}|\$\{[^{}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|%\([^()]*\)s|%s|<[^<>]*>|\*+|x+|X+|\.\.\.)$`

// placeholderAllowlist is the allowlist of most promptrail rules.
func placeholderAllowlist() []*config.Allowlist {
	return []*config.Allowlist{allowlistOf("placeholders", placeholder)}
}
