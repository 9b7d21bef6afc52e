package proxy

import (
	"context"
	"time"

	"golang.org/x/time/rate"
)

// A relayed data connection is paced by token buckets (golang.org/x/time/
// rate): one per session (Server.SessionRate), one shared by the
// listener's sessions (Server.ListenerRate), both directions together.
// The copy pays for each chunk after copying it, so a transfer's average
// converges on the limit; the chunk, and the buckets' burst, is a tenth of
// a second at the limit (16 KiB at least, progressChunk at most), so that
// a slow limit does not come in bursts.

// newByteLimiter returns a token bucket of bytesPerSecond, or nil for no
// limit.
func newByteLimiter(bytesPerSecond int64) *rate.Limiter {
	if bytesPerSecond <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(bytesPerSecond), limiterBurst(bytesPerSecond))
}

// limiterBurst is the burst, and the largest chunk, of a limit.
func limiterBurst(bytesPerSecond int64) int {
	return int(min(max(bytesPerSecond/10, 16<<10), progressChunk))
}

// pacer waits, for each chunk a relay copied, until the limits it is
// under allow it. The zero pacer does not wait.
type pacer struct {
	limiters []*rate.Limiter
	// waited adds the time spent waiting to
	// ftpgate_data_throttled_seconds_total.
	waited func(time.Duration)
}

// dataPacer is the pacer of the session's relayed data.
func (ss *session) dataPacer() pacer {
	var p pacer
	for _, l := range []*rate.Limiter{ss.rate, ss.srv.listenerRate()} {
		if l != nil {
			p.limiters = append(p.limiters, l)
		}
	}
	if len(p.limiters) > 0 {
		p.waited = ss.srv.Metrics.throttleTimer(ss.srv.Name)
	}
	return p
}

// chunk is the most the copy may move before it next pays.
func (p pacer) chunk() int64 {
	c := int64(progressChunk)
	for _, l := range p.limiters {
		c = min(c, int64(l.Burst()))
	}
	return c
}

// pay waits until every limit allows n more bytes, or ctx ends.
func (p pacer) pay(ctx context.Context, n int64) error {
	if len(p.limiters) == 0 || n <= 0 {
		return nil
	}
	start := time.Now()
	for _, l := range p.limiters {
		if err := l.WaitN(ctx, int(n)); err != nil {
			return err
		}
	}
	p.waited(time.Since(start))
	return nil
}

// listenerRate is the bucket that the listener's sessions share.
func (s *Server) listenerRate() *rate.Limiter {
	s.rateOnce.Do(func() { s.rate = newByteLimiter(s.ListenerRate) })
	return s.rate
}
