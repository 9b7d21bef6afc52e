package proxy

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/ftpgate/ftpgate/nat"
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
	// transfersActive counts the transfers running now: relayed data
	// connections being copied, kernel-path transfers until their final
	// reply.
	transfersActive *prometheus.GaugeVec
	// sessionSeconds and transferSeconds are the durations of sessions
	// and of transfers (command to transfer line).
	sessionSeconds, transferSeconds *prometheus.HistogramVec
	// throttled counts the seconds relays waited for rate_limit.
	throttled *prometheus.CounterVec
	// upstreamFailures counts failed connections to an FTP server.
	upstreamFailures *prometheus.CounterVec
	// pools are the listeners' data port pools, read at each scrape.
	pools *portPoolCollector
}

// portPoolCollector reports the data port pools of the running listeners:
// how many ports each holds, and how many its range has.
type portPoolCollector struct {
	inUse, size *prometheus.Desc

	mu    sync.Mutex
	pools map[string][2]*nat.PortPool // by listener: client side, server side
}

func (c *portPoolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.inUse
	ch <- c.size
}

func (c *portPoolCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for listener, pools := range c.pools {
		for i, side := range []string{"client", "server"} {
			if pools[i] == nil {
				continue
			}
			ch <- prometheus.MustNewConstMetric(c.inUse, prometheus.GaugeValue, float64(pools[i].InUse()), listener, side)
			ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(pools[i].Range().Len()), listener, side)
		}
	}
}

// NewMetrics registers the proxy's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	pools := &portPoolCollector{
		inUse: prometheus.NewDesc("ftpgate_data_ports_in_use",
			"Data ports held now (listening, or carrying a connection), by listener and side (client, server); pool exhaustion shows as ftpgate_rejections_total{reason=\"pool_exhausted\"}.",
			[]string{"listener", "side"}, nil),
		size: prometheus.NewDesc("ftpgate_data_ports",
			"Data ports in the range, by listener and side (client, server).",
			[]string{"listener", "side"}, nil),
		pools: map[string][2]*nat.PortPool{},
	}
	reg.MustRegister(pools)
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
			Help: "Commands received from clients, by listener and verb (verbs outside RFC 959 and its extensions count as OTHER).",
		}, []string{"listener", "verb"}),
		rewrites: f.NewCounterVec(prometheus.CounterOpts{
			Name: "ftpgate_rewrites_total",
			Help: "Address-bearing messages that ftpgate wrote in place of the original, by listener and kind: PORT, EPRT, PASV, EPSV to servers; 227, 229 to clients.",
		}, []string{"listener", "kind"}),
		dataConns: f.NewCounterVec(prometheus.CounterOpts{
			Name: "ftpgate_data_connections_total",
			Help: "Data connections ended, by listener, path (relay, kernel), direction (download, upload, none) and outcome (ok, aborted, idle, failed, forwarded, expired).",
		}, []string{"listener", "path", "direction", "outcome"}),
		dataBytes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "ftpgate_data_bytes_total",
			Help: "Data bytes relayed, by listener and direction (to_client, to_server). The kernel path relays none.",
		}, []string{"listener", "direction"}),
		transfersActive: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ftpgate_transfers_active",
			Help: "Transfers running now, by listener and path: relayed data connections being copied; kernel-path transfers until their final reply.",
		}, []string{"listener", "path"}),
		upstreamFailures: f.NewCounterVec(prometheus.CounterOpts{
			Name: "ftpgate_upstream_dial_failures_total",
			Help: "Connections to an FTP server that failed (refused or timed out), by listener: one per upstream tried.",
		}, []string{"listener"}),
		sessionSeconds: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ftpgate_session_duration_seconds",
			Help:    "How long sessions lasted, from the accept to the end, by listener.",
			Buckets: []float64{1, 10, 60, 300, 900, 3600, 4 * 3600, 24 * 3600},
		}, []string{"listener"}),
		transferSeconds: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ftpgate_transfer_duration_seconds",
			Help:    "How long transfers lasted, from the transfer command until its data connection had ended and the final reply was sent, by listener, data path and direction (download, upload, listing).",
			Buckets: []float64{0.1, 1, 10, 60, 300, 1800, 7200},
		}, []string{"listener", "path", "direction"}),
		throttled: f.NewCounterVec(prometheus.CounterOpts{
			Name: "ftpgate_data_throttled_seconds_total",
			Help: "Seconds that relayed data connections waited for the listener's rate_limit, by listener (summed over the connections).",
		}, []string{"listener"}),
		pools: pools,
		rejections: f.NewCounterVec(prometheus.CounterOpts{
			Name: "ftpgate_rejections_total",
			Help: "Commands, sessions and data connections refused, by listener and reason (docs/security.md lists the reasons).",
		}, []string{"listener", "reason"}),
	}
}

// RejectionReasons are the values of ftpgate_rejections_total's reason
// label (docs/security.md, "Refusal reasons", describes each).
var RejectionReasons = []string{
	"command_syntax", "unknown_verb", "unsolicited_reply", "unsupported",
	"tls_unavailable", "tls", "tls_required", "tls_session_reuse", "server_tls",
	"bounce", "low_port", "family", "syntax", "limit", "client_share",
	"pool_exhausted", "pinhole_conflict", "data_port", "bad_reply", "theft",
	"line_too_long", "allow_list", "proxy_protocol", "login_timeout",
	"allow_clients", "policy", "login_throttle",
}

