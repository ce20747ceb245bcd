package agent

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/promptrail/promptrail/agent/tlsca"
)

// TargetNames returns the host names among targets (host[:port] entries,
// as Config.Targets): what the CA must be able to sign. IP literals are
// left out, since the proxy decrypts by server name only.
func TargetNames(targets []string) ([]string, error) {
	p, err := planTargets(targets, nil)
	return p.hosts, err
}

// nodeCA loads the CA that signs what clients see (creating the node CA,
// constrained to the target names, on first start) and makes sure it may
// sign every target name: a leaf outside its name constraints would be
// rejected by every client, so the agent refuses to start instead.
func nodeCA(cfg Config, node string, log *slog.Logger) (*tlsca.CA, error) {
	names, err := TargetNames(cfg.Targets)
	if err != nil {
		return nil, err
	}
	var ca *tlsca.CA
	if cfg.CACert != "" || cfg.CAKey != "" {
		ca, err = tlsca.Load(cfg.CACert, cfg.CAKey)
	} else {
		ca, err = tlsca.LoadOrCreate(cfg.DataDir, tlsca.Constraints{Names: names, Unconstrained: cfg.CAUnconstrained, Node: node})
	}
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	outside, err := ca.Check(names)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	permitted := ca.Certificate().PermittedDNSDomains
	if len(outside) > 0 {
		return nil, fmt.Errorf("agent: the CA (%s) is name-constrained to %s and may not sign the target %s: clients would reject its certificates; %s",
			ca.Certificate().Subject.CommonName, strings.Join(permitted, ", "), strings.Join(outside, ", "), rotateHint(cfg))
	}
	switch {
	case len(permitted) > 0:
		log.Info("the CA is name-constrained", "permits", permitted)
	case cfg.CAUnconstrained:
		log.Info("the CA has no name constraints (--ca-unconstrained): its key can sign for any site")
	default:
		log.Warn("the CA has no name constraints: whoever steals its key can impersonate any site to the clients that trust it; rotate to a constrained CA",
			"ca", ca.Certificate().Subject.CommonName, "how", rotateHint(cfg))
	}
	return ca, nil
}

// rotateHint says how to replace the agent's CA with one for the targets.
func rotateHint(cfg Config) string {
	if cfg.CACert != "" || cfg.CAKey != "" {
		return fmt.Sprintf("issue a CA for every target name (`promptrail ca --init --data-dir DIR --target …` makes one in DIR), "+
			"add it to the clients' trust beside the current one, then point --ca-cert and --ca-key at it (README: CA rotation); now %s", cfg.CACert)
	}
	return fmt.Sprintf("rotate it: `promptrail ca --data-dir %s --rotate prepare` with the agent's --target flags (or its --config), give clients the bundle that "+
		"`promptrail ca` then prints, run `promptrail ca --data-dir %[1]s --rotate activate` and restart the agent, and `--rotate retire` "+
		"once no client needs the old CA (README: CA rotation)", cfg.DataDir)
}
