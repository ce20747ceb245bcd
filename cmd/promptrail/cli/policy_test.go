package cli

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/promptrail/promptrail/collector"
	"github.com/promptrail/promptrail/collector/auth"
	"github.com/promptrail/promptrail/collector/store"
)

func TestPolicyCheckPushGet(t *testing.T) {
	st, err := store.Open(context.Background(), store.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tok, err := auth.ParseTokens([]byte("admin ops admin-token-for-cli-tests\nreader cli " + readerToken + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	h, err := collector.NewHandler(collector.HandlerConfig{Store: st, Auth: tok, PolicyFile: filepath.Join(dir, "stored.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	adminTok, readerTok := write("admin.token", "admin-token-for-cli-tests\n"), write("reader.token", readerToken+"\n")
	good := write("good.yaml", "rules:\n  - {name: a, when: 'request.model == \"x\"', action: block}\n")
	bad := write("bad.yaml", "rules:\n  - {name: typo, when: 'request.modle == \"x\"', action: block}\n")
	var out bytes.Buffer
	oldOut := Stdout
	Stdout = &out
	t.Cleanup(func() { Stdout = oldOut })
	cases := []cliCase{
		{[]string{"policy", "check", good}, "", "sha256:"},
		{[]string{"policy", "check", bad}, `rule "typo"`, ""},
		{[]string{"policy", "push", "--collector", srv.URL, "--token-file", readerTok, good}, "admin", ""},
		{[]string{"policy", "push", "--collector", srv.URL, "--token-file", adminTok, bad}, `rule "typo"`, ""},
		{[]string{"policy", "push", "--collector", srv.URL, "--token-file", adminTok, good}, "", "pushed sha256:"},
		{[]string{"policy", "get", "--collector", srv.URL, "--token-file", readerTok}, "", "name: a"},
	}
	runCLICases(t, &out, cases)
}

// cliCase is a command line and what it must say: an error containing
// errHas ("": it succeeds) and output containing outHas.
type cliCase struct {
	args   []string
	errHas string
	outHas string
}

// runCLICases runs each case in turn, its output in out, and checks that
// none prints what a terminal would act on.
func runCLICases(t *testing.T, out *bytes.Buffer, cases []cliCase) {
	t.Helper()
	for _, c := range cases {
		out.Reset()
		err := Run(context.Background(), c.args)
		switch {
		case c.errHas == "" && err != nil:
			t.Errorf("%v: %v", c.args, err)
		case c.errHas != "" && (err == nil || !strings.Contains(err.Error(), c.errHas)):
			t.Errorf("%v: error %v, want one saying %q", c.args, err, c.errHas)
		case !strings.Contains(out.String(), c.outHas):
			t.Errorf("%v: printed %q, want %q", c.args, out.String(), c.outHas)
		case terminalActs(out.Bytes()) != "":
			t.Errorf("%v: printed %q raw to the terminal", c.args, terminalActs(out.Bytes()))
		}
	}
}
