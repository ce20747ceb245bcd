package secrets

import (
	"os"
	"strings"
	"testing"
)

// benchInputs are the inputs of BenchmarkFind and
// BenchmarkGitleaksDetectString: prose (testdata/corpus/prose.md), code
// (the Go, Python and JavaScript files of testdata/corpus), config (its
// YAML, JSON and TOML file: dense with "key: value" lines),
// and base64 (a chat request with a 2×2 and a 160×160 PNG as data URLs),
// each repeated to at least 256 KB.
func benchInputs(b *testing.B) []struct{ name, text string } {
	read := func(names ...string) string {
		var sb strings.Builder
		for _, n := range names {
			data, err := os.ReadFile("testdata/corpus/" + n)
			if err != nil {
				b.Fatal(err)
			}
			sb.Write(data)
		}
		return sb.String()
	}
	var images string
	for _, d := range corpus(b) {
		if d.name == "chat-with-images" {
			images = d.text
		}
	}
	grow := func(s string) string {
		return strings.Repeat(s, (256<<10)/len(s)+1)
	}
	return []struct{ name, text string }{
		{"prose", grow(read("prose.md"))},
		{"code", grow(read("server.go.txt", "pipeline.py.txt", "client.js.txt"))},
		{"config", grow(read("config.txt"))},
		{"base64", grow(images)},
	}
}

func BenchmarkFind(b *testing.B) {
	e := engine(b)
	for _, in := range benchInputs(b) {
		text := []byte(in.text)
		b.Run(in.name, func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				e.Find(text)
			}
		})
	}
}

func BenchmarkGitleaksDetectString(b *testing.B) {
	det := gitleaksDetector(b)
	for _, in := range benchInputs(b) {
		b.Run(in.name, func(b *testing.B) {
			b.SetBytes(int64(len(in.text)))
			for b.Loop() {
				det.DetectString(in.text)
			}
		})
	}
}

// BenchmarkPending measures Pending over the last 4 KiB of the code input,
// what a streaming masker passes.
func BenchmarkPending(b *testing.B) {
	e := engine(b)
	text := []byte(benchInputs(b)[1].text) // code
	w := text[len(text)-4096:]
	b.SetBytes(int64(len(w)))
	for b.Loop() {
		e.Pending(w)
	}
}
