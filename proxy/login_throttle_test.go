package proxy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestLoginThrottle: three failed logins in a row end the session of the
// third and refuse the client's next session with 421, counted as
// login_throttle; another client is not affected; once the ban is over the
// client may log in again.
func TestLoginThrottle(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	lt := NewLoginThrottle(3, time.Minute, time.Hour)
	h := newHarness(t, func(s *Server) {
		s.Metrics = m
		s.LoginThrottle = lt
	})
	c := h.dial()
	c.expect(220)
	for range 3 {
		c.cmd("USER alice", 331)
		c.cmd("PASS wrong", 530)
	}
	c.expectClosed() // the third ended the session
	h.waitLog("level=WARN", "reason=login_throttle", "failures=3")

	c = h.dial()
	c.expect(421)
	h.waitLog("session refused", "reason=login_throttle")
	if got := testutil.ToFloat64(m.rejections.WithLabelValues(t.Name(), "login_throttle")); got != 2 {
		t.Errorf("login_throttle rejections = %v, want 2 (the ban, the refused session)", got)
	}

	// Another client (another address) logs in.
	other := h.dialFrom("127.0.0.2:0")
	other.login()
	other.quit()

	// The ban over, the client is served again.
	key := ClientKey(netip.MustParseAddr("127.0.0.1"), 64)
	lt.mu.Lock()
	lt.clients[key].bannedUntil = time.Now().Add(-time.Second)
	lt.mu.Unlock()
	c = h.dial()
	c.login()
	c.quit()
	h.sessionsEnded()
}

// TestLoginThrottleWindow: failures older than the window do not count,
// and the table forgets quiet clients when it is full.
func TestLoginThrottleWindow(t *testing.T) {
	lt := NewLoginThrottle(2, time.Minute, time.Minute)
	a := netip.MustParsePrefix("198.18.0.2/32")
	t0 := time.Unix(1_000_000, 0)
	if lt.Failed(a, t0) || lt.Failed(a, t0.Add(2*time.Minute)) {
		t.Error("banned for two failures two minutes apart, window one minute")
	}
	if !lt.Failed(a, t0.Add(2*time.Minute+time.Second)) {
		t.Error("not banned for two failures a second apart")
	}
	if banned, until := lt.Banned(a, t0.Add(2*time.Minute+2*time.Second)); !banned || !until.Equal(t0.Add(3*time.Minute+time.Second)) {
		t.Errorf("Banned = %v until %v", banned, until)
	}
	if banned, _ := lt.Banned(a, t0.Add(4*time.Minute)); banned {
		t.Error("still banned after the ban")
	}
	for i := range maxTrackedClients + 10 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
		lt.Failed(p, t0.Add(time.Hour+time.Duration(i)*time.Millisecond))
	}
	if n := len(lt.clients); n > maxTrackedClients {
		t.Errorf("%d clients tracked, want at most %d", n, maxTrackedClients)
	}
}
