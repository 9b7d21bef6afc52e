package rules

import (
	"container/heap"
	"context"
	"time"
)

// reaperRetry is how long the reaper waits before it tries again to remove
// a pinhole that the firewall would not delete.
const reaperRetry = time.Second

// reaperIdle is how long the reaper sleeps when no pinhole is open; any
// Open wakes it earlier.
const reaperIdle = time.Minute

// expiryQueue is a min-heap of pinholes by expiry (container/heap).
type expiryQueue []*pinhole

func (q expiryQueue) Len() int           { return len(q) }
func (q expiryQueue) Less(i, j int) bool { return q[i].expiry.Before(q[j].expiry) }
func (q expiryQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index = i
	q[j].index = j
}

func (q *expiryQueue) Push(x any) {
	e := x.(*pinhole)
	e.index = len(*q)
	*q = append(*q, e)
}

func (q *expiryQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	e.index = -1
	return e
}

// insert puts e on the books, to expire at expiry, and wakes the reaper if
// e is now the first to expire.
func (t *IPTables) insert(e *pinhole, expiry time.Time) {
	t.mu.Lock()
	e.expiry = expiry
	heap.Push(&t.queue, e)
	first := e.index == 0
	t.m.active.Set(float64(len(t.queue)))
	t.mu.Unlock()
	if first {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
}

// drop takes e off the books. Its rules must be gone.
func (t *IPTables) drop(e *pinhole) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e.index >= 0 {
		heap.Remove(&t.queue, e.index)
	}
	t.m.active.Set(float64(len(t.queue)))
}

// reschedule moves e's expiry.
func (t *IPTables) reschedule(e *pinhole, expiry time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e.index >= 0 {
		e.expiry = expiry
		heap.Fix(&t.queue, e.index)
	}
}

// untilNext returns how long until the first pinhole expires.
func (t *IPTables) untilNext() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.queue) == 0 {
		return reaperIdle
	}
	return max(time.Until(t.queue[0].expiry), 0)
}

// expired returns the first pinhole if it expired at or before now.
func (t *IPTables) expired(now time.Time) *pinhole {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.queue) == 0 || t.queue[0].expiry.After(now) {
		return nil
	}
	return t.queue[0]
}

// reaperRun is one running reaper goroutine.
type reaperRun struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine returns
}

// finished reports whether the goroutine has returned.
func (r *reaperRun) finished() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// reap removes pinholes as they expire, until ctx is done. It sleeps on a
// timer set to the next expiry; Open wakes it when a pinhole expires
// earlier than all others. Every checkEvery it checks that ftpgate's
// chains and jumps are still there (checkRepair, or the netlink backend's
// check), and reinstalls them if not.
func (t *IPTables) reap(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	timer := time.NewTimer(reaperIdle)
	defer timer.Stop()
	ticker := time.NewTicker(t.checkEvery)
	defer ticker.Stop()
	for {
		timer.Reset(t.untilNext())
		select {
		case <-ctx.Done():
			return
		case <-t.wake:
		case <-timer.C:
			t.reapExpired(ctx)
		case <-ticker.C:
			t.mu.Lock()
			check := t.check
			t.mu.Unlock()
			if check == nil {
				check = t.checkRepair
			}
			check(ctx)
		}
	}
}

// reapExpired removes every pinhole that has expired. A pinhole the
// firewall will not delete is retried after reaperRetry.
func (t *IPTables) reapExpired(ctx context.Context) {
	if err := t.lock(ctx); err != nil {
		return
	}
	defer t.unlock()
	now := time.Now()
	for {
		e := t.expired(now)
		if e == nil {
			return
		}
		start := time.Now()
		err := t.remove(ctx, e)
		d := time.Since(start)
		if ctx.Err() != nil {
			return // Stop flushes the rest
		}
		t.m.observe(opClose, d, err)
		if err != nil {
			t.log.Error("removing expired pinhole failed; retrying", "pinhole", e.p.String(), "retry", reaperRetry, "err", err)
			t.reschedule(e, now.Add(reaperRetry))
			continue
		}
		t.drop(e)
		if e.failed {
			t.log.Info("removed the rules of a pinhole that failed to open", "pinhole", e.p.String(), "seconds", d.Seconds())
		} else {
			t.log.Info("pinhole expired", "pinhole", e.p.String(), "ttl", e.ttl, "seconds", d.Seconds())
		}
	}
}
