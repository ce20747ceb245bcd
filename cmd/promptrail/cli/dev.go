package cli

import (
	"context"
	"fmt"

	"github.com/promptrail/promptrail/internal/fakeopenai"
	"github.com/promptrail/promptrail/internal/settings"
)

const devSummary = `Developer tools.

  promptrail dev fake-openai [flags]   serve a local fake of the OpenAI API over HTTPS
                                       (chat completions, Responses, completions and
                                       embeddings; JSON and SSE; errors, slow and stalled
                                       streams chosen per request with X-Fake-* headers)`

func runDev(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "fake-openai" {
		fmt.Fprintln(Stderr, devSummary)
		return fmt.Errorf("dev: want a tool name (fake-openai)")
	}
	fs := newFlagSet("dev fake-openai", "Serves a fake of the OpenAI API, for trying the agent without the real API.\nPoint api.openai.com at it (/etc/hosts) and give the agent its CA with --upstream-ca.")
	listen := fs.String("listen", "127.0.0.1:8443", "`ip:port` to serve HTTPS on")
	cert := fs.String("cert", "", "certificate `file` (PEM); default: a fresh CA and certificate, the CA's path logged")
	key := fs.String("key", "", "private key `file` of --cert")
	reply := fs.String("reply", "", "assistant reply text (default: a fixed greeting)")
	if err := settings.Parse(fs, args[1:], ""); err != nil {
		return err
	}
	logf := func(format string, a ...any) { fmt.Fprintf(Stderr, format+"\n", a...) }
	return fakeopenai.Serve(ctx, *listen, *cert, *key, fakeopenai.Config{Reply: *reply}, logf)
}
