package spool

import (
	"context"
	"testing"
)

// benchPrompt makes records of about 2 KB once encoded.
const benchPrompt = 1600

// BenchmarkBeginFinish measures the whole life of a record in the spool
// with many exchanges in flight, as on a busy node.
func BenchmarkBeginFinish(b *testing.B) {
	s := openSpool(b, Config{Dir: b.TempDir()})
	ctx := context.Background()
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := newRecord(benchPrompt)
			if err := s.Begin(ctx, r); err != nil {
				b.Error(err)
				return
			}
			if err := s.Finish(ctx, r); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkBegin measures the synced write that every request waits for
// before it goes upstream: alone (one fsync per record) and with many
// requests in flight (Badger commits them together).
func BenchmarkBegin(b *testing.B) {
	for _, bc := range []struct {
		name        string
		parallelism int
	}{{"serial", 0}, {"parallel", 32}} {
		b.Run(bc.name, func(b *testing.B) {
			s := openSpool(b, Config{Dir: b.TempDir()})
			ctx := context.Background()
			if bc.parallelism == 0 {
				for b.Loop() {
					if err := s.Begin(ctx, newRecord(benchPrompt)); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.SetParallelism(bc.parallelism)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := s.Begin(ctx, newRecord(benchPrompt)); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
