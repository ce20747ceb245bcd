package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func capture(t *testing.T) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	oldOut, oldErr := Stdout, Stderr
	Stdout, Stderr = &buf, &buf
	t.Cleanup(func() { Stdout, Stderr = oldOut, oldErr })
	return &buf
}

func TestHelpExplainsCommandsAndFlags(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{nil, []string{"agent", "run", "cleanup"}},
		{[]string{"agent", "--help"}, []string{"--target host[:port]", "[PROMPTRAIL_TARGET]", "fail-closed", "--proxy-listen", "(default fail-closed)"}},
		{[]string{"run", "--help"}, []string{"(default fail-open)", "[PROMPTRAIL_CGROUP_ROOT]"}},
		{[]string{"cleanup", "--help"}, []string{"--pin-path directory"}},
		{[]string{"collector", "--help"}, []string{"--approval-webhook URL", "[PROMPTRAIL_APPROVAL_WEBHOOK]", "--approval-webhook-secret-file file"}},
	}
	for _, tt := range tests {
		out := capture(t)
		if err := Run(context.Background(), tt.args); err != nil {
			t.Errorf("%q: %v", tt.args, err)
		}
		for _, w := range tt.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%q: output lacks %q:\n%s", tt.args, w, out)
			}
		}
	}
}

func TestBadInvocationsAreErrors(t *testing.T) {
	for _, args := range [][]string{
		{"frobnicate"},
		{"agent", "--no-such-flag"},
		{"agent", "--socket-mark", "zero"},
		{"agent", "--log-format", "xml"},
		{"agent", "--fail-mode", "sometimes", "--cgroup-root", t.TempDir(), "--data-dir", t.TempDir()},
		{"agent", "--target", "api.openai.com:99999", "--data-dir", t.TempDir()},
		{"collector", "--tokens-file", "/dev/null", "--approval-webhook", "http://127.0.0.1:1/hook"},
	} {
		capture(t)
		if err := Run(context.Background(), args); err == nil {
			t.Errorf("%q succeeded, want an error", args)
		}
	}
}
