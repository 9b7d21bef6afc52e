package proxy

import (
	"testing"

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
		{m.commands.WithLabelValues("PASV"), 1},
		{m.commands.WithLabelValues("RETR"), 1},
		{m.rewrites.WithLabelValues("PASV"), 1},
		{m.rewrites.WithLabelValues("227"), 1},
		{m.rejections.WithLabelValues("bounce"), 1},
		{m.dataConns.WithLabelValues("relay", "download", "ok"), 1},
		{m.dataBytes.WithLabelValues("to_client"), float64(len(file))},
		{m.dataBytes.WithLabelValues("to_server"), 0},
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
}
