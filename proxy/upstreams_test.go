package proxy

import (
	"bufio"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestUpstreamFailover: with the first upstream down, sessions go to the
// second; the one that failed is tried last for the hold-down, so the next
// session does not wait for it again; once it is back and the hold-down
// is over, it is the primary again. With every upstream down the client
// gets 421.
func TestUpstreamFailover(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	down := closedAddr(t)
	h := newHarness(t, func(s *Server) {
		s.Metrics = m
		s.Upstreams = []string{down, s.Upstream}
		s.UpstreamHoldDown = time.Hour
	})
	failures := m.upstreamFailures.WithLabelValues(t.Name())
	for i := range 3 {
		c := h.dial()
		c.login()
		c.quit()
		if got := testutil.ToFloat64(failures); got != 1 {
			t.Errorf("session %d: %v upstream dial failures, want 1 (the hold-down keeps the dead one last)", i, got)
		}
	}
	h.sessionsEnded()
	h.waitLog("level=WARN", "FTP server unreachable", "server="+down)
	if n := h.fake.Sessions(); n != 3 {
		t.Errorf("the second upstream had %d sessions, want 3", n)
	}

	// The hold-down over, the first is tried first again: still down,
	// one more failure, the session still served.
	h.srv.upstreamState.mu.Lock()
	h.srv.upstreamState.failed[down] = time.Now().Add(-2 * time.Hour)
	h.srv.upstreamState.mu.Unlock()
	c := h.dial()
	c.login()
	c.quit()
	h.sessionsEnded()
	if got := testutil.ToFloat64(failures); got != 2 {
		t.Errorf("%v upstream dial failures after the hold-down, want 2", got)
	}

	all := newHarness(t, func(s *Server) {
		s.Metrics = m
		s.Name = t.Name() + "-all-down"
		s.Upstreams = []string{closedAddr(t), closedAddr(t)}
	})
	c = all.dial()
	c.expect(421)
	all.sessionsEnded()
	if got := testutil.ToFloat64(m.upstreamFailures.WithLabelValues(t.Name() + "-all-down")); got != 2 {
		t.Errorf("%v upstream dial failures with both down, want 2", got)
	}
}

// TestUpstreamRoundRobin: each session starts at the next upstream.
func TestUpstreamRoundRobin(t *testing.T) {
	second := newFakeFTP(t)
	h := newHarness(t, func(s *Server) {
		s.Upstreams = []string{s.Upstream, second.Addr()}
		s.UpstreamPolicy = UpstreamsRoundRobin
	})
	for range 4 {
		c := h.dial()
		c.login()
		c.quit()
	}
	h.sessionsEnded()
	if a, b := h.fake.Sessions(), second.Sessions(); a != 2 || b != 2 {
		t.Errorf("sessions per upstream: %d and %d, want 2 and 2", a, b)
	}
}

// TestUpstreamProxyProtocol: with UpstreamProxyProtocol the server reads,
// first on the control connection, a PROXY header (v1 or v2) that names
// the client's address and the one it connected to, then FTP as usual.
func TestUpstreamProxyProtocol(t *testing.T) {
	for _, version := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			headers := make(chan *proxyproto.Header, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(ioTimeout))
				r := bufio.NewReader(c)
				hdr, err := proxyproto.Read(r)
				if err != nil {
					t.Errorf("reading the PROXY header: %v", err)
				}
				headers <- hdr
				fmt.Fprintf(c, "220 behind ftpgate\r\n")
				if line, err := r.ReadString('\n'); err == nil && line == "QUIT\r\n" {
					fmt.Fprintf(c, "221 bye\r\n")
				}
			}()
			h := newHarness(t, func(s *Server) {
				s.Upstream = ln.Addr().String()
				s.UpstreamProxyProtocol = version
			})
			c := h.dial()
			c.expect(220)
			c.quit()
			h.sessionsEnded()
			hdr := <-headers
			if hdr == nil {
				t.Fatal("no PROXY header")
			}
			src, dst, _ := hdr.TCPAddrs()
			if int(hdr.Version) != version || src.String() != c.c.LocalAddr().String() || dst.String() != h.addr {
				t.Errorf("PROXY header v%d from %v to %v, want v%d from %v to %v",
					hdr.Version, src, dst, version, c.c.LocalAddr(), h.addr)
			}
		})
	}
}
