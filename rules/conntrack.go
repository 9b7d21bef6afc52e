package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrClosed is what an Expectation's Err wraps when its Conntrack was
// closed before a matching connection was seen.
var ErrClosed = errors.New("conntrack watcher closed")

// overflowLogEvery bounds how often an overflowing event socket is logged.
const overflowLogEvery = 10 * time.Second

// reconcileEvery bounds how often the reader looks the pending
// Expectations up in the connection table after the event socket
// overflowed: each lookup walks the kernel's whole table.
const reconcileEvery = time.Second

// lookupTimeout bounds one lookup in the connection table when the caller's
// context has no earlier deadline.
const lookupTimeout = 5 * time.Second

// newConn is a TCP connection as an event or a lookup in the kernel's
// connection table reports it.
type newConn struct {
	key   expectKey      // from the original tuple
	sport uint16         // the source port, for logs
	reply netip.AddrPort // the reply tuple's source: where the connection was delivered (its DNAT target), unmapped
	// counters are the entry's byte counters (a lookup's, with
	// nf_conntrack_acct on); nil without them.
	counters *Counters
}

// Counters are the bytes of a connection as conntrack counts them (IP
// packets, headers included), in its original direction (from the side
// that connected) and in reply, with net.netfilter.nf_conntrack_acct on.
type Counters struct {
	OrigBytes, OrigPackets   uint64
	ReplyBytes, ReplyPackets uint64
}

// eventSource delivers the kernel's NEW events and looks connections up in
// its table. The Linux implementation uses two netlink sockets
// (conntrack_linux.go); the unit tests use a fake.
type eventSource interface {
	// receive blocks until events arrive and returns the new TCP
	// connections among them, possibly none. An error wrapping
	// syscall.ENOBUFS means events were lost and more may follow; after
	// Close, receive returns an error.
	receive() ([]newConn, error)
	// lookup returns the TCP connections in the kernel's table whose
	// original tuple is from k.from (any port) to k.to, possibly among
	// others; the caller matches them. It gives up when ctx is done. Safe
	// for concurrent use with receive and with itself.
	lookup(ctx context.Context, k expectKey) ([]newConn, error)
	// Close closes the source and unblocks receive.
	Close() error
}

// Conntrack watches the kernel's connection tracking for new TCP connections (netlink NEW events), so that ftpgate learns
// when a data connection that the kernel forwards on its own (the kernel data path) has been made, and can remove its pinhole.
// Safe for concurrent use.
//
// Only connections that conntrack tracks are seen: in a network namespace
// where some rule uses conntrack (any NAT rule, any -m conntrack match such
// as ftpgate's pinholes, or a stateful base rule set). The event for a
// connection comes when the firewall has let its first packet (the SYN)
// through and conntrack confirmed the entry; a SYN that the firewall drops
// makes no event. Conntrack zones are ignored.
//
// Events are asynchronous: the kernel queues a connection's event when its
// first packet passes, and the reader goroutine takes it some time later.
// An owner that gives up waiting (its session ended) must not conclude that
// the connection was never made: Expectation.Lookup asks the kernel's
// connection table instead, which is authoritative.
//
// The kernel reports every new connection in the namespace to the one
// goroutine, FTP or not; if it falls behind and the socket overflows, the
// events in between are lost (logged, at most every 10s, and counted in
// ftpgate_conntrack_overflows_total). The reader then looks every pending
// Expectation up in the connection table (at most once a second), so that
// none waits for an event that will never come.
type Conntrack struct {
	log     *slog.Logger
	src     eventSource
	metrics *conntrackMetrics
	done    chan struct{} // closed when the reader goroutine has returned

	mu     sync.Mutex
	closed bool         // Close was called
	err    error        // non-nil once closed or the reader failed: ends every pending and later Expectation
	exps   expectations // pending expectations
}

// conntrackMetrics count what the events missed.
type conntrackMetrics struct {
	overflows prometheus.Counter
	lookups   *prometheus.CounterVec
}

// Values of the result label of ftpgate_conntrack_lookups_total.
const (
	lookupFound    = "found"
	lookupNotFound = "not_found"
	lookupFailed   = "failed"
)

