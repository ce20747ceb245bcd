package mask

import (
	"context"
	"fmt"

	"github.com/promptrail/promptrail/agent/secrets"
)

// contextFinder is a Detector whose search a context can stop;
// *secrets.Engine is one.
type contextFinder interface {
	FindContext(ctx context.Context, text []byte) ([]secrets.Match, error)
}

// Bounded returns a Masker that stops searching when ctx is done (its
// deadline is the CPU budget of one body), and a function that reports
// the error wrapping secrets.ErrBudget if it did. Once stopped, it finds
// nothing more, so a walk over a large document ends soon; what it masked
// is then incomplete and must not be forwarded. The returned Masker is
// for one body at a time: it is not safe for concurrent use.
func (m *Masker) Bounded(ctx context.Context) (*Masker, func() error) {
	b := &boundedDetector{Detector: m.d, ctx: ctx}
	return &Masker{d: b, key: m.key}, func() error { return b.err }
}

// boundedDetector runs a Detector under a context.
type boundedDetector struct {
	Detector
	ctx context.Context
	err error
}

func (b *boundedDetector) Find(text []byte) []secrets.Match {
	if b.err != nil {
		return nil
	}
	if cf, ok := b.Detector.(contextFinder); ok {
		ms, err := cf.FindContext(b.ctx, text)
		if err != nil {
			b.err = fmt.Errorf("mask: %w", err)
			return nil
		}
		return ms
	}
	// A detector that cannot be stopped is checked between texts.
	ms := b.Detector.Find(text)
	if err := b.ctx.Err(); err != nil {
		b.err = fmt.Errorf("mask: %w: %w", secrets.ErrBudget, context.Cause(b.ctx))
		return nil
	}
	return ms
}
