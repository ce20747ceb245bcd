package mask

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/promptrail/promptrail/agent/secrets"
)

// nullDetector finds nothing: with it, a benchmark measures the Stream's
// own cost.
type nullDetector struct{}

func (nullDetector) Find([]byte) []secrets.Match  { return nil }
func (nullDetector) Pending(text []byte) int      { return len(text) }
func (nullDetector) MaxPending() int              { return 1 << 16 }
func (nullDetector) Action(string) secrets.Action { return "mask" }

// benchStream writes text to streams of m in deltas of n bytes; one op is
// one delta.
func benchStream(b *testing.B, m *Masker, text []byte, n int) {
	deltas := splitAt(text, seqStep(n, len(text), n)...)
	b.SetBytes(int64(n))
	b.ReportAllocs()
	s := m.NewStream("response", "$.choices[0].delta.content")
	held := 0
	for i := 0; b.Loop(); i++ {
		if i%len(deltas) == 0 {
			s.Close()
			s = m.NewStream("response", "$.choices[0].delta.content")
		}
		s.Write(deltas[i%len(deltas)])
		held += s.Held()
	}
	b.ReportMetric(float64(held)/float64(b.N), "held-bytes/op")
}

// BenchmarkStreamNoSecret: the time a stream adds to each 5-byte delta of
// ordinary text, which is what it adds to the time to first token; with
// the test detector and with one that finds nothing (the Stream's own
// cost).
func BenchmarkStreamNoSecret(b *testing.B) {
	text := bytes.Repeat(corpus(b)["clean_prose.txt"], 20)
	b.Run("null-detector", func(b *testing.B) { benchStream(b, New(nullDetector{}, testKey()), text, 5) })
	b.Run("test-detector", func(b *testing.B) { benchStream(b, newTestMasker(1<<16), text, 5) })
	b.Run("engine", func(b *testing.B) { benchStream(b, newEngineMasker(b), text, 5) })
}

// BenchmarkStreamSecrets: the same for text with secrets (two private keys
// in 1.2 KB), which the stream holds while they arrive.
func BenchmarkStreamSecrets(b *testing.B) {
	text := corpus(b)["pem_in_prose.txt"]
	b.Run("test-detector", func(b *testing.B) { benchStream(b, newTestMasker(1<<16), text, 5) })
	b.Run("engine", func(b *testing.B) { benchStream(b, newEngineMasker(b), text, 5) })
}

// chatRequest returns a chat request of about size bytes, with secret in
// its last message.
func chatRequest(size int, secret string) []byte {
	type msg struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	req := struct {
		Model       string  `json:"model"`
		Messages    []msg   `json:"messages"`
		Temperature float64 `json:"temperature"`
		Stream      bool    `json:"stream"`
	}{Model: "gpt-4o-mini", Temperature: 0.7, Stream: true}
	req.Messages = append(req.Messages, msg{"system", "You are a helpful assistant. Answer briefly.\nUse Markdown."})
	for i := 0; ; i++ {
		b, _ := json.Marshal(req)
		if len(b) >= size-len(secret)-64 {
			break
		}
		role := []string{"user", "assistant"}[i%2]
		req.Messages = append(req.Messages, msg{role, fmt.Sprintf("Message %d: the quick brown fox jumps over the lazy dog; \"quoted\" text, tabs\tand newlines\n, numbers 3.14 and unicode café ✓.", i)})
	}
	req.Messages = append(req.Messages, msg{"user", "And this one: " + secret})
	b, _ := json.Marshal(req)
	return b
}

func BenchmarkJSONRequest(b *testing.B) {
	for _, bc := range []struct {
		name, secret string
		m            *Masker
	}{
		{"test-detector/clean", "nothing to see", newTestMasker(1 << 16)},
		{"test-detector/secret", "sk-abcdefghijklmnopqrstuvwxyz0123456789", newTestMasker(1 << 16)},
		{"engine/clean", "nothing to see", newEngineMasker(b)},
		{"engine/secret", "ghp_Zx8kQ2mR7vT4nB9wL3pY6sD1fH5jK0aC2eG7", newEngineMasker(b)},
	} {
		doc := chatRequest(4096, bc.secret)
		m := bc.m
		b.Run(fmt.Sprintf("%s-%dB", bc.name, len(doc)), func(b *testing.B) {
			b.SetBytes(int64(len(doc)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := m.JSON("request", doc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
