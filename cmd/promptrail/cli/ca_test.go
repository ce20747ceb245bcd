package cli

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// captureSplit captures stdout and stderr apart.
func captureSplit(t *testing.T) (stdout, stderr *bytes.Buffer) {
	t.Helper()
	stdout, stderr = &bytes.Buffer{}, &bytes.Buffer{}
	oldOut, oldErr := Stdout, Stderr
	Stdout, Stderr = stdout, stderr
	t.Cleanup(func() { Stdout, Stderr = oldOut, oldErr })
	return stdout, stderr
}

// certs parses the PEM certificates that `promptrail ca` printed.
func certs(t *testing.T, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var block *pem.Block
		if block, b = pem.Decode(b); block == nil {
			return out
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

func TestCACommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "promptrail")
	steps := []struct {
		name     string
		args     []string
		errWants []string
		certs    int      // certificates printed
		permits  []string // by the first one
		stderr   []string
		noDir    bool // the data directory must still not exist
	}{
		{name: "a mistyped data dir is an error", args: []string{"--data-dir", dir},
			errWants: []string{dir + " holds no CA", "promptrail ca --init"}, noDir: true},
		{name: "a rotation needs a CA", args: []string{"--data-dir", dir, "--rotate", "prepare"}, errWants: []string{"holds no CA"}, noDir: true},
		{name: "init makes a constrained CA", args: []string{"--data-dir", dir, "--init", "--target", "api.openai.com", "--target", "api.anthropic.com:443"},
			certs: 1, permits: []string{"api.openai.com", "api.anthropic.com"}, stderr: []string{"may sign only api.openai.com, api.anthropic.com", "NODE_EXTRA_CA_CERTS"}},
		{name: "init again keeps it", args: []string{"--data-dir", dir, "--init", "--ca-unconstrained"}, certs: 1,
			permits: []string{"api.openai.com", "api.anthropic.com"}, stderr: []string{"already holds a CA"}},
		{name: "print", args: []string{"--data-dir", dir}, certs: 1, permits: []string{"api.openai.com", "api.anthropic.com"}},
		{name: "retire without rotation", args: []string{"--data-dir", dir, "--rotate", "retire"}, errWants: []string{"no old CA"}},
		{name: "prepare", args: []string{"--data-dir", dir, "--rotate", "prepare", "--target", "api.openai.com,api.mistral.ai"}, certs: 2,
			permits: []string{"api.openai.com", "api.anthropic.com"}, stderr: []string{"Rotation prepared", "may sign only api.openai.com, api.mistral.ai", "--rotate activate"}},
		{name: "print during the overlap", args: []string{"--data-dir", dir, "--quiet"}, certs: 2, permits: []string{"api.openai.com", "api.anthropic.com"}},
		{name: "activate", args: []string{"--data-dir", dir, "--rotate", "activate"}, certs: 2,
			permits: []string{"api.openai.com", "api.mistral.ai"}, stderr: []string{"Rotation active", "--rotate retire"}},
		{name: "retire", args: []string{"--data-dir", dir, "--rotate", "retire"}, certs: 1, permits: []string{"api.openai.com", "api.mistral.ai"}},
		{name: "unknown step", args: []string{"--data-dir", dir, "--rotate", "now"}, errWants: []string{"prepare, activate or retire"}},
		{name: "init and rotate at once", args: []string{"--data-dir", dir, "--init", "--rotate", "prepare"}, errWants: []string{"separate steps"}},
		{name: "a file is not rotated", args: []string{"--ca-cert", filepath.Join(dir, "ca.crt"), "--rotate", "prepare"}, errWants: []string{"not a --ca-cert file"}},
		{name: "a file", args: []string{"--ca-cert", filepath.Join(dir, "ca.crt")}, certs: 1, permits: []string{"api.openai.com", "api.mistral.ai"},
			stderr: []string{"may sign only"}},
	}
	for _, st := range steps {
		stdout, stderr := captureSplit(t)
		err := Run(context.Background(), append([]string{"ca"}, st.args...))
		if _, serr := os.Stat(dir); st.noDir && serr == nil {
			t.Errorf("%s: created %s", st.name, dir)
		}
		if st.errWants != nil {
			if err == nil {
				t.Fatalf("%s: succeeded, want an error", st.name)
			}
			for _, w := range st.errWants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: error lacks %q: %v", st.name, w, err)
				}
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		got := certs(t, stdout.Bytes())
		if len(got) != st.certs {
			t.Fatalf("%s: printed %d certificates, want %d:\n%s", st.name, len(got), st.certs, stdout)
		}
		if !slices.Equal(got[0].PermittedDNSDomains, st.permits) {
			t.Errorf("%s: the current CA permits %q, want %q", st.name, got[0].PermittedDNSDomains, st.permits)
		}
		for _, w := range st.stderr {
			if !strings.Contains(stderr.String(), w) {
				t.Errorf("%s: stderr lacks %q:\n%s", st.name, w, stderr)
			}
		}
	}
}

func TestCAInitUnconstrained(t *testing.T) {
	dir := t.TempDir()
	stdout, stderr := captureSplit(t)
	if err := Run(context.Background(), []string{"ca", "--init", "--data-dir", dir, "--ca-unconstrained"}); err != nil {
		t.Fatal(err)
	}
	if got := certs(t, stdout.Bytes()); len(got) != 1 || got[0].PermittedDNSDomains != nil {
		t.Fatalf("want one CA without name constraints, got %d", len(got))
	}
	if !strings.Contains(stderr.String(), "no name constraints") {
		t.Errorf("stderr does not say the CA is unconstrained:\n%s", stderr)
	}
	if fi, err := os.Stat(filepath.Join(dir, "ca.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("ca.key: %v %v, want mode 0600", fi, err)
	}
}

func TestCAReadsTheAgentsConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	os.WriteFile(cfg, []byte("data-dir: "+dir+"\ntarget:\n  - api.openai.com:443\n  - api.mistral.ai\nfail-mode: fail-closed\nlog-format: json\n"), 0o600)
	stdout, _ := captureSplit(t)
	if err := Run(context.Background(), []string{"ca", "--config", cfg, "--init"}); err != nil {
		t.Fatal(err)
	}
	got := certs(t, stdout.Bytes())
	if len(got) != 1 {
		t.Fatalf("printed %d certificates, want 1", len(got))
	}
	if !slices.Equal(got[0].PermittedDNSDomains, []string{"api.openai.com", "api.mistral.ai"}) {
		t.Fatalf("CA from the agent's config permits %q, want its targets", got[0].PermittedDNSDomains)
	}
	if _, err := os.Stat(filepath.Join(dir, "ca.key")); err != nil {
		t.Fatalf("the CA is not in the config's data-dir: %v", err)
	}
}
