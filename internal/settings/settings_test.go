package settings

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func newFS() (*flag.FlagSet, *string, *List, *bool, *string) {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dir := fs.String("data-dir", "/var/lib/promptrail", "")
	targets := NewList("api.openai.com:443")
	fs.Var(targets, "target", "")
	dns := fs.Bool("capture-dns", true, "")
	cfg := fs.String("config", "", "")
	return fs, dir, targets, dns, cfg
}

func TestPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.yaml")
	os.WriteFile(file, []byte("data-dir: /from/file\ntarget:\n  - a.example:443\n  - b.example\ncapture-dns: false\n"), 0o600)
	tests := []struct {
		name        string
		args        []string
		env         map[string]string
		wantDir     string
		wantTargets []string
		wantDNS     bool
	}{
		{"defaults", nil, nil, "/var/lib/promptrail", []string{"api.openai.com:443"}, true},
		{"file", []string{"--config", file}, nil, "/from/file", []string{"a.example:443", "b.example"}, false},
		{"env over file", []string{"--config", file}, map[string]string{"PROMPTRAIL_DATA_DIR": "/from/env", "PROMPTRAIL_TARGET": "c.example,d.example:8443"},
			"/from/env", []string{"c.example", "d.example:8443"}, false},
		{"flag over env", []string{"--data-dir", "/from/flag", "--target", "x", "--target", "y"}, map[string]string{"PROMPTRAIL_DATA_DIR": "/from/env"},
			"/from/flag", []string{"x", "y"}, true},
		{"config file from env", nil, map[string]string{"PROMPTRAIL_CONFIG": file}, "/from/file", []string{"a.example:443", "b.example"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			fs, dir, targets, dns, _ := newFS()
			if err := Parse(fs, tt.args, "config"); err != nil {
				t.Fatal(err)
			}
			if *dir != tt.wantDir || !reflect.DeepEqual(targets.Values(), tt.wantTargets) || *dns != tt.wantDNS {
				t.Errorf("got dir %q targets %q dns %v; want %q %q %v", *dir, targets.Values(), *dns, tt.wantDir, tt.wantTargets, tt.wantDNS)
			}
		})
	}
}

func TestBadInputIsAnError(t *testing.T) {
	dir := t.TempDir()
	unknown := filepath.Join(dir, "unknown.yaml")
	os.WriteFile(unknown, []byte("data-dri: /typo\n"), 0o600)
	broken := filepath.Join(dir, "broken.yaml")
	os.WriteFile(broken, []byte("data-dir: [\n"), 0o600)
	for _, args := range [][]string{
		{"--config", unknown},
		{"--config", broken},
		{"--config", filepath.Join(dir, "missing.yaml")},
		{"--no-such-flag"},
	} {
		fs, _, _, _, _ := newFS()
		if err := Parse(fs, args, "config"); err == nil {
			t.Errorf("Parse(%q) succeeded, want an error", args)
		}
	}
	t.Setenv("PROMPTRAIL_CAPTURE_DNS", "maybe")
	fs, _, _, _, _ := newFS()
	if err := Parse(fs, nil, "config"); err == nil {
		t.Error("a bad boolean in the environment was accepted")
	}
}

func TestParseSharedSkipsTheOtherCommandsSettings(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.yaml")
	os.WriteFile(file, []byte("data-dir: /from/file\ntarget: [a.example]\nfail-mode: fail-closed\n"), 0o600)
	fs, dir, targets, _, _ := newFS()
	if err := ParseShared(fs, []string{"--config", file}, "config"); err != nil {
		t.Fatal(err)
	}
	if *dir != "/from/file" || !reflect.DeepEqual(targets.Values(), []string{"a.example"}) {
		t.Errorf("got data-dir %q targets %q, want the file's", *dir, targets.Values())
	}
	fs, _, _, _, _ = newFS()
	if err := Parse(fs, []string{"--config", file}, "config"); err == nil {
		t.Error("Parse accepted a setting the command does not have")
	}
}
