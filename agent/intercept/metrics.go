package intercept

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// kernelEvents exposes the programs' counters (see counterNames) as one
// Prometheus counter with an event label, read from the map when scraped.
type kernelEvents struct {
	in   *Interceptor
	desc *prometheus.Desc
}

func (k kernelEvents) Describe(ch chan<- *prometheus.Desc) { ch <- k.desc }

func (k kernelEvents) Collect(ch chan<- prometheus.Metric) {
	counts, err := k.in.Counters()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(k.desc, err)
		return
	}
	for name, v := range counts {
		ch <- prometheus.MustNewConstMetric(k.desc, prometheus.CounterValue, float64(v), name)
	}
}

// RegisterMetrics exposes the programs' counters on reg as
// promptrail_kernel_events_total{event=...}. Among the events:
// dropped_quic, UDP packets to a target's port 443 dropped at egress (raw
// sockets included), and forged_mark, connects that carried the agent's
// mark from a socket the agent did not register.
func (in *Interceptor) RegisterMetrics(reg prometheus.Registerer) error {
	k := kernelEvents{in: in, desc: prometheus.NewDesc("promptrail_kernel_events_total",
		"Events counted by the eBPF programs: redirected, refused_udp (UDP socket to a target's port), "+
			"refused_no_agent (fail-closed, no agent), skipped_agent (the agent's own registered sockets), "+
			"skipped_no_proxy, rekeyed, closed, dns_captured, dns_dropped, "+
			"forged_mark (the agent's mark on a socket it did not register; intercepted as usual), "+
			"dropped_quic (UDP to a target's port 443 dropped at egress, raw sockets included), "+
			"dropped_raw (TCP to a target from a raw socket, dropped at egress).",
		[]string{"event"}, nil)}
	if err := reg.Register(k); err != nil {
		return fmt.Errorf("intercept: registering metric promptrail_kernel_events_total: %w", err)
	}
	return nil
}
