package secrets

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// keywordBait returns n bytes dense with the keywords of gitleaks' generic
// rule, each in a "key_key=value " shape that makes the rule's regex run
// at every hit: the body that took 20 s of CPU to mask before searches
// could be bounded.
func keywordBait(t testing.TB, e *Engine, n int) []byte {
	t.Helper()
	var kws []string
	for _, r := range e.Rules() {
		if r.ID == "generic-api-key" {
			kws = r.Keywords
		}
	}
	if len(kws) == 0 {
		t.Fatal("no generic-api-key rule")
	}
	var sb strings.Builder
	for sb.Len() < n {
		for _, k := range kws {
			sb.WriteString(k + "_" + k + "=aaaaaaaaaaaaaaaaa ")
		}
	}
	return []byte(sb.String()[:n])
}

// TestFindContextStopsBait shows that a deadline ends the search of 9 MB of
// keyword bait, and that the stop is an error, never a clean answer.
func TestFindContextStopsBait(t *testing.T) {
	e := engine(t)
	bait := keywordBait(t, e, 9<<20)
	const bound = 500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	start := time.Now()
	ms, err := e.FindContext(ctx, bait)
	t.Logf("9 MiB of keyword bait: stopped after %v (bound %v): %v", time.Since(start), bound, err)
	if !errors.Is(err, ErrBudget) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrBudget wrapping the deadline", err)
	}
	if ms != nil {
		t.Errorf("a stopped search returned %d matches, want none", len(ms))
	}
}

// TestFindContextComplete shows that a search that ends in time is Find.
func TestFindContextComplete(t *testing.T) {
	e := engine(t)
	for _, d := range corpus(t) {
		t.Run(d.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			got, err := e.FindContext(ctx, []byte(d.text))
			if err != nil {
				t.Fatal(err)
			}
			if want := e.Find([]byte(d.text)); !slices.Equal(got, want) {
				t.Errorf("FindContext = %v, Find = %v", got, want)
			}
		})
	}
}