// newConntrackMetrics creates the metrics and registers them on reg, or on
// a private registry if reg is nil.
func newConntrackMetrics(reg prometheus.Registerer) (*conntrackMetrics, error) {
	m := &conntrackMetrics{
		overflows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ftpgate_conntrack_overflows_total",
			Help: "Times the conntrack event socket overflowed and the kernel dropped events.",
		}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ftpgate_conntrack_lookups_total",
			Help: "Lookups of expected kernel-path data connections in the conntrack table, made when their event " +
				"did not arrive in time (late or lost), by result: found means the event was missed.",
		}, []string{"result"}),
	}
	if err := register(reg, "conntrack", m.overflows, m.lookups); err != nil {
		return nil, err
	}
	for _, r := range []string{lookupFound, lookupNotFound, lookupFailed} {
		m.lookups.WithLabelValues(r)
	}
	return m, nil
}

// newConntrack starts the reader on src.
func newConntrack(log *slog.Logger, src eventSource, m *conntrackMetrics) *Conntrack {
	c := &Conntrack{log: log, src: src, metrics: m, done: make(chan struct{})}
	go c.readEvents()
	return c
}

// Close stops the reader, closes the socket and ends every pending
// Expectation with an error wrapping ErrClosed. It waits for the reader
// goroutine to return. Later calls return nil. Expect after Close returns
// an Expectation that is already done, with that error.
func (c *Conntrack) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-c.done
		return nil
	}
	c.closed = true
	if c.err == nil {
		c.err = ErrClosed
	}
	c.exps.endAll(c.err)
	c.mu.Unlock()

	err := c.src.Close()
	<-c.done
	if err != nil {
		return fmt.Errorf("closing conntrack event socket: %w", err)
	}
	return nil
}

// Expect registers interest in the next new TCP connection whose ORIGINAL tuple is from -> to (source address any port,
// destination address and port exact) and, if via is valid, whose REPLY tuple comes from via (the connection was
// delivered there: its DNAT target). Register before the connection can happen (before the pinhole opens).
// Wait on the returned Expectation.
//
// The original tuple is the connection as its first packet arrived, before
// any NAT: with a DNAT pinhole, to is the address the client dialled, not
// the DNAT target, which is via. IPv4-mapped addresses are unmapped and
// zones ignored. One connection satisfies one Expectation, the oldest
// registered for its tuple. If from or to is invalid or unspecified, to
// has port 0, or the two are of different families, the Expectation is
// done at once and its Err wraps ErrInvalid.
func (c *Conntrack) Expect(from netip.Addr, to, via netip.AddrPort) *Expectation {
	e := &Expectation{c: c, key: newExpectKey(from, to), via: unmapAddrPort(via), done: make(chan struct{})}
	if err := e.key.check(); err != nil {
		e.end(fmt.Errorf("expecting a connection %s -> %s: %w: %s", from, to, ErrInvalid, err))
		return e
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		e.end(fmt.Errorf("expecting a connection %s -> %s: %w", from, to, c.err))
		return e
	}
	c.exps.add(e)
	return e
}

// readEvents is the reader goroutine: it receives NEW events until the
// source is closed or fails for good.
func (c *Conntrack) readEvents() {
	defer close(c.done)
	var (
		overflows     int       // since the last log line
		lastLog       time.Time // of an overflow
		lastReconcile time.Time
	)
	for {
		conns, err := c.src.receive()
		if err != nil {
			c.mu.Lock()
			closed := c.closed
			c.mu.Unlock()
			if closed {
				return
			}
			if errors.Is(err, syscall.ENOBUFS) {
				// The kernel dropped events: the socket's buffer was full.
				// The connections they reported are in its table.
				c.metrics.overflows.Inc()
				overflows++
				if now := time.Now(); now.Sub(lastLog) >= overflowLogEvery {
					c.log.Warn("conntrack event socket overflowed, events lost: looking pending connections up in the conntrack table",
						"times", overflows, "err", err)
					overflows, lastLog = 0, now
				}
				if time.Since(lastReconcile) >= reconcileEvery {
					c.reconcile()
					lastReconcile = time.Now()
				}
				continue
			}
			c.fail(fmt.Errorf("reading conntrack events: %w", err))
			return
		}
		for _, nc := range conns {
			c.seen(nc)
		}
	}
}

// fail ends every pending and later Expectation with err.
func (c *Conntrack) fail(err error) {
	c.log.Error("conntrack events stopped", "err", err)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err = err
	c.exps.endAll(err)
}

// seen satisfies the oldest Expectation that nc matches, if any.
func (c *Conntrack) seen(nc newConn) {
	c.mu.Lock()
	e := c.exps.take(nc)
	if e != nil {
		e.sport = nc.sport
		e.end(nil)
	}
	c.mu.Unlock()
	if e != nil {
		c.log.Debug("expected connection seen", "from", nc.key.from, "sport", nc.sport, "to", nc.key.to, "via", nc.reply)
	}
}

