package secrets

import (
	"testing"
	"time"
)

func TestDbgDocTime(t *testing.T) {
	e := engine(t)
	for _, d := range corpus(t) {
		t0 := time.Now()
		e.Find([]byte(d.text))
		el := time.Since(t0)
		if el > 2*time.Millisecond {
			t.Logf("%-40s %7d bytes %v %.1f MB/s", d.name, len(d.text), el, float64(len(d.text))/el.Seconds()/1e6)
		}
	}
}

func BenchmarkDbgIdent(b *testing.B) {
	e := engine(b)
	var text []byte
	for _, d := range corpus(b) {
		if d.name == "identifiers" {
			text = []byte(d.text)
		}
	}
	b.SetBytes(int64(len(text)))
	for i := 0; i < b.N; i++ {
		e.Find(text)
	}
}

func TestDbgIdentStats(t *testing.T) {
	e := engine(t)
	var text []byte
	for _, d := range corpus(t) {
		if d.name == "identifiers" {
			text = []byte(d.text)
		}
	}
	sc := &scratch{}
	hits := e.collectHits(text, sc)
	per := map[string][2]int{}
	for _, h := range hits {
		c := e.comps[h.comp]
		if c.near {
			continue
		}
		x := per[c.rule.id]
		x[0]++
		if c.filter.Match(text[h.start:c.filterEnd(text, h.start)]) {
			x[1]++
		}
		per[c.rule.id] = x
	}
	for id, x := range per {
		if x[0] > 50 {
			t.Logf("%-30s hits %d pass %d", id, x[0], x[1])
		}
	}
}
