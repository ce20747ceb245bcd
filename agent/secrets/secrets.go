// Package secrets finds credentials in text: API keys, tokens, passwords in
// connection URLs, Authorization header values, private keys. Its rules are
// gitleaks' default configuration (github.com/zricethezav/gitleaks/v8,
// config.DefaultConfig, read at run time), rules that gitleaks lacks
// (promptrail.go) and custom rules from the agent configuration.
//
// An Engine evaluates a rule's regular expression only near occurrences of
// the rule's keywords, which an Aho-Corasick automaton finds in one pass
// over the text (keywords.go): the regex is split into the part before the
// keyword and the part from it (compile.go), the latter is tried anchored
// at each hit, and the whole regex then runs in a small window (find.go).
// Ordinary prose and code are scanned at around 100 MB/s or more per core
// (BenchmarkFind; gitleaks' detector runs at 1 to 3 MB/s). Find
// reports at least what gitleaks' detector (detect.DetectString) reports
// on the same text, with the same entropy thresholds and allowlists, and
// Pending tells a streaming masker how much of a text it may release
// before the rest has arrived (pending.go).
//
// An Engine is safe for concurrent use.
package secrets

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"sync"

	"github.com/zricethezav/gitleaks/v8/config"
)

// Match is a secret found in a text.
type Match struct {
	RuleID string
	// Start and End are the byte offsets of the secret in the text: the
	// part to mask (for rules with a secret group, just that group).
	Start, End int
}

// Action is what a rule asks the agent to do with a request that contains
// one of its secrets.
type Action string

// Actions.
const (
	ActionMask  Action = "mask"  // mask the secret and let the request through
	ActionBlock Action = "block" // refuse the request
)

// Rule sources (RuleInfo.Source).
const (
	sourceGitleaks   = "gitleaks"
	sourcePromptrail = "promptrail"
	sourceCustom     = "custom"
)

// RuleConfig is a custom rule from the agent configuration.
type RuleConfig struct {
	// ID names the rule in matches and findings; it must be non-empty and
	// unique.
	ID string
	// Description is shown by Rules; empty is allowed.
	Description string
	// Regex is a Go regular expression (RE2 syntax); it must not be empty.
	Regex string
	// SecretGroup is the capture group that holds the secret; zero means
	// the first non-empty group if the regex has groups, else the whole
	// match (as in gitleaks).
	SecretGroup int
	// Entropy is the Shannon entropy (bits per byte) the secret must
	// exceed; zero disables the check.
	Entropy float64
	// Keywords are lower-case literals that every match contains or is
	// right next to (within 32 bytes); at least one is required. If every
	// match starts with one of them the rule is evaluated at the keyword;
	// otherwise near it.
	Keywords []string
	// Action is ActionMask or ActionBlock; empty means ActionMask.
	Action Action
}

// Config configures an Engine. The zero Config ships the built-in rules
// with the mask action.
type Config struct {
	// DisabledRules are IDs of rules to drop; an unknown ID is an error.
	// Nil drops none.
	DisabledRules []string
	// CustomRules are added to the built-in rules. Nil adds none.
	CustomRules []RuleConfig
	// Allowlist holds regular expressions; a secret that any of them
	// matches is not reported. Nil allows nothing beyond the rules' own
	// allowlists.
	Allowlist []string
	// Actions overrides rules' actions by rule ID; an unknown ID is an
	// error. Nil keeps every rule's own action.
	Actions map[string]Action
}

// RuleInfo describes a rule of an Engine.
type RuleInfo struct {
	ID, Description string
	// Keywords are the literals the prefilter looks for (the rule's own
	// keywords, or for a gitleaks rule whose matches need not contain its
	// keywords, literals every match starts with).
	Keywords []string
	Action   Action
	// Source is "gitleaks", "promptrail" or "custom".
	Source string
}

// maxPending is what MaxPending returns.
const maxPending = 64 << 10

// Engine finds secrets with a set of rules.
type Engine struct {
	rules     []*rule // shared with other engines: read-only
	byID      map[string]*rule
	actions   map[string]Action
	index     *keywordIndex
	comps     []*component
	kwComps   [][]int32 // keyword index -> components
	allowlist []*config.Allowlist
	scratch   sync.Pool // *scratch
}

