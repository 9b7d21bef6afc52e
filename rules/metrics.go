package rules

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Values of the op label.
const (
	opOpen  = "open"
	opClose = "close"
)

// metrics are the pinhole metrics of one backend.
type metrics struct {
	opDuration *prometheus.HistogramVec
	active     prometheus.Gauge
	errors     *prometheus.CounterVec
	conflicts  prometheus.Counter
}

// newMetrics creates the metrics and registers them on reg, or on a private
// registry if reg is nil.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		opDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ftpgate_pinhole_op_duration_seconds",
			Help: "Time to open or close one pinhole in the firewall, waiting for the lock included.",
			// 10µs to 1.3s: a netlink element takes tens of µs, one
			// fork+exec of iptables a few ms, a contended xtables lock
			// or a large table far more (docs/pinholes.md).
			Buckets: prometheus.ExponentialBuckets(0.00001, 2, 18),
		}, []string{"op"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ftpgate_pinholes_active",
			Help: "Pinholes currently installed in the firewall.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ftpgate_pinhole_errors_total",
			Help: "Pinhole operations that failed, by operation.",
		}, []string{"op"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ftpgate_pinhole_conflicts_total",
			Help: "Pinholes refused because another open one diverts the same connections elsewhere.",
		}),
	}
	if err := register(reg, "pinhole", m.opDuration, m.active, m.errors, m.conflicts); err != nil {
		return nil, err
	}
	for _, op := range []string{opOpen, opClose} {
		m.opDuration.WithLabelValues(op)
		m.errors.WithLabelValues(op)
	}
	return m, nil
}

// observe records one operation.
func (m *metrics) observe(op string, d time.Duration, err error) {
	m.opDuration.WithLabelValues(op).Observe(d.Seconds())
	if err != nil {
		m.errors.WithLabelValues(op).Inc()
	}
}

// register registers cols on reg, or on a private registry if reg is nil;
// what names them in the error.
func register(reg prometheus.Registerer, what string, cols ...prometheus.Collector) error {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	for _, c := range cols {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("registering %s metrics: %w", what, err)
		}
	}
	return nil
}
