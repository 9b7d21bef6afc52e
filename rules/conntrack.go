package rules

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// ErrClosed is what an Expectation's Err wraps when its Conntrack was
// closed before a matching connection was seen.
var ErrClosed = errors.New("conntrack watcher closed")

// overflowLogEvery bounds how often an overflowing event socket is logged.
const overflowLogEvery = 10 * time.Second

// newConn is a NEW event of a TCP connection, as the reader needs it.
type newConn struct {
	key   expectKey // from the original tuple
	sport uint16    // the source port, for logs
}

// eventSource delivers the kernel's NEW events. The Linux implementation
// reads a netlink socket (conntrack_linux.go); the unit tests use a fake.
type eventSource interface {
	// receive blocks until events arrive and returns the new TCP
	// connections among them, possibly none. An error wrapping
	// syscall.ENOBUFS means events were lost and more may follow; after
	// Close, receive returns an error.
	receive() ([]newConn, error)
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
// The kernel reports every new connection in the namespace to the one
// goroutine, FTP or not; if it falls behind and the socket overflows, the
// events in between are lost (logged, at most every 10s), and the
// Expectations they would have satisfied end by their owners' TTL.
type Conntrack struct {
	log  *slog.Logger
	src  eventSource
	done chan struct{} // closed when the reader goroutine has returned

	mu     sync.Mutex
	closed bool         // Close was called
	err    error        // non-nil once closed or the reader failed: ends every pending and later Expectation
	exps   expectations // pending expectations
}

// newConntrack starts the reader on src.
func newConntrack(log *slog.Logger, src eventSource) *Conntrack {
	c := &Conntrack{log: log, src: src, done: make(chan struct{})}
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
// destination address and port exact). Register before the connection can happen (before the pinhole opens).
// Wait on the returned Expectation.
//
// The original tuple is the connection as its first packet arrived, before
// any NAT: with a DNAT pinhole, to is the address the client dialled, not
// the DNAT target. IPv4-mapped addresses are unmapped and zones ignored.
// One connection satisfies one Expectation, the oldest registered for its
// tuple. If from or to is invalid or unspecified, to has port 0, or the
// two are of different families, the Expectation is done at once and its
// Err wraps ErrInvalid.
func (c *Conntrack) Expect(from netip.Addr, to netip.AddrPort) *Expectation {
	e := &Expectation{c: c, key: newExpectKey(from, to), done: make(chan struct{})}
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
		overflows int       // since the last log line
		lastLog   time.Time // of an overflow
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
				// The dropped ones' Expectations end by their owners' TTL.
				overflows++
				if now := time.Now(); now.Sub(lastLog) >= overflowLogEvery {
					c.log.Warn("conntrack event socket overflowed, events lost", "times", overflows, "err", err)
					overflows, lastLog = 0, now
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
	e := c.exps.take(nc.key)
	if e != nil {
		e.end(nil)
	}
	c.mu.Unlock()
	if e != nil {
		c.log.Debug("expected connection seen", "from", nc.key.from, "sport", nc.sport, "to", nc.key.to)
	}
}

// Expectation is one registered interest.
type Expectation struct {
	c    *Conntrack
	key  expectKey
	done chan struct{}
	err  error // written once, before done is closed
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
	return expectKey{
		from: from.Unmap().WithZone(""),
		to:   netip.AddrPortFrom(to.Addr().Unmap().WithZone(""), to.Port()),
	}
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

// take unregisters and returns the oldest Expectation pending for k, or
// nil if there is none.
func (x *expectations) take(k expectKey) *Expectation {
	q := x.m[k]
	if len(q) == 0 {
		return nil
	}
	e := q[0]
	q[0] = nil
	x.set(k, q[1:])
	return e
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