// reconcile looks every pending Expectation up in the connection table,
// after events were lost, and satisfies those whose connection is there.
// It runs in the reader goroutine.
func (c *Conntrack) reconcile() {
	c.mu.Lock()
	var pending []*Expectation
	for _, q := range c.exps.m {
		pending = append(pending, q...)
	}
	c.mu.Unlock()
	found := 0
	for _, e := range pending {
		ok, err := e.lookup(context.Background())
		if err != nil {
			c.log.Warn("looking up a pending connection after lost events", "from", e.key.from, "to", e.key.to, "err", err)
			continue
		}
		if ok {
			found++
		}
	}
	if found > 0 {
		c.log.Info("connections found in the conntrack table after lost events", "found", found, "pending", len(pending))
	}
}

// lookup asks the connection table for a TCP connection that k and via
// match, counting the result.
func (c *Conntrack) lookup(ctx context.Context, k expectKey, via netip.AddrPort) (found bool, sport uint16, err error) {
	defer func() {
		switch {
		case err != nil:
			c.metrics.lookups.WithLabelValues(lookupFailed).Inc()
		case found:
			c.metrics.lookups.WithLabelValues(lookupFound).Inc()
		default:
			c.metrics.lookups.WithLabelValues(lookupNotFound).Inc()
		}
	}()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, lookupTimeout)
		defer cancel()
	}
	conns, err := c.src.lookup(ctx, k)
	if err != nil {
		return false, 0, fmt.Errorf("looking up %s -> %s in the conntrack table: %w", k.from, k.to, err)
	}
	for _, nc := range conns {
		if nc.key == k && viaMatches(via, nc) {
			return true, nc.sport, nil
		}
	}
	return false, 0, nil
}

// Counters returns the byte counters of the connection that satisfied e,
// from the kernel's table (where it stays a while after it closed), for
// the transfer line of a kernel-path transfer. ok is false when the table
// has no counters (nf_conntrack_acct off), or no single entry that is
// surely e's connection.
func (e *Expectation) Counters(ctx context.Context) (cnt Counters, ok bool, err error) {
	select {
	case <-e.done:
		if e.err != nil {
			return Counters{}, false, nil
		}
	default:
		return Counters{}, false, nil // not seen
	}
	if _, has := ctx.Deadline(); !has {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, lookupTimeout)
		defer cancel()
	}
	conns, err := e.c.src.lookup(ctx, e.key)
	if err != nil {
		return Counters{}, false, fmt.Errorf("reading the counters of %s -> %s: %w", e.key.from, e.key.to, err)
	}
	var match *newConn
	for i, nc := range conns {
		if nc.key != e.key || !viaMatches(e.via, nc) || e.sport != 0 && nc.sport != e.sport {
			continue
		}
		if match != nil {
			return Counters{}, false, nil // two candidates: neither is surely it
		}
		match = &conns[i]
	}
	if match == nil || match.counters == nil {
		return Counters{}, false, nil
	}
	return *match.counters, true, nil
}

// Expectation is one registered interest.
type Expectation struct {
	c    *Conntrack
	key  expectKey
	via  netip.AddrPort // if valid, the reply tuple's source that a match needs
	done chan struct{}
	err  error // written once, before done is closed
	// sport is the matched connection's source port, written before done
	// is closed (0 if not known): Counters picks that one.
	sport uint16
}

// Done is closed when a matching connection has been seen (or the Conntrack was closed: then Err reports it).
//
// It is also closed, with Err set, when the Expectation was invalid or the
// reader failed for good. Cancel does not close it.
func (e *Expectation) Done() <-chan struct{} { return e.done }

// Err returns nil while Done is open and when a matching connection was
// seen; otherwise why the Expectation ended: an error wrapping ErrClosed,
// ErrInvalid, or the reader's error.
func (e *Expectation) Err() error {
	select {
	case <-e.done:
		return e.err
	default:
		return nil
	}
}

// Lookup reports whether the expected connection has been made, for an
// owner that stops waiting on Done: events are delivered asynchronously
// and may be late or lost (see Conntrack). It returns true at once if Done
// is closed with a nil Err; otherwise it asks the kernel's connection
// table for a TCP connection that e matches (made before or after Expect:
// the table does not tell), and if there is one satisfies e, as an event
// would have. Each lookup is counted in ftpgate_conntrack_lookups_total.
// It works after Cancel, and after the Conntrack's reader failed, but not
// after Close.
func (e *Expectation) Lookup(ctx context.Context) (bool, error) {
	select {
	case <-e.done:
		if e.err == nil {
			return true, nil
		}
	default:
	}
	return e.lookup(ctx)
}

