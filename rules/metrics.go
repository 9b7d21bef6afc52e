package rules

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
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
	// repairs is by backend label: the iptables backend inside Netlink
	// counts as "iptables" once Netlink fell back to it.
	repairs *prometheus.CounterVec
}

// newMetrics creates the metrics of backend ("iptables", "netlink" or
// "nftables") and registers them on reg, or on a private registry if reg
// is nil.
func newMetrics(reg prometheus.Registerer, backend string) (*metrics, error) {
	repairs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ftpgate_firewall_repairs_total",
		Help: "Times ftpgate found its chains, jumps, sets or tables removed by someone else (a firewall reload) and reinstalled them with the open pinholes.",
	}, []string{"backend"})
	m := &metrics{
		repairs: repairs,
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
			Help: "Pinhole operations that failed, by operation and reason: conflict, unavailable (no ip6tables, no ipset or nftables), permission, busy (the xtables lock), missing (a rule, set or chain gone: the firewall was reloaded by someone else), timeout, other.",
		}, []string{"op", "reason"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ftpgate_pinhole_conflicts_total",
			Help: "Pinholes refused because another open one diverts the same connections elsewhere.",
		}),
	}
	repairs.WithLabelValues(backend) // at 0 from the start
	if err := register(reg, "pinhole", m.opDuration, m.active, m.errors, m.conflicts, repairs); err != nil {
		return nil, err
	}
	for _, op := range []string{opOpen, opClose} {
		m.opDuration.WithLabelValues(op)
		for _, r := range ErrorReasons {
			m.errors.WithLabelValues(op, r)
		}
	}
	return m, nil
}

// observe records one operation.
func (m *metrics) observe(op string, d time.Duration, err error) {
	m.opDuration.WithLabelValues(op).Observe(d.Seconds())
	if err != nil {
		m.errors.WithLabelValues(op, errorReason(err)).Inc()
	}
}

// ErrorReasons are the values of ftpgate_pinhole_errors_total's reason
// label.
var ErrorReasons = []string{"conflict", "unavailable", "permission", "busy", "missing", "timeout", "other"}

// errorReason classifies a failed pinhole operation, from the error's
// kind or, for an iptables command, its message.
func errorReason(err error) string {
	msg := err.Error()
	switch {
	case errors.Is(err, ErrConflict):
		return "conflict"
	case errors.Is(err, ErrFamily), errors.Is(err, ErrNetlinkUnavailable), errors.Is(err, exec.ErrNotFound):
		return "unavailable"
	case errors.Is(err, os.ErrPermission), errors.Is(err, syscall.EPERM),
		strings.Contains(msg, "Permission denied"), strings.Contains(msg, "Operation not permitted"):
		return "permission"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "timeout"
	case errors.Is(err, syscall.EBUSY), errors.Is(err, syscall.EAGAIN),
		strings.Contains(msg, "xtables lock"), strings.Contains(msg, "Resource temporarily unavailable"):
		return "busy"
	case errors.Is(err, syscall.ENOENT), strings.Contains(msg, "No chain/target/match by that name"),
		strings.Contains(msg, "does a matching rule exist"), strings.Contains(msg, "does not exist"):
		return "missing"
	}
	return "other"
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
