package shipper

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the shipper's Prometheus metrics. They exist even without a
// Registerer, so that the code counting needs no nil checks.
type metrics struct {
	sent        prometheus.Counter
	batches     prometheus.Counter
	failed      *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	sendSeconds prometheus.Histogram
	lastSuccess prometheus.Gauge
	all         []prometheus.Collector
}

func newMetrics(src Source) *metrics {
	m := &metrics{
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "promptrail_shipper_records_sent_total",
			Help: "Records the collector acknowledged.",
		}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "promptrail_shipper_batches_sent_total",
			Help: "Batches the collector acknowledged.",
		}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "promptrail_shipper_batches_failed_total",
			Help: "Batches not acknowledged, by reason; they are retried.",
		}, []string{"reason"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "promptrail_shipper_records_rejected_total",
			Help: "Records the collector refused for good, by code; they are kept aside in the spool, not sent again.",
		}, []string{"code"}),
		sendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "promptrail_shipper_send_seconds",
			Help:    "Time from sending a batch to the collector's answer.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12), // 5ms … 10s
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "promptrail_shipper_last_success_timestamp_seconds",
			Help: "Unix time of the last batch the collector acknowledged.",
		}),
	}
	// Zero series for every reason, so that alerts on rate() see them
	// before the first failure.
	for _, r := range failReasons {
		m.failed.WithLabelValues(r)
	}
	m.all = []prometheus.Collector{
		m.sent, m.batches, m.failed, m.rejected, m.sendSeconds, m.lastSuccess,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "promptrail_shipper_queue_depth",
			Help: "Sealed records waiting for the collector's acknowledgement.",
		}, func() float64 { return float64(src.Stats().Queued) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "promptrail_shipper_oldest_record_age_seconds",
			Help: "Age of the oldest record waiting to be shipped (since its exchange started); 0 if none.",
		}, func() float64 { return src.Stats().OldestAge(time.Now()) }),
	}
	return m
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for i, c := range m.all {
		if err := reg.Register(c); err != nil {
			for _, done := range m.all[:i] {
				reg.Unregister(done)
			}
			return fmt.Errorf("shipper: registering metrics (is another shipper registered with the same registry?): %w", err)
		}
	}
	return nil
}