// NewEngine compiles the built-in rules (minus cfg.DisabledRules) and
// cfg.CustomRules.
func NewEngine(cfg Config) (*Engine, error) {
	builtin, err := builtinRules()
	if err != nil {
		return nil, err
	}
	e := &Engine{byID: map[string]*rule{}, actions: map[string]Action{}}
	e.allowlist = append(e.allowlist, builtin.allowlists...)
	if len(cfg.Allowlist) > 0 {
		a := &config.Allowlist{Description: "agent configuration"}
		for _, s := range cfg.Allowlist {
			re, err := regexp.Compile(s)
			if err != nil {
				return nil, fmt.Errorf("secrets: allowlist regex %q: %w", s, err)
			}
			a.Regexes = append(a.Regexes, re)
		}
		if err := a.Validate(); err != nil {
			return nil, fmt.Errorf("secrets: allowlist: %w", err)
		}
		e.allowlist = append(e.allowlist, a)
	}
	disabled := map[string]bool{}
	for _, id := range cfg.DisabledRules {
		disabled[id] = true
	}
	for _, r := range builtin.rules {
		if !disabled[r.id] {
			e.add(r)
		}
	}
	for _, id := range cfg.DisabledRules {
		if _, ok := builtin.byID[id]; !ok {
			return nil, fmt.Errorf("secrets: disabled rule %q: no such rule", id)
		}
	}
	for _, rc := range cfg.CustomRules {
		r, err := customRule(rc)
		if err != nil {
			return nil, err
		}
		if _, dup := e.byID[r.id]; dup || builtin.byID[r.id] != nil {
			return nil, fmt.Errorf("secrets: custom rule %q: duplicate rule ID", r.id)
		}
		e.add(r)
	}
	for id, a := range cfg.Actions {
		if _, ok := e.byID[id]; !ok {
			return nil, fmt.Errorf("secrets: action for rule %q: no such rule", id)
		}
		if a != ActionMask && a != ActionBlock {
			return nil, fmt.Errorf("secrets: action for rule %q: unknown action %q", id, a)
		}
		e.actions[id] = a
	}
	e.buildIndex()
	e.scratch.New = func() any { return new(scratch) }
	return e, nil
}

func (e *Engine) add(r *rule) {
	e.rules = append(e.rules, r)
	e.byID[r.id] = r
	e.actions[r.id] = cmp.Or(r.action, ActionMask)
}

// customRule compiles a rule of the agent configuration.
func customRule(rc RuleConfig) (*rule, error) {
	if rc.ID == "" {
		return nil, fmt.Errorf("secrets: custom rule with regex %q: empty ID", rc.Regex)
	}
	if rc.Regex == "" {
		return nil, fmt.Errorf("secrets: custom rule %q: empty regex", rc.ID)
	}
	if rc.Action != "" && rc.Action != ActionMask && rc.Action != ActionBlock {
		return nil, fmt.Errorf("secrets: custom rule %q: unknown action %q", rc.ID, rc.Action)
	}
	return compileRule(ruleSpec{
		id: rc.ID, description: rc.Description, source: sourceCustom,
		regex: rc.Regex, secretGroup: rc.SecretGroup, entropy: rc.Entropy,
		keywords: rc.Keywords, action: rc.Action,
	})
}

// buildIndex builds the keyword prefilter over all rules' keywords.
func (e *Engine) buildIndex() {
	kwID := map[string]int{}
	var kws []string
	for _, r := range e.rules {
		for _, c := range r.comps {
			ci := int32(len(e.comps))
			e.comps = append(e.comps, c)
			for _, k := range c.keywords {
				id, ok := kwID[k]
				if !ok {
					id = len(kws)
					kwID[k] = id
					kws = append(kws, k)
					e.kwComps = append(e.kwComps, nil)
				}
				e.kwComps[id] = append(e.kwComps[id], ci)
			}
		}
	}
	e.index = newKeywordIndex(kws)
}

// Rules describes the engine's rules, sorted by ID.
func (e *Engine) Rules() []RuleInfo {
	out := make([]RuleInfo, 0, len(e.rules))
	for _, r := range e.rules {
		out = append(out, RuleInfo{
			ID: r.id, Description: r.description, Keywords: slices.Clone(r.prefilter),
			Action: e.actions[r.id], Source: r.source,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Action returns the action of rule ruleID, ActionMask for an unknown ID.
func (e *Engine) Action(ruleID string) Action {
	if a, ok := e.actions[ruleID]; ok {
		return a
	}
	return ActionMask
}

// MaxPending is how much held-back text a streaming masker should keep
// before it masks the text instead of waiting for it to resolve (such as a
// private key whose END line does not come): 64 KiB.
func (e *Engine) MaxPending() int { return maxPending }