// dataOutcomes are the outcomes of ftpgate_data_connections_total, by path.
var dataOutcomes = map[DataPath][]string{
	RelayPath:  {"ok", "aborted", "idle", "failed"},
	KernelPath: {"forwarded", "expired"},
}

// InitListener creates every series of listener at zero, so that alerts
// on absent() or on ratios work before the first session.
func (m *Metrics) InitListener(listener string) {
	if m == nil {
		return
	}
	m.sessionsActive.WithLabelValues(listener)
	for _, o := range []string{"ok", "error", "refused"} {
		m.sessions.WithLabelValues(listener, o)
	}
	for _, v := range append(ftp.KnownVerbs(), "OTHER") {
		m.commands.WithLabelValues(listener, v)
	}
	for _, k := range []string{"PORT", "EPRT", "PASV", "EPSV", "227", "229"} {
		m.rewrites.WithLabelValues(listener, k)
	}
	for path, outcomes := range dataOutcomes {
		for _, d := range []string{"download", "upload", "none"} {
			for _, o := range outcomes {
				m.dataConns.WithLabelValues(listener, path.String(), d, o)
			}
		}
	}
	for _, d := range []string{"to_client", "to_server"} {
		m.dataBytes.WithLabelValues(listener, d)
	}
	for _, r := range RejectionReasons {
		m.rejections.WithLabelValues(listener, r)
	}
	for path := range dataOutcomes {
		m.transfersActive.WithLabelValues(listener, path.String())
	}
	m.upstreamFailures.WithLabelValues(listener)
	m.throttled.WithLabelValues(listener)
	m.sessionSeconds.WithLabelValues(listener)
	for path := range dataOutcomes {
		for _, d := range []string{"download", "upload", "listing"} {
			m.transferSeconds.WithLabelValues(listener, path.String(), d)
		}
	}
}

// transfer observes the duration of one ended transfer.
func (m *Metrics) transfer(t Transfer) {
	if m != nil {
		m.transferSeconds.WithLabelValues(t.Listener, t.DataPath.String(), t.Direction).Observe(t.Seconds)
	}
}

// throttleTimer returns what counts the time a relay of listener waited for
// its rate limit.
func (m *Metrics) throttleTimer(listener string) func(time.Duration) {
	if m == nil {
		return func(time.Duration) {}
	}
	c := m.throttled.WithLabelValues(listener)
	return func(d time.Duration) { c.Add(d.Seconds()) }
}

// watchPorts reports listener's data port pools until the returned func
// is called (unless a listener of the same name replaced them since).
func (m *Metrics) watchPorts(listener string, client, server *nat.PortPool) (stop func()) {
	if m == nil {
		return func() {}
	}
	c := m.pools
	mine := [2]*nat.PortPool{client, server}
	c.mu.Lock()
	c.pools[listener] = mine
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.pools[listener] == mine {
			delete(c.pools, listener)
		}
	}
}

// transfers adds delta to the transfers running on path.
func (m *Metrics) transfers(listener string, path DataPath, delta int) {
	if m != nil && delta != 0 {
		m.transfersActive.WithLabelValues(listener, path.String()).Add(float64(delta))
	}
}

func (m *Metrics) upstreamFailure(listener string) {
	if m != nil {
		m.upstreamFailures.WithLabelValues(listener).Inc()
	}
}

func (m *Metrics) sessionStarted(listener string) {
	if m != nil {
		m.sessionsActive.WithLabelValues(listener).Inc()
	}
}

// sessionEnded counts a session that sessionStarted counted; refused says
// that policy refused it (its rejection is counted where it happened).
func (m *Metrics) sessionEnded(listener string, err error, refused bool, d time.Duration) {
	if m == nil {
		return
	}
	m.sessionsActive.WithLabelValues(listener).Dec()
	m.sessionSeconds.WithLabelValues(listener).Observe(d.Seconds())
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
		m.rejections.WithLabelValues(listener, reason).Inc()
	}
}

func (m *Metrics) command(listener, verb string) {
	if m == nil {
		return
	}
	if !ftp.KnownVerb(verb) {
		verb = "OTHER" // bounded: labels only for the verbs ftpgate knows
	}
	m.commands.WithLabelValues(listener, verb).Inc()
}

func (m *Metrics) rewrite(listener, kind string) {
	if m != nil {
		m.rewrites.WithLabelValues(listener, kind).Inc()
	}
}

func (m *Metrics) rejection(listener, reason string) {
	if m != nil {
		m.rejections.WithLabelValues(listener, reason).Inc()
	}
}

// dataConnection counts one ended data connection (its bytes are counted
// as they are copied: byteCounter).
func (m *Metrics) dataConnection(listener string, path DataPath, outcome string, toClient, toServer int64) {
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
	m.dataConns.WithLabelValues(listener, path.String(), direction, outcome).Inc()
}

// byteCounter returns what counts the bytes of one relayed direction
// ("to_client" or "to_server") while they are copied.
func (m *Metrics) byteCounter(listener, direction string) func(int64) {
	if m == nil {
		return func(int64) {}
	}
	c := m.dataBytes.WithLabelValues(listener, direction)
	return func(n int64) { c.Add(float64(n)) }
}
