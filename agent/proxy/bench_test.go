package proxy

import (
	"io"
	"log/slog"
	"strings"
	"testing"
)

// BenchmarkDecryptedRequest is one ~1 KB chat request through the
// decrypting proxy to the fake upstream on a kept-alive HTTP/1.1
// connection, recorded: the proxy's per-request cost without the kernel
// (the e2e BenchmarkProxy measures it with the agent binary).
func BenchmarkDecryptedRequest(b *testing.B) {
	f := newDecryptFixture(b, func(_ *DecryptConfig, c *Config) { c.Logger = slog.New(slog.DiscardHandler) })
	client := f.client(false)
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + strings.Repeat("x", 900) + `"}]}`
	b.ReportAllocs()
	for b.Loop() {
		resp, err := client.Post("https://api.openai.com/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
