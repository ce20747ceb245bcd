package mask

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/promptrail/promptrail/agent/secrets"
)

// TestBounded: a Masker bounded by a live context masks as the unbounded
// one does; one whose context has ended reports the budget error, so the
// caller never takes its output for a masked body.
func TestBounded(t *testing.T) {
	const doc = `{"messages":[{"role":"user","content":"my key is AKIAIOSFODNN7EXAMPLF and ghp_1234567890abcdefghijklmnopqrstuvwxyzAB"}]}`
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	m := newEngineMasker(t)
	want, wantFs, _ := m.JSON("request", []byte(doc))
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		stopped bool
	}{
		{"live context", context.Background(), false},
		{"ended context", ended, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, d := range []struct {
				name string
				d    Detector
			}{
				{"engine", m.d},
				{"detector without FindContext", struct{ Detector }{m.d}},
			} {
				bm, stopped := New(d.d, testKey()).Bounded(tc.ctx)
				got, fs, _ := bm.JSON("request", []byte(doc))
				err := stopped()
				if tc.stopped {
					if !errors.Is(err, secrets.ErrBudget) {
						t.Errorf("%s: stopped() = %v, want ErrBudget", d.name, err)
					}
					continue
				}
				if err != nil || !bytes.Equal(got, want) || len(fs) != len(wantFs) {
					t.Errorf("%s: got %s, %v findings, err %v; want %s, %d findings", d.name, got, len(fs), err, want, len(wantFs))
				}
			}
		})
	}
	if len(wantFs) == 0 {
		t.Fatal("the fixture has no secret: the test shows nothing")
	}
}