// lookup asks the table for e's connection and, if there is one, ends e
// with a nil error if it is still pending.
func (e *Expectation) lookup(ctx context.Context) (bool, error) {
	c := e.c
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return false, fmt.Errorf("looking up %s -> %s: %w", e.key.from, e.key.to, ErrClosed)
	}
	found, sport, err := c.lookup(ctx, e.key, e.via)
	if err != nil || !found {
		return false, err
	}
	c.mu.Lock()
	if c.exps.remove(e) {
		e.sport = sport
		e.end(nil)
	}
	c.mu.Unlock()
	return true, nil
}

// Cancel unregisters the expectation; idempotent. Always call it.
//
// After Cancel no connection satisfies e; if one already has, Done stays
// closed and Err nil.
func (e *Expectation) Cancel() {
	e.c.mu.Lock()
	defer e.c.mu.Unlock()
	e.c.exps.remove(e)
}

// end records err and closes Done. The caller has taken e off the books
// (or never put it there), so end runs once per Expectation.
func (e *Expectation) end(err error) {
	e.err = err
	close(e.done)
}

// expectKey is what an Expectation matches: the source address and the
// destination address and port of a connection's original tuple,
// unmapped and without zones.
type expectKey struct {
	from netip.Addr
	to   netip.AddrPort
}

func newExpectKey(from netip.Addr, to netip.AddrPort) expectKey {
	return expectKey{from: from.Unmap().WithZone(""), to: unmapAddrPort(to)}
}

// unmapAddrPort returns ap with its address unmapped and without zone; the
// zero AddrPort stays zero.
func unmapAddrPort(ap netip.AddrPort) netip.AddrPort {
	if !ap.Addr().IsValid() {
		return ap
	}
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}

// viaMatches reports whether a connection nc satisfies the delivery
// address via of an Expectation: any, if via is not valid.
func viaMatches(via netip.AddrPort, nc newConn) bool {
	return !via.Addr().IsValid() || nc.reply == via
}

// check reports why k can never match a connection.
func (k expectKey) check() error {
	switch {
	case !k.from.IsValid() || k.from.IsUnspecified():
		return fmt.Errorf("source %s is not a specific address", k.from)
	case !k.to.Addr().IsValid() || k.to.Addr().IsUnspecified():
		return fmt.Errorf("destination %s is not a specific address", k.to.Addr())
	case k.to.Port() == 0:
		return fmt.Errorf("destination %s has port 0", k.to)
	case k.from.Is4() != k.to.Addr().Is4():
		return fmt.Errorf("source %s and destination %s are of different address families", k.from, k.to.Addr())
	}
	return nil
}

// expectations are the pending Expectations by key, oldest first. The zero
// value is empty and ready to use. Not safe for concurrent use: Conntrack
// guards it with its mutex.
type expectations struct {
	m map[expectKey][]*Expectation
}

// add registers e after every pending one of its key.
func (x *expectations) add(e *Expectation) {
	if x.m == nil {
		x.m = make(map[expectKey][]*Expectation)
	}
	x.m[e.key] = append(x.m[e.key], e)
}

// remove unregisters e and reports whether it was pending.
func (x *expectations) remove(e *Expectation) bool {
	q := x.m[e.key]
	for i, p := range q {
		if p == e {
			x.set(e.key, append(q[:i:i], q[i+1:]...))
			return true
		}
	}
	return false
}

// take unregisters and returns the oldest Expectation pending that nc
// matches, or nil if there is none.
func (x *expectations) take(nc newConn) *Expectation {
	q := x.m[nc.key]
	for i, e := range q {
		if viaMatches(e.via, nc) {
			x.set(nc.key, append(q[:i:i], q[i+1:]...))
			return e
		}
	}
	return nil
}

// set stores q for k, deleting k when q is empty.
func (x *expectations) set(k expectKey, q []*Expectation) {
	if len(q) == 0 {
		delete(x.m, k)
		return
	}
	x.m[k] = q
}

// endAll ends every pending Expectation with err and forgets them.
func (x *expectations) endAll(err error) {
	for _, q := range x.m {
		for _, e := range q {
			e.end(fmt.Errorf("expecting a connection %s -> %s: %w", e.key.from, e.key.to, err))
		}
	}
	x.m = nil
}

// len returns the number of pending Expectations.
func (x *expectations) len() int {
	n := 0
	for _, q := range x.m {
		n += len(q)
	}
	return n
}
