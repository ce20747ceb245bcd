package spool

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the spool's Prometheus metrics. The counters exist even
// without a Registerer, so that the code counting needs no nil checks;
// the gauges read Stats when scraped, so they are never stale.
type metrics struct {
	full        prometheus.Counter
	diskFull    prometheus.Counter
	writeErrors prometheus.Counter
	all         []prometheus.Collector
	reg         prometheus.Registerer
}

func newMetrics(s *Spool) *metrics {
	m := &metrics{
		full: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "promptrail_spool_full_total",
			Help: "Records Begin refused because the spool was at its size limit.",
		}),
		diskFull: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "promptrail_spool_disk_full_total",
			Help: "Spool writes refused because the spool's disk had less free space than the reserve (--spool-reserve-bytes).",
		}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "promptrail_spool_write_errors_total",
			Help: "Spool writes (begin, seal, acknowledge) that failed in storage.",
		}),
	}
	records := func(state string, f func(Stats) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "promptrail_spool_records",
			Help:        "Records in the spool: pending (begun, not finished), queued (sealed, not acknowledged) or rejected (refused by the collector for good, kept aside).",
			ConstLabels: prometheus.Labels{"state": state},
		}, func() float64 { return float64(f(s.Stats())) })
	}
	m.all = []prometheus.Collector{
		m.full,
		m.diskFull,
		m.writeErrors,
		records("pending", func(st Stats) int { return st.Pending }),
		records("queued", func(st Stats) int { return st.Queued }),
		records("rejected", func(st Stats) int { return st.Rejected }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "promptrail_spool_bytes",
			Help: "Size of the records in the spool, pending and queued.",
		}, func() float64 { return float64(s.bytes.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "promptrail_spool_limit_bytes",
			Help: "Size limit of the records in the spool.",
		}, func() float64 { return float64(s.max) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "promptrail_spool_oldest_record_age_seconds",
			Help: "Age of the oldest queued record (since its exchange started); 0 if none.",
		}, func() float64 { return s.Stats().OldestAge(time.Now()) }),
	}
	return m
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for i, c := range m.all {
		if err := reg.Register(c); err != nil {
			for _, done := range m.all[:i] {
				reg.Unregister(done)
			}
			return fmt.Errorf("spool: registering metrics (is another spool registered with the same registry?): %w", err)
		}
	}
	m.reg = reg
	return nil
}

// unregister lets a spool reopened in the same process register again.
func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.all {
		m.reg.Unregister(c)
	}
}
