package secrets

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDebugRules(t *testing.T) {
	t0 := time.Now()
	e, err := NewEngine(Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("NewEngine %v, %d rules %d comps", time.Since(t0), len(e.rules), len(e.comps))
	counts := map[string]int{}
	for _, c := range e.comps {
		key := fmt.Sprintf("near=%v policy=%d", c.near, c.pPolicy)
		counts[key]++
		if c.near || c.pPolicy == pGeneral || c.pPolicy == pAssert || len(c.rule.comps) > 1 || c.rule.source != "gitleaks" {
			t.Logf("%-40s near=%v pol=%d pre=%d ks=%d kw=%v filter=%.80s", c.rule.id, c.near, c.pPolicy, c.preMax, c.ksMax, c.keywords, c.filter)
		}
	}
	t.Log(counts)
	t.Logf("AC states %d classes %d", len(e.index.depth), e.index.nclass)
}

func TestDebugSpeed(t *testing.T) {
	e, err := NewEngine(Config{})
	if err != nil {
		t.Fatal(err)
	}
	var buf []byte
	files, _ := filepath.Glob("/usr/local/go/src/net/http/*.go")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, _ := os.ReadFile(f)
		buf = append(buf, b...)
	}
	ms := e.Find(buf)
	for _, m := range ms {
		t.Logf("%s %q", m.RuleID, buf[m.Start:m.End])
	}
	const N = 10
	t0 := time.Now()
	for i := 0; i < N; i++ {
		e.Find(buf)
	}
	el := time.Since(t0) / N
	t.Logf("Find: %v %.1f MB/s", el, float64(len(buf))/el.Seconds()/1e6)
	t0 = time.Now()
	hits := 0
	for i := 0; i < N; i++ {
		e.index.scan(buf, func(s, e, k int) { hits++ })
	}
	el = time.Since(t0) / N
	t.Logf("scan: %v %.1f MB/s hits %d", el, float64(len(buf))/el.Seconds()/1e6, hits/N)
	e.Pending(buf)
	t0 = time.Now()
	p := e.Pending(buf)
	t.Logf("Pending: %v -> %d of %d", time.Since(t0), p, len(buf))
	for _, c := range e.comps {
		t0 := time.Now()
		hits := 0
		e.index.scan(buf, func(s, en, k int) {
			for _, ci := range e.kwComps[k] {
				if e.comps[ci] == c {
					hits++
					c.pendingHit(buf, s, en)
				}
			}
		})
		c.pendingFuture(buf)
		if d := time.Since(t0); d > 3*time.Millisecond {
			t.Logf("%s %v hits %d", c.rule.id, d, hits)
		}
	}
}

func BenchmarkDebugFind(b *testing.B) {
	e, _ := NewEngine(Config{})
	var buf []byte
	files, _ := filepath.Glob("/usr/local/go/src/net/http/*.go")
	for _, f := range files {
		if !strings.HasSuffix(f, "_test.go") {
			x, _ := os.ReadFile(f)
			buf = append(buf, x...)
		}
	}
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.Find(buf)
	}
}

func TestDebugFilterCost(t *testing.T) {
	e, _ := NewEngine(Config{})
	var buf []byte
	files, _ := filepath.Glob("/usr/local/go/src/net/http/*.go")
	for _, f := range files {
		if !strings.HasSuffix(f, "_test.go") {
			x, _ := os.ReadFile(f)
			buf = append(buf, x...)
		}
	}
	sc := &scratch{}
	hits := e.collectHits(buf, sc)
	type st struct {
		n, pass int
		d       time.Duration
	}
	stats := map[string]*st{}
	for _, h := range hits {
		c := e.comps[h.comp]
		if c.near {
			continue
		}
		s := stats[c.rule.id]
		if s == nil {
			s = &st{}
			stats[c.rule.id] = s
		}
		t0 := time.Now()
		ok := c.filter.Match(buf[h.start:c.filterEnd(buf, h.start)])
		s.d += time.Since(t0)
		s.n++
		if ok {
			s.pass++
		}
	}
	for id, s := range stats {
		if s.d > 100*time.Microsecond {
			t.Logf("%-40s hits %5d pass %4d %v (%v/hit)", id, s.n, s.pass, s.d, s.d/time.Duration(s.n))
		}
	}
}
