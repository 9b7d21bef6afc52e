package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/ftpgate/ftpgate/proxy/ftp"
)

// Metrics are the proxy's Prometheus metrics, on a registry of the
// caller's (no global state). Label values come from small fixed sets: no
// addresses, no file names. A nil *Metrics records nothing.
type Metrics struct {
	sessionsActive *prometheus.GaugeVec
	sessions       *prometheus.CounterVec
	commands       *prometheus.CounterVec
	rewrites       *prometheus.CounterVec
	dataConns      *prometheus.CounterVec
	dataBytes      *prometheus.CounterVec
	rejections     *prometheus.CounterVec
}

// NewMetrics registers the proxy's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		sessionsActive: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ftpgate_sessions_active",
			Help: "Control sessions open now.",
		}, []string{"listener"}),
		sessions: f.NewCounterVec(prometheus.CounterOpts{
			Name: "ftpgate_sessions_total",
			Help: "Control sessions ended, by outcome: ok (closed by a peer), error (ended by an error or timeout), refused (limit or allow-list).",
		}, []string{"listener", "outcome"}),
		commands: f.NewCounterVec(prometheus.CounterOpts{
			Name: "ftpgate_commands_total",
			Help: "Commands received from clients, by verb (verbs outside RFC 959 and its extensions count as OTHER).",
		}, []string{"verb"}),
		rewrites: f.NewCounterVec(prometheus.CounterOpts{
			Name: "ftpgate_rewrites_total",
			Help: "Address-bearing messages that ftpgate wrote in place of the original: PORT, EPRT, PASV, EPSV to servers; 227, 229 to clients.",
		}, []string{"kind"}),
		dataConns: f.NewCounterVec(prometheus.CounterOpts{
			Name: "ftpgate_data_connections_total",
			Help: "Data connections ended, by path (relay, kernel), direction (download, upload, none) and outcome (ok, aborted, failed, forwarded, expired).",
		}, []string{"path", "direction", "outcome"}),
		dataBytes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "ftpgate_data_bytes_total",
			Help: "Data bytes relayed, by direction (to_client, to_server). The kernel path relays none.",
		}, []string{"direction"}),
		rejections: f.NewCounterVec(prometheus.CounterOpts{
			Name: "ftpgate_rejections_total",
			Help: "Commands, sessions and data connections refused, by reason.",
		}, []string{"reason"}),
	}
}

func (m *Metrics) sessionStarted(listener string) {
	if m != nil {
		m.sessionsActive.WithLabelValues(listener).Inc()
	}
}

// sessionEnded counts a session that sessionStarted counted; refused says
// that policy refused it (its rejection is counted where it happened).
func (m *Metrics) sessionEnded(listener string, err error, refused bool) {
	if m == nil {
		return
	}
	m.sessionsActive.WithLabelValues(listener).Dec()
	outcome := "ok"
	switch {
	case refused:
		outcome = "refused"
	case err != nil:
		outcome = "error"
	}
	m.sessions.WithLabelValues(listener, outcome).Inc()
}

// sessionRefused counts a connection refused before its session started.
func (m *Metrics) sessionRefused(listener, reason string) {
	if m != nil {
		m.sessions.WithLabelValues(listener, "refused").Inc()
		m.rejections.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) command(verb string) {
	if m == nil {
		return
	}
	if !ftp.KnownVerb(verb) {
		verb = "OTHER" // bounded: labels only for the verbs ftpgate knows
	}
	m.commands.WithLabelValues(verb).Inc()
}

func (m *Metrics) rewrite(kind string) {
	if m != nil {
		m.rewrites.WithLabelValues(kind).Inc()
	}
}

func (m *Metrics) rejection(reason string) {
	if m != nil {
		m.rejections.WithLabelValues(reason).Inc()
	}
}

// dataConnection counts one ended data connection and its bytes.
func (m *Metrics) dataConnection(path DataPath, outcome string, toClient, toServer int64) {
	if m == nil {
		return
	}
	direction := "none"
	switch {
	case toClient > 0:
		direction = "download"
	case toServer > 0:
		direction = "upload"
	}
	m.dataConns.WithLabelValues(path.String(), direction, outcome).Inc()
	m.dataBytes.WithLabelValues("to_client").Add(float64(toClient))
	m.dataBytes.WithLabelValues("to_server").Add(float64(toServer))
}
