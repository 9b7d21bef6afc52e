package proxy

import (
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetrics: the counters match what a session did.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	h := newHarness(t, func(s *Server) { s.Metrics = m })
	file := randomBytes(5, 100_000)
	h.fake.SetFile("f", file)
	c := h.dial()
	c.login()
	c.retr("PASV", "f")
	c.cmd("PORT 8,8,8,8,200,10", 501)
	c.quit()
	h.sessionsEnded()

	for _, tc := range []struct {
		c    prometheus.Collector
		want float64
	}{
		{m.sessions.WithLabelValues(t.Name(), "ok"), 1},
		{m.sessionsActive.WithLabelValues(t.Name()), 0},
		{m.commands.WithLabelValues(t.Name(), "PASV"), 1},
		{m.commands.WithLabelValues(t.Name(), "RETR"), 1},
		{m.rewrites.WithLabelValues(t.Name(), "PASV"), 1},
		{m.rewrites.WithLabelValues(t.Name(), "227"), 1},
		{m.rejections.WithLabelValues(t.Name(), "bounce"), 1},
		{m.dataConns.WithLabelValues(t.Name(), "relay", "download", "ok"), 1},
		{m.dataBytes.WithLabelValues(t.Name(), "to_client"), float64(len(file))},
		{m.dataBytes.WithLabelValues(t.Name(), "to_server"), 0},
	} {
		if got := testutil.ToFloat64(tc.c); got != tc.want {
			desc := make(chan *prometheus.Desc, 1)
			tc.c.Describe(desc)
			t.Errorf("%v = %v, want %v", <-desc, got, tc.want)
		}
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n == 0 {
		t.Errorf("gathering: %d metrics, %v", n, err)
	}
	// One session and one transfer observed in the duration histograms.
	for _, series := range []string{
		fmt.Sprintf(`ftpgate_session_duration_seconds{listener=%q}`, t.Name()),
		fmt.Sprintf(`ftpgate_transfer_duration_seconds{direction="download",listener=%q,path="relay"}`, t.Name()),
	} {
		if n, ok := seriesValue(t, reg, series); !ok || n != 1 {
			t.Errorf("%s: %v observations (found %v), want 1", series, n, ok)
		}
	}
}

// TestMetricsFromStart: once a listener serves, each of its series exists
// at zero, before any session (absent() and ratio alerts work at once);
// the rejection reasons are exactly those docs/security.md describes.
func TestMetricsFromStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	newHarness(t, func(s *Server) { s.Metrics = m })
	for _, series := range []string{
		`ftpgate_sessions_total{listener="%s",outcome="error"}`,
		`ftpgate_rejections_total{listener="%s",reason="theft"}`,
		`ftpgate_rejections_total{listener="%s",reason="policy"}`,
		`ftpgate_data_connections_total{direction="download",listener="%s",outcome="idle",path="relay"}`,
		`ftpgate_data_connections_total{direction="none",listener="%s",outcome="expired",path="kernel"}`,
		`ftpgate_data_bytes_total{direction="to_server",listener="%s"}`,
		`ftpgate_commands_total{listener="%s",verb="STOR"}`,
		`ftpgate_rewrites_total{kind="229",listener="%s"}`,
		`ftpgate_sessions_active{listener="%s"}`,
	} {
		want := fmt.Sprintf(series, t.Name())
		// Serve (in the harness's goroutine) creates them as it starts.
		for i := 0; i < 100 && !gathered(t, reg, want); i++ {
			time.Sleep(20 * time.Millisecond)
		}
		if !gathered(t, reg, want) {
			t.Errorf("%s does not exist before the first session", want)
		}
	}

	doc, err := os.ReadFile("../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, _ := strings.Cut(string(doc), "## Refusal reasons")
	var documented []string
	for line := range strings.Lines(table) {
		if f := strings.Split(line, "|"); len(f) > 2 && strings.HasPrefix(strings.TrimSpace(f[1]), "`") {
			documented = append(documented, strings.Trim(strings.TrimSpace(f[1]), "`"))
		}
	}
	slices.Sort(documented)
	reasons := slices.Sorted(slices.Values(RejectionReasons))
	if !slices.Equal(documented, reasons) {
		t.Errorf("docs/security.md documents reasons %v;\nRejectionReasons are %v", documented, reasons)
	}
}

// gathered reports whether reg holds the series name{labels} (labels in
// the exposition format's order, sorted by name).
func gathered(t *testing.T, reg *prometheus.Registry, series string) bool {
	_, ok := seriesValue(t, reg, series)
	return ok
}

// seriesValue returns the value of the gauge or counter series in reg.
func seriesValue(t *testing.T, reg *prometheus.Registry, series string) (float64, bool) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			if f.GetName()+"{"+strings.Join(labels, ",")+"}" != series {
				continue
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue(), true
			}
			if h := m.GetHistogram(); h != nil {
				return float64(h.GetSampleCount()), true // a histogram: its count
			}
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

// TestMetricsLive: while a relayed RETR runs, ftpgate_transfers_active
// is 1 and the client-side pool holds its port; both go back to 0 after.
// A server that cannot be reached counts in
// ftpgate_upstream_dial_failures_total and is logged at Warn.
func TestMetricsLive(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	h := newHarness(t, func(s *Server) { s.Metrics = m })
	h.fake.Script(func(s *fakeScript) { s.Throttle = 50 * time.Millisecond })
	h.fake.SetFile("slow", randomBytes(51, 8*chunkSize)) // 8 chunks: 400 ms
	series := func(format string) string { return fmt.Sprintf(format, t.Name()) }
	value := func(name string) float64 {
		t.Helper()
		v, ok := seriesValue(t, reg, name)
		if !ok {
			t.Fatalf("no series %s", name)
		}
		return v
	}
	active := series(`ftpgate_transfers_active{listener="%s",path="relay"}`)
	inUse := series(`ftpgate_data_ports_in_use{listener="%s",side="client"}`)

	c := h.dial()
	c.login() // the listener serves: its pools are reported
	if n := value(series(`ftpgate_data_ports{listener="%s",side="client"}`)); n != float64(h.srv.ClientPorts.Range().Len()) {
		t.Errorf("ftpgate_data_ports client = %v, want the range's %d", n, h.srv.ClientPorts.Range().Len())
	}
	p := c.negotiate("EPSV")
	if n := value(inUse); n != 1 {
		t.Errorf("client ports in use after EPSV = %v, want 1", n)
	}
	c.send("RETR slow")
	dc := p.open()
	buf := make([]byte, 1024)
	if _, err := io.ReadFull(dc, buf); err != nil { // the transfer runs
		t.Fatal(err)
	}
	if n := value(active); n != 1 {
		t.Errorf("%s during the transfer = %v, want 1", active, n)
	}
	if _, err := io.Copy(io.Discard, dc); err != nil {
		t.Fatal(err)
	}
	dc.Close()
	c.expect(150)
	c.expect(226)
	c.quit()
	h.sessionsEnded()
	if n := value(active); n != 0 {
		t.Errorf("%s after the transfer = %v, want 0", active, n)
	}
	if n := value(inUse); n != 0 {
		t.Errorf("client ports in use after the session = %v, want 0", n)
	}

	// A server that is down.
	down := newHarness(t, func(s *Server) {
		s.Metrics = m
		s.Name = t.Name() + "-down"
		s.Upstream = closedAddr(t)
	})
	c = down.dial()
	c.expect(421)
	down.sessionsEnded()
	down.waitLog("level=WARN", "FTP server unreachable")
	if n := value(fmt.Sprintf(`ftpgate_upstream_dial_failures_total{listener="%s-down"}`, t.Name())); n != 1 {
		t.Errorf("upstream dial failures = %v, want 1", n)
	}
}

// TestBytesCountedWhileCopying: ftpgate_data_bytes_total grows while a
// transfer runs (rate() is true during a long transfer), and ends equal
// to the bytes copied.
func TestBytesCountedWhileCopying(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	h := newHarness(t, func(s *Server) { s.Metrics = m })
	toClient := m.dataBytes.WithLabelValues(t.Name(), "to_client")
	c := h.dial()
	c.login()
	p := c.negotiate("PASV")
	c.send("RETR " + endlessFile)
	dc := p.open()
	c.expect(150)
	read := 0
	buf := make([]byte, 64<<10)
	dc.SetReadDeadline(time.Now().Add(ioTimeout))
	for read < 4*progressChunk {
		n, err := dc.Read(buf)
		if err != nil {
			t.Fatalf("reading the transfer: %v", err)
		}
		read += n
	}
	// The transfer still runs: the server sends until the client goes.
	if got := testutil.ToFloat64(toClient); got < progressChunk {
		t.Errorf("to_client = %v after the client read %d bytes of a running transfer, want at least %d", got, read, progressChunk)
	}
	dc.Close()
	c.expect(426)
	c.quit()
	h.sessionsEnded()
	h.waitLog("msg=transfer", "command=RETR path="+endlessFile)
	var logged int64
	for _, line := range strings.Split(h.logs.String(), "\n") {
		if strings.Contains(line, "msg=transfer") {
			fmt.Sscanf(line[strings.Index(line, "bytes_to_client="):], "bytes_to_client=%d", &logged)
		}
	}
	if got := testutil.ToFloat64(toClient); got != float64(logged) || logged < int64(read) {
		t.Errorf("to_client = %v at the end, transfer line says %d, client read %d", got, logged, read)
	}
}

// closedAddr is a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestRateLimit: with rate_limit a relayed download is paced (its copy
// waits for the token buckets, counted in
// ftpgate_data_throttled_seconds_total) and arrives whole; how close the
// rate comes to the limit is measured by BenchmarkRateLimit, not here.
func TestRateLimit(t *testing.T) {
	for _, tc := range []struct {
		name              string
		session, listener int64
	}{
		{"session", 256 << 10, 0},
		{"listener", 0, 256 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m := NewMetrics(reg)
			h := newHarness(t, func(s *Server) {
				s.Metrics = m
				s.SessionRate, s.ListenerRate = tc.session, tc.listener
			})
			file := randomBytes(61, 512<<10) // two seconds at the limit
			h.fake.SetFile("f", file)
			c := h.dial()
			c.login()
			sameContent(t, "RETR", c.retr("EPSV", "f"), file)
			c.quit()
			h.sessionsEnded()
			if got := testutil.ToFloat64(m.throttled.WithLabelValues(t.Name())); got <= 0 {
				t.Errorf("ftpgate_data_throttled_seconds_total = %v, want > 0: the copy never waited for the limit", got)
			}
		})
	}
}
