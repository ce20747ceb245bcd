package agent

import (
	"bytes"
	"fmt"
	"os"

	"go.yaml.in/yaml/v3"

	"github.com/promptrail/promptrail/agent/mask"
	"github.com/promptrail/promptrail/agent/secrets"
)

// MaskConfig configures secret masking.
type MaskConfig struct {
	// Disabled turns masking off: prompts go upstream as sent.
	Disabled bool
	// RulesFile is a YAML file of custom rules, allowlists and per-rule
	// actions (see README, "Secret masking"). Empty: none.
	RulesFile string
	// DisableRules and BlockRules are rule IDs to drop, and rule IDs whose
	// findings block the request (403) instead of masking it.
	DisableRules, BlockRules []string
}

// rulesFile is the YAML form of RulesFile.
type rulesFile struct {
	Disable   []string `yaml:"disable"`
	Block     []string `yaml:"block"`
	Allowlist []string `yaml:"allowlist"`
	Rules     []struct {
		ID          string   `yaml:"id"`
		Description string   `yaml:"description"`
		Regex       string   `yaml:"regex"`
		SecretGroup int      `yaml:"secret-group"`
		Entropy     float64  `yaml:"entropy"`
		Keywords    []string `yaml:"keywords"`
		Action      string   `yaml:"action"`
	} `yaml:"rules"`
}

// newMasker builds the masker: the rule engine and the deployment's HMAC
// key (created in dataDir on first start). Nil when masking is off.
func newMasker(cfg MaskConfig, dataDir string) (*mask.Masker, *secrets.Engine, error) {
	if cfg.Disabled {
		return nil, nil, nil
	}
	sc := secrets.Config{DisabledRules: cfg.DisableRules, Actions: map[string]secrets.Action{}}
	for _, id := range cfg.BlockRules {
		sc.Actions[id] = secrets.ActionBlock
	}
	if cfg.RulesFile != "" {
		b, err := os.ReadFile(cfg.RulesFile)
		if err != nil {
			return nil, nil, fmt.Errorf("agent: mask rules: %w", err)
		}
		var rf rulesFile
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&rf); err != nil {
			return nil, nil, fmt.Errorf("agent: mask rules file %s: %w", cfg.RulesFile, err)
		}
		sc.DisabledRules = append(sc.DisabledRules, rf.Disable...)
		sc.Allowlist = rf.Allowlist
		for _, id := range rf.Block {
			sc.Actions[id] = secrets.ActionBlock
		}
		for _, r := range rf.Rules {
			sc.CustomRules = append(sc.CustomRules, secrets.RuleConfig{ID: r.ID, Description: r.Description, Regex: r.Regex,
				SecretGroup: r.SecretGroup, Entropy: r.Entropy, Keywords: r.Keywords, Action: secrets.Action(r.Action)})
		}
	}
	eng, err := secrets.NewEngine(sc)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: mask rules: %w", err)
	}
	key, err := mask.LoadOrCreateKey(dataDir)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: %w", err)
	}
	return mask.New(eng, key), eng, nil
}
