package agent

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/promptrail/promptrail/agent/tlsca"
)

func TestNodeCAFitsTheTargets(t *testing.T) {
	openai := tlsca.Constraints{Names: []string{"api.openai.com"}}
	tests := []struct {
		name     string
		existing *tlsca.Constraints // a CA already in the data directory
		external bool               // the CA is given with --ca-cert/--ca-key
		cfg      Config
		permits  []string // nil: unconstrained
		errWants []string
		logWants []string
		logLacks []string
	}{
		{name: "first start constrains to the target names", cfg: Config{Targets: []string{"api.openai.com", "API.anthropic.com:443", "127.0.0.2"}},
			permits: []string{"api.openai.com", "api.anthropic.com"}, logWants: []string{"name-constrained"}, logLacks: []string{"WARN"}},
		{name: "default target", permits: []string{"api.openai.com"}},
		{name: "IP targets only", cfg: Config{Targets: []string{"192.0.2.1:443"}}, permits: []string{"invalid"}},
		{name: "opt out", cfg: Config{CAUnconstrained: true}, logWants: []string{"--ca-unconstrained"}, logLacks: []string{"WARN"}},
		{name: "a target outside an existing CA", existing: &openai, cfg: Config{Targets: []string{"api.openai.com", "api.mistral.ai"}},
			errWants: []string{"may not sign the target api.mistral.ai", "--rotate prepare", "--rotate activate"}},
		{name: "a target outside a cluster CA", existing: &openai, external: true, cfg: Config{Targets: []string{"api.mistral.ai"}},
			errWants: []string{"api.mistral.ai", "--ca-cert", "promptrail ca --init"}},
		{name: "a CA from before constraints warns", existing: &tlsca.Constraints{Unconstrained: true},
			logWants: []string{"WARN", "no name constraints", "--rotate prepare"}},
		{name: "an opted-out CA does not warn", existing: &tlsca.Constraints{Unconstrained: true}, cfg: Config{CAUnconstrained: true},
			logLacks: []string{"WARN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.DataDir = t.TempDir()
			if tt.existing != nil {
				dir := cfg.DataDir
				if tt.external {
					dir = t.TempDir()
					cfg.CACert, cfg.CAKey = filepath.Join(dir, tlsca.CertFile), filepath.Join(dir, tlsca.KeyFile)
				}
				if _, err := tlsca.Init(dir, *tt.existing); err != nil {
					t.Fatal(err)
				}
			}
			var logs bytes.Buffer
			ca, err := nodeCA(cfg, "node-7", slog.New(slog.NewTextHandler(&logs, nil)))
			if tt.errWants != nil {
				if err == nil {
					t.Fatal("the agent started with a CA that may not sign a target")
				}
				for _, w := range tt.errWants {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error lacks %q: %v", w, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := ca.Certificate().PermittedDNSDomains; !slices.Equal(got, tt.permits) {
				t.Errorf("CA permits %q, want %q", got, tt.permits)
			}
			// A CA made here is named after the node (Kubernetes' node
			// name), not the host name a pod of the host's network sees.
			if cn := ca.Certificate().Subject.CommonName; tt.existing == nil && !strings.HasPrefix(cn, "promptrail node CA node-7 ") {
				t.Errorf("new node CA is named %q, want it named after node node-7", cn)
			}
			for _, w := range tt.logWants {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("log lacks %q:\n%s", w, logs.String())
				}
			}
			for _, w := range tt.logLacks {
				if strings.Contains(logs.String(), w) {
					t.Errorf("log has %q:\n%s", w, logs.String())
				}
			}
		})
	}
}
