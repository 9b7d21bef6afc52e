package proxy

import (
	"sync"
	"testing"
	"time"
)

// BenchmarkRateLimit measures how close rate-limited downloads come to
// their limit (make bench-rate): "of-limit" is the bytes per second the
// client received over the limit, 1.00 on the mark. One session under
// rate_limit.session, then two at once sharing rate_limit.listener. Each
// download lasts about 4 s at the limit; the first tenth of a second of
// it rides the bucket's burst.
func BenchmarkRateLimit(b *testing.B) {
	const limit = 8 << 20
	for _, bc := range []struct {
		name     string
		sessions int
		session  int64
		listener int64
	}{
		{"session", 1, limit, 0},
		{"listener-2-sessions", 2, 0, limit},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := newHarness(b, func(s *Server) {
				s.SessionRate, s.ListenerRate = bc.session, bc.listener
				s.DataTimeout = time.Minute
			})
			file := randomBytes(71, 4*limit/bc.sessions)
			h.fake.SetFile("f", file)
			b.ResetTimer()
			var ratio float64
			for range b.N {
				start := time.Now()
				var wg sync.WaitGroup
				for range bc.sessions {
					wg.Go(func() {
						c := h.dial()
						c.login()
						if got := c.retr("EPSV", "f"); len(got) != len(file) {
							b.Errorf("got %d bytes, want %d", len(got), len(file))
						}
						c.quit()
					})
				}
				wg.Wait()
				ratio = float64(bc.sessions*len(file)) / time.Since(start).Seconds() / limit
			}
			b.StopTimer()
			h.sessionsEnded()
			b.ReportMetric(ratio, "of-limit")
		})
	}
}
