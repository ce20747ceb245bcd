// Package every runs a function on a fixed period until its context ends:
// the loop of every file watcher and poller of the agent and the collector.
package every

import (
	"context"
	"time"
)

// Run calls fn every period, the first time one period from now, until
// ctx is done.
func Run(ctx context.Context, period time.Duration, fn func(context.Context)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn(ctx)
		}
	}
}
