package rules

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
)

// ErrClosed is what an Expectation's Err wraps when its Conntrack was
// closed before a matching connection was seen.
var ErrClosed = errors.New("conntrack watcher closed")

// eventReadBuffer is the receive buffer the event socket asks for
// (SO_RCVBUFFORCE, which CAP_NET_ADMIN allows beyond net.core.rmem_max).
// The kernel reports every new connection in the namespace, not only FTP
// data connections: a burst of them must not overflow the socket while the
// reader is descheduled. One NEW event is a few hundred bytes.
const eventReadBuffer = 4 << 20

// overflowLogEvery bounds how often an overflowing event socket is logged.
const overflowLogEvery = 10 * time.Second

// eventSource is the part of a netlink socket that the reader uses;
// *netlink.Conn implements it, the unit tests use a fake.
type eventSource interface {
	Receive() ([]netlink.Message, error)
	Close() error
}

var _ eventSource = (*netlink.Conn)(nil)

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
type Conntrack struct {
	log  *slog.Logger
	src  eventSource
	done chan struct{} // closed when the reader goroutine has returned

	mu     sync.Mutex
	closed bool         // Close was called
	err    error        // non-nil once closed or the reader failed: ends every pending and later Expectation
	exps   expectations // pending expectations
}

// NewConntrack opens a netlink event socket in the current network namespace and starts one goroutine that reads events
// until Close. log may be nil.
//
// It needs CAP_NET_ADMIN and the kernel's nf_conntrack and
// nf_conntrack_netlink (built in, or modules the kernel loads on demand).
// If netlink conntrack is unavailable, the error wraps
// errors.ErrUnsupported; without the capability it wraps syscall.EPERM.
// The current network namespace is the calling thread's, which is the
// process's unless the caller has moved a locked thread.
func NewConntrack(log *slog.Logger) (*Conntrack, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := probeConntrack(); err != nil {
		return nil, err
	}
	nl, err := netlink.Dial(syscall.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("opening conntrack event socket: %w", err)
	}
	if err := setReadBuffer(nl, eventReadBuffer); err != nil {
		log.Warn("conntrack event socket keeps its default receive buffer", "want", eventReadBuffer, "err", err)
	}
	if err := nl.JoinGroup(uint32(netfilter.GroupCTNew)); err != nil {
		_ = nl.Close()
		return nil, fmt.Errorf("subscribing to conntrack NEW events: %w", err)
	}
	return newConntrack(log, nl), nil
}

// probeConntrack asks ctnetlink for its global statistics: the kernel binds
// a socket to the conntrack event group even where ctnetlink is missing,
// but a request fails.
func probeConntrack() error {
	c, err := conntrack.Dial(nil)
	if err != nil {
		return unavailable("opening a netlink netfilter socket", err)
	}
	defer c.Close()
	if _, err := c.StatsGlobal(); err != nil {
		return unavailable("querying netlink conntrack", err)
	}
	return nil
}

// unavailable wraps an error of probeConntrack: EPERM and EACCES as they
// are, anything else as errors.ErrUnsupported.
func unavailable(doing string, err error) error {
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("%s (needs CAP_NET_ADMIN): %w", doing, err)
	}
	return fmt.Errorf("%s: netlink conntrack is unavailable (the kernel needs nf_conntrack and nf_conntrack_netlink): %w: %w",
		doing, errors.ErrUnsupported, err)
}

// setReadBuffer sets nl's receive buffer to n bytes, beyond
// net.core.rmem_max if allowed (SO_RCVBUFFORCE), else as far as it goes.
func setReadBuffer(nl *netlink.Conn, n int) error {
	raw, err := nl.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, n)
	}); err != nil {
		return err
	}
	if serr == nil {
		return nil
	}
	if err := nl.SetReadBuffer(n); err != nil {
		return fmt.Errorf("SO_RCVBUFFORCE: %w; SO_RCVBUF: %w", serr, err)
	}
	return nil
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
// socket is closed or fails for good.
func (c *Conntrack) readEvents() {
	defer close(c.done)
	var (
		overflows int       // since the last log line
		lastLog   time.Time // of an overflow
	)
	for {
		msgs, err := c.src.Receive()
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
		for _, m := range msgs {
			var ev conntrack.Event
			if err := ev.Unmarshal(m); err != nil {
				c.log.Debug("undecodable conntrack event", "err", err)
				continue
			}
			c.handle(ev)
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

// handle satisfies the oldest Expectation that ev's connection matches, if
// ev reports a new TCP connection.
func (c *Conntrack) handle(ev conntrack.Event) {
	if ev.Type != conntrack.EventNew || ev.Flow == nil {
		return
	}
	k, ok := flowKey(ev.Flow)
	if !ok {
		return
	}
	c.mu.Lock()
	e := c.exps.take(k)
	if e != nil {
		e.end(nil)
	}
	c.mu.Unlock()
	if e != nil {
		c.log.Debug("expected connection seen", "from", k.from, "to", k.to,
			"sport", ev.Flow.TupleOrig.Proto.SourcePort)
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

// flowKey returns the key of f's original tuple, and false if f is not a
// TCP connection between valid addresses.
func flowKey(f *conntrack.Flow) (expectKey, bool) {
	t := f.TupleOrig
	if t.Proto.Protocol != syscall.IPPROTO_TCP || !t.IP.SourceAddress.IsValid() || !t.IP.DestinationAddress.IsValid() {
		return expectKey{}, false
	}
	return newExpectKey(t.IP.SourceAddress, netip.AddrPortFrom(t.IP.DestinationAddress, t.Proto.DestinationPort)), true
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
