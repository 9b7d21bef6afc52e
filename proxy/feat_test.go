package proxy

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestFeat: the TLS features disappear from the server's FEAT list (ftpgate
// refuses AUTH), EPRT is added (ftpgate answers it whatever the server
// supports), the rest passes through byte for byte.
func TestFeat(t *testing.T) {
	h := newHarness(t)
	c := h.dial()
	c.login()
	c.send("FEAT")
	var got []string
	for {
		rl, err := c.rr.Next()
		if err != nil {
			t.Fatalf("reading FEAT reply: %v (so far %q)", err, got)
		}
		got = append(got, string(rl.Raw))
		if rl.Last {
			break
		}
	}
	want := []string{"211-Features:\r\n", " EPSV\r\n", " MDTM\r\n", " PASV\r\n", " REST STREAM\r\n",
		" SIZE\r\n", " TVFS\r\n", " UTF8\r\n", " EPRT\r\n", "211 End\r\n"}
	if !slices.Equal(got, want) {
		t.Errorf("FEAT reply:\n got %q\nwant %q", got, want)
	}
	c.cmd("NOOP", 200)
	c.quit()
	h.sessionsEnded()
}

// TestAuthRefused: on a listener without TLS, AUTH never reaches the
// server; the client gets 534 saying why and goes on in the clear; the
// refusal is logged and counted (reason=tls_unavailable).
func TestAuthRefused(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	h := newHarness(t, func(s *Server) { s.Metrics = m })
	c := h.dial()
	c.expect(220)
	if got := c.cmd("AUTH TLS", 534); !strings.Contains(got, "TLS is not configured") {
		t.Errorf("AUTH refusal %q does not say why", got)
	}
	c.cmd("USER anonymous", 331)
	c.quit()
	h.sessionsEnded()
	if slices.Contains(h.verbs(), "AUTH") {
		t.Errorf("the server received AUTH: %v", h.verbs())
	}
	h.waitLog("command refused", "reason=tls_unavailable")
	if n := testutil.ToFloat64(m.rejections.WithLabelValues(t.Name(), "tls_unavailable")); n != 1 {
		t.Errorf("ftpgate_rejections_total{reason=tls_unavailable} = %v, want 1", n)
	}
}
