package secrets

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
)

// doc is a document of the corpus of ordinary text (no secrets).
type doc struct {
	name, text string
}

// corpusDocs is built once: the files in testdata/corpus, generated
// identifiers (UUIDs, git SHAs, long names), chat messages with base64
// images, and, when the Go tree is there, part of its source.
var corpusDocs = sync.OnceValue(func() []doc {
	var docs []doc
	files, _ := filepath.Glob("testdata/corpus/*")
	sort.Strings(files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			panic(err)
		}
		docs = append(docs, doc{filepath.Base(f), string(b)})
	}
	rng := rand.New(rand.NewPCG(7, 11))
	docs = append(docs, doc{"uuids", uuidLog(rng, 800)}, doc{"git-log", gitLog(rng, 300)},
		doc{"identifiers", identifiers(rng, 1500)})
	tiny, long := pngDataURL(2, 2, rng), pngDataURL(160, 160, rng)
	docs = append(docs, doc{"image-tiny", tiny}, doc{"image-long", long},
		doc{"chat-with-images", chatWithImages(tiny, long)})
	return append(docs, goSource()...)
})

func corpus(t testing.TB) []doc { return corpusDocs() }

func hexString(rng *rand.Rand, n int) string {
	const digits = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = digits[rng.IntN(16)]
	}
	return string(b)
}

func uuidLog(rng *rand.Rand, n int) string {
	var sb strings.Builder
	paths := []string{"/v1/orders", "/v1/customers/orders", "/healthz", "/v1/webhooks/payments"}
	for i := range n {
		id := hexString(rng, 32)
		fmt.Fprintf(&sb, "2024-03-01T10:%02d:%02d.%03dZ level=info msg=\"request done\" request_id=%s-%s-4%s-a%s-%s path=%s status=200 duration_ms=%d\n",
			i/60%60, i%60, rng.IntN(1000), id[:8], id[8:12], id[13:16], id[17:20], id[20:], paths[rng.IntN(len(paths))], rng.IntN(400))
	}
	return sb.String()
}

func gitLog(rng *rand.Rand, n int) string {
	var sb strings.Builder
	subjects := []string{"orders: page by created_at", "ci: cache the module download", "web: retry on 503",
		"export: take a lease before running", "docs: explain the pool size unit", "deps: update the router"}
	for range n {
		fmt.Fprintf(&sb, "commit %s\nAuthor: Dev Person <dev@example.com>\nDate:   Fri Mar 1 10:00:00 2024 +0000\n\n    %s\n\n",
			hexString(rng, 40), subjects[rng.IntN(len(subjects))])
		fmt.Fprintf(&sb, "%s %s\n", hexString(rng, 7), subjects[rng.IntN(len(subjects))])
	}
	return sb.String()
}

func identifiers(rng *rand.Rand, n int) string {
	words := []string{"abstract", "singleton", "proxy", "factory", "bean", "request", "handler", "config",
		"token", "refresh", "manager", "provider", "access", "control", "list", "entry", "cache", "key",
		"value", "store", "session", "auth", "client", "secret", "rotation", "policy", "builder", "default"}
	var sb strings.Builder
	for i := range n {
		k := 3 + rng.IntN(6)
		parts := make([]string, k)
		for j := range parts {
			parts[j] = words[rng.IntN(len(words))]
		}
		switch i % 4 {
		case 0:
			for j := range parts {
				parts[j] = strings.ToUpper(parts[j][:1]) + parts[j][1:]
			}
			fmt.Fprintf(&sb, "var x%d = new %s();\n", i, strings.Join(parts, ""))
		case 1:
			fmt.Fprintf(&sb, "%s = settings.get(%q)\n", strings.Join(parts, "_"), strings.Join(parts, "."))
		case 2:
			fmt.Fprintf(&sb, "%s: %s\n", strings.Join(parts, "-"), strings.ToUpper(strings.Join(parts, "_")))
		default:
			fmt.Fprintf(&sb, "func (m *%s) %s() {}\n", strings.Join(parts[:2], ""), strings.Join(parts[2:], ""))
		}
	}
	return sb.String()
}

// pngDataURL encodes a w×h PNG of noise as a data URL.
func pngDataURL(w, h int, rng *rand.Rand) string {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.NRGBA{uint8(rng.IntN(256)), uint8(rng.IntN(256)), uint8(x * y), 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		panic(err)
	}
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(buf.Bytes())
}

// chatWithImages is the raw JSON body of a chat request with two images.
func chatWithImages(urls ...string) string {
	var content []map[string]any
	content = append(content, map[string]any{"type": "text", "text": "What is in these pictures?"})
	for _, u := range urls {
		content = append(content, map[string]any{"type": "image_url", "image_url": map[string]string{"url": u}})
	}
	b, err := json.Marshal(map[string]any{"model": "gpt-4o", "messages": []map[string]any{{"role": "user", "content": content}}})
	if err != nil {
		panic(err)
	}
	return string(b)
}

// goSource returns the non-test Go files of a few packages of the Go tree,
// if it is there: a large body of ordinary code.
func goSource() []doc {
	var docs []doc
	for _, pkg := range []string{"net/http", "encoding/json", "fmt", "strings", "bufio", "net/url", "os/exec", "text/template"} {
		files, _ := filepath.Glob(filepath.Join(runtime.GOROOT(), "src", pkg, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			if b, err := os.ReadFile(f); err == nil {
				docs = append(docs, doc{"goroot:" + pkg + "/" + filepath.Base(f), string(b)})
			}
		}
	}
	return docs
}

// TestFalsePositives measures what Find reports on the corpus of ordinary
// text and bounds it at one match per 100 KB.
func TestFalsePositives(t *testing.T) {
	e := engine(t)
	total, found := 0, 0
	byRule := map[string]int{}
	for _, d := range corpus(t) {
		total += len(d.text)
		for _, m := range e.Find([]byte(d.text)) {
			found++
			byRule[m.RuleID]++
			t.Logf("%s: %s %q", d.name, m.RuleID, d.text[m.Start:m.End])
		}
	}
	per100K := float64(found) / (float64(total) / 100e3)
	t.Logf("false positives: %d in %d documents, %.2f MB (%.3f per 100 KB); by rule: %v",
		found, len(corpus(t)), float64(total)/1e6, per100K, byRule)
	if per100K > 1 {
		t.Errorf("%.3f false positives per 100 KB, want at most 1", per100K)
	}
}
