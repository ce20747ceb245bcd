package proxy

import (
	"bufio"
	"io"
	"log/slog"
	"net/http"
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

// BenchmarkStreamFirstToken is the time to the first content event of a
// streamed chat completion through the decrypting proxy, with and without
// masking: what masking adds to the time to first token.
func BenchmarkStreamFirstToken(b *testing.B) {
	for _, masked := range []bool{false, true} {
		b.Run(map[bool]string{false: "plain", true: "masked"}[masked], func(b *testing.B) {
			f := newDecryptFixture(b, func(dc *DecryptConfig, c *Config) {
				c.Logger = slog.New(slog.DiscardHandler)
				if masked {
					dc.Masker = testMasker(b)
				}
			})
			client := f.client(false)
			body := `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`
			for b.Loop() {
				req, _ := http.NewRequest("POST", "https://api.openai.com/v1/chat/completions", strings.NewReader(body))
				req.Header.Set("X-Fake-Reply", strings.Repeat("word ", 40))
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				br := bufio.NewReader(resp.Body)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						b.Fatal(err)
					}
					if strings.Contains(line, `"content":"w`) {
						break
					}
				}
				io.Copy(io.Discard, br)
				resp.Body.Close()
			}
		})
	}
}
