package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Addresses of the conntrack unit tests (198.18.0.0/15, 2001:db8::/32).
var (
	ctClient4 = netip.MustParseAddr("198.18.7.2")
	ctOther4  = netip.MustParseAddr("198.18.7.3")
	ctDst4    = netip.MustParseAddrPort("198.18.7.1:40001")
	ctClient6 = netip.MustParseAddr("2001:db8:7::2")
	ctDst6    = netip.MustParseAddrPort("[2001:db8:7::1]:40001")
	// noVia: an Expectation that any delivery address satisfies.
	noVia = netip.AddrPort{}
)

func TestExpectKeyCheck(t *testing.T) {
	for _, tt := range []struct {
		from netip.Addr
		to   netip.AddrPort
		bad  string // "" if valid
	}{
		{ctClient4, ctDst4, ""},
		{ctClient6, ctDst6, ""},
		{netip.AddrFrom16(ctClient4.As16()), ctDst4, ""},
		{netip.MustParseAddr("fe80::2%eth0"), netip.MustParseAddrPort("[fe80::1%eth0]:40001"), ""},
		{netip.Addr{}, ctDst4, "source"},
		{netip.IPv4Unspecified(), ctDst4, "source"},
		{ctClient4, netip.AddrPort{}, "destination"},
		{ctClient4, netip.AddrPortFrom(netip.IPv6Unspecified(), 21), "destination"},
		{ctClient4, netip.AddrPortFrom(ctDst4.Addr(), 0), "port 0"},
		{ctClient4, ctDst6, "families"},
		{ctClient6, ctDst4, "families"},
	} {
		err := newExpectKey(tt.from, tt.to).check()
		switch {
		case tt.bad == "" && err != nil:
			t.Errorf("check(%s -> %s) = %v, want nil", tt.from, tt.to, err)
		case tt.bad != "" && (err == nil || !strings.Contains(err.Error(), tt.bad)):
			t.Errorf("check(%s -> %s) = %v, want an error about %q", tt.from, tt.to, err, tt.bad)
		}
	}
}

// TestExpectations drives the registry the way Conntrack does: oldest
// first, one connection per Expectation, exact destination, any source port.
func TestExpectations(t *testing.T) {
	var x expectations
	mk := func(from netip.Addr, to netip.AddrPort) *Expectation {
		e := &Expectation{key: newExpectKey(from, to), done: make(chan struct{})}
		x.add(e)
		return e
	}
	a := mk(ctClient4, ctDst4)
	b := mk(ctClient4, ctDst4) // a second one for the same tuple
	c := mk(ctClient6, ctDst6)
	if n := x.len(); n != 3 {
		t.Fatalf("len = %d, want 3", n)
	}
	miss := []expectKey{
		{ctOther4, ctDst4}, // another source
		{ctClient4, netip.AddrPortFrom(ctDst4.Addr(), ctDst4.Port()+1)},                   // another port
		{ctClient4, netip.AddrPortFrom(netip.MustParseAddr("198.18.7.9"), ctDst4.Port())}, // another address
		{ctDst4.Addr(), netip.AddrPortFrom(ctClient4, ctDst4.Port())},                     // the reverse
	}
	for _, k := range miss {
		if e := x.take(newConn{key: k}); e != nil {
			t.Errorf("take(%v) = %v, want nil", k, e.key)
		}
	}
	if e := x.take(newConn{key: expectKey{ctClient4, ctDst4}}); e != a {
		t.Errorf("first take = %p, want the oldest (%p)", e, a)
	}
	if e := x.take(newConn{key: expectKey{ctClient4, ctDst4}}); e != b {
		t.Errorf("second take = %p, want the next (%p)", e, b)
	}
	if e := x.take(newConn{key: expectKey{ctClient4, ctDst4}}); e != nil {
		t.Errorf("third take = %p, want nil: each Expectation is satisfied once", e)
	}
	if !x.remove(c) {
		t.Error("remove(pending) = false")
	}
	if x.remove(c) || x.remove(a) {
		t.Error("remove of an Expectation no longer pending = true")
	}
	if n := x.len(); n != 0 || len(x.m) != 0 {
		t.Errorf("len = %d, map has %d keys; want both 0", n, len(x.m))
	}

	// remove keeps the order of the others.
	d, e, f := mk(ctClient4, ctDst4), mk(ctClient4, ctDst4), mk(ctClient4, ctDst4)
	x.remove(e)
	if got := x.take(newConn{key: expectKey{ctClient4, ctDst4}}); got != d {
		t.Error("after removing the middle one, take did not return the oldest")
	}
	if got := x.take(newConn{key: expectKey{ctClient4, ctDst4}}); got != f {
		t.Error("after removing the middle one, take did not return the youngest")
	}

	g := mk(ctClient6, ctDst6)
	x.endAll(ErrClosed)
	select {
	case <-g.done:
	default:
		t.Fatal("endAll did not end a pending Expectation")
	}
	if !errors.Is(g.Err(), ErrClosed) {
		t.Errorf("Err after endAll(ErrClosed) = %v", g.Err())
	}
	if x.len() != 0 {
		t.Errorf("len after endAll = %d", x.len())
	}
}

// fakeSource is an eventSource that returns what the test sends it and,
// once closed, an error like a closed socket's. Its table is what lookup
// searches.
type fakeSource struct {
	recv   chan fakeRecv
	closed chan struct{}
	once   sync.Once

	mu        sync.Mutex
	table     []newConn // the kernel's connections
	lookupErr error     // returned by lookup if set
	lookups   int
}

type fakeRecv struct {
	conns []newConn
	err   error
}

func newFakeSource() *fakeSource {
	return &fakeSource{recv: make(chan fakeRecv), closed: make(chan struct{})}
}

func (f *fakeSource) receive() ([]newConn, error) {
	select {
	case r := <-f.recv:
		return r.conns, r.err
	case <-f.closed:
		return nil, fmt.Errorf("netlink receive: %w", syscall.EBADF)
	}
}

func (f *fakeSource) lookup(ctx context.Context, k expectKey) ([]newConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups++
	if f.lookupErr != nil {
		return nil, f.lookupErr
	}
	return append([]newConn(nil), f.table...), nil
}

// made adds connections to the fake kernel table, without an event.
func (f *fakeSource) made(conns ...newConn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.table = append(f.table, conns...)
}

func (f *fakeSource) Close() error {
	f.once.Do(func() { close(f.closed) })
	return nil
}

// send hands the reader one receive result; it returns once the reader
// has taken it.
func (f *fakeSource) send(t *testing.T, conns []newConn, err error) {
	t.Helper()
	select {
	case f.recv <- fakeRecv{conns, err}:
	case <-time.After(5 * time.Second):
		t.Fatal("reader did not call receive within 5s")
	}
}

// conn is a new TCP connection from src to dst as the source reports it.
func conn(src netip.AddrPort, dst netip.AddrPort) newConn {
	return newConn{key: newExpectKey(src.Addr(), dst), sport: src.Port()}
}

func testConntrack(t *testing.T) (*Conntrack, *fakeSource, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	src := newFakeSource()
	c := newConntrack(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), src, testConntrackMetrics(t))
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if t.Failed() {
			t.Logf("logs:\n%s", logs)
		}
	})
	return c, src, logs
}

func wantDone(t *testing.T, e *Expectation, what string) {
	t.Helper()
	select {
	case <-e.Done():
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: Done still open after 5s", what)
	}
}

func wantPending(t *testing.T, e *Expectation, what string) {
	t.Helper()
	select {
	case <-e.Done():
		t.Fatalf("%s: Done closed (Err %v), want it open", what, e.Err())
	default:
	}
	if err := e.Err(); err != nil {
		t.Errorf("%s: Err = %v while pending", what, err)
	}
}

// TestConntrackEvents runs connections through the reader: only one from
// the expected source address (any port) to the exact destination
// satisfies an Expectation.
func TestConntrackEvents(t *testing.T) {
	c, src, _ := testConntrack(t)
	e4 := c.Expect(ctClient4, ctDst4, noVia)
	defer e4.Cancel()
	e6 := c.Expect(netip.AddrFrom16(ctClient6.As16()), ctDst6, noVia)
	defer e6.Cancel()

	for _, m := range []struct {
		what string
		nc   newConn
	}{
		{"another source", conn(netip.AddrPortFrom(ctOther4, 50000), ctDst4)},
		{"another port", conn(netip.AddrPortFrom(ctClient4, 50000), netip.AddrPortFrom(ctDst4.Addr(), 40002))},
		{"another address", conn(netip.AddrPortFrom(ctClient4, 50000), netip.MustParseAddrPort("198.18.7.9:40001"))},
		{"the reverse", conn(ctDst4, netip.AddrPortFrom(ctClient4, ctDst4.Port()))},
	} {
		src.send(t, []newConn{m.nc}, nil)
		src.send(t, nil, nil) // the reader has handled the previous one
		wantPending(t, e4, m.what)
	}

	// Two in one read, from any source port.
	src.send(t, []newConn{
		conn(netip.AddrPortFrom(ctClient6, 50001), ctDst6),
		conn(netip.AddrPortFrom(ctClient4, 1), ctDst4),
	}, nil)
	wantDone(t, e6, "IPv6")
	wantDone(t, e4, "IPv4")
	if e4.Err() != nil || e6.Err() != nil {
		t.Errorf("Err = %v, %v after a match, want nil", e4.Err(), e6.Err())
	}
	e4.Cancel() // after Done: harmless
	e4.Cancel()

	// Satisfied once each, oldest first.
	first, second := c.Expect(ctClient4, ctDst4, noVia), c.Expect(ctClient4, ctDst4, noVia)
	defer first.Cancel()
	defer second.Cancel()
	src.send(t, []newConn{conn(netip.AddrPortFrom(ctClient4, 2), ctDst4)}, nil)
	wantDone(t, first, "the older of two")
	src.send(t, nil, nil)
	wantPending(t, second, "the younger of two, after one connection")
}

func TestConntrackOverflow(t *testing.T) {
	c, src, logs := testConntrack(t)
	e := c.Expect(ctClient4, ctDst4, noVia)
	defer e.Cancel()
	enobufs := fmt.Errorf("netlink receive: %w", syscall.ENOBUFS)
	src.send(t, nil, enobufs)
	src.send(t, nil, enobufs)
	src.send(t, []newConn{conn(netip.AddrPortFrom(ctClient4, 50000), ctDst4)}, nil)
	wantDone(t, e, "after ENOBUFS")
	if err := e.Err(); err != nil {
		t.Errorf("Err = %v", err)
	}
	if n := strings.Count(logs.String(), "overflowed"); n != 1 {
		t.Errorf("logged the overflow %d times, want once (rate-limited):\n%s", n, logs)
	}
}

func TestConntrackReaderFails(t *testing.T) {
	c, src, _ := testConntrack(t)
	e := c.Expect(ctClient4, ctDst4, noVia)
	defer e.Cancel()
	src.send(t, nil, fmt.Errorf("netlink receive: %w", syscall.EBADMSG))
	wantDone(t, e, "after a fatal error")
	if err := e.Err(); !errors.Is(err, syscall.EBADMSG) {
		t.Errorf("Err = %v, want the reader's error", err)
	}
	later := c.Expect(ctClient4, ctDst4, noVia)
	defer later.Cancel()
	wantDone(t, later, "Expect after the reader failed")
	if err := later.Err(); !errors.Is(err, syscall.EBADMSG) {
		t.Errorf("Err = %v, want the reader's error", err)
	}
}

func TestConntrackClose(t *testing.T) {
	base := runtime.NumGoroutine()
	src := newFakeSource()
	c := newConntrack(slog.New(slog.DiscardHandler), src, testConntrackMetrics(t))
	pending := c.Expect(ctClient4, ctDst4, noVia)
	canceled := c.Expect(ctClient6, ctDst6, noVia)
	canceled.Cancel()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	wantDone(t, pending, "pending at Close")
	if err := pending.Err(); !errors.Is(err, ErrClosed) {
		t.Errorf("Err = %v, want ErrClosed", err)
	}
	select {
	case <-canceled.Done():
		t.Error("Close closed Done of a canceled Expectation")
	default:
	}
	after := c.Expect(ctClient4, ctDst4, noVia)
	wantDone(t, after, "Expect after Close")
	if err := after.Err(); !errors.Is(err, ErrClosed) {
		t.Errorf("Err = %v, want ErrClosed", err)
	}
	after.Cancel()
	pending.Cancel()
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if n := waitGoroutines(base); n > base {
		t.Errorf("%d goroutines after Close, %d before", n, base)
	}
}

func TestConntrackExpectInvalid(t *testing.T) {
	c, _, _ := testConntrack(t)
	e := c.Expect(ctClient4, ctDst6, noVia)
	defer e.Cancel()
	wantDone(t, e, "mixed families")
	if err := e.Err(); !errors.Is(err, ErrInvalid) {
		t.Errorf("Err = %v, want ErrInvalid", err)
	}
	c.mu.Lock()
	n := c.exps.len()
	c.mu.Unlock()
	if n != 0 {
		t.Errorf("%d expectations registered, want 0", n)
	}
}

// TestConntrackConcurrent races Expect, Cancel, events and Close (run it
// with -race).
func TestConntrackConcurrent(t *testing.T) {
	src := newFakeSource()
	c := newConntrack(slog.New(slog.DiscardHandler), src, testConntrackMetrics(t))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 50 {
				to := netip.AddrPortFrom(ctDst4.Addr(), uint16(40000+i*100+j))
				e := c.Expect(ctClient4, to, noVia)
				if j%2 == 0 {
					e.Cancel()
					continue
				}
				src.recv <- fakeRecv{conns: []newConn{conn(netip.AddrPortFrom(ctClient4, 1), to)}}
				<-e.Done()
				e.Cancel()
				if err := e.Err(); err != nil {
					t.Errorf("Err = %v", err)
				}
			}
		})
	}
	wg.Wait()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// waitGoroutines waits up to 2s for the number of goroutines to drop to
// at most n and returns the last count.
func waitGoroutines(n int) int {
	deadline := time.Now().Add(2 * time.Second)
	for {
		got := runtime.NumGoroutine()
		if got <= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testConntrackMetrics are conntrack metrics on a registry of the test's.
func testConntrackMetrics(t *testing.T) *conntrackMetrics {
	t.Helper()
	m, err := newConntrackMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// lookups returns the counts of ftpgate_conntrack_lookups_total by result.
func lookups(c *Conntrack) (found, notFound, failed float64) {
	l := c.metrics.lookups
	return testutil.ToFloat64(l.WithLabelValues(lookupFound)), testutil.ToFloat64(l.WithLabelValues(lookupNotFound)),
		testutil.ToFloat64(l.WithLabelValues(lookupFailed))
}

// TestConntrackLateEvent is the race behind kernel-path transfers that
// were logged as "pinhole closed" though the kernel had forwarded them: the
// kernel queues a connection's event as its first packet passes, and the
// reader takes it later. A short transfer can be over, and its session
// ended, before that: the owner stops waiting with the event still in the
// socket. Lookup asks the kernel's table instead, which already holds the
// connection.
func TestConntrackLateEvent(t *testing.T) {
	c, src, _ := testConntrack(t)
	dnatTo := netip.MustParseAddrPort("198.19.7.5:30000")
	made := newConn{key: newExpectKey(ctClient4, ctDst4), sport: 50000, reply: dnatTo}

	e := c.Expect(ctClient4, ctDst4, dnatTo)
	src.made(made) // the connection is made; its event is not read yet
	e.Cancel()     // the owner gives up
	wantPending(t, e, "before the event was read")
	found, err := e.Lookup(context.Background())
	if err != nil || !found {
		t.Fatalf("Lookup = %t, %v; want true: the table has the connection", found, err)
	}
	if f, nf, fail := lookups(c); f != 1 || nf != 0 || fail != 0 {
		t.Errorf("lookups found/not_found/failed = %v/%v/%v, want 1/0/0", f, nf, fail)
	}

	// The late event satisfies no later Expectation of the same tuple
	// that waits for another delivery address.
	other := c.Expect(ctClient4, ctDst4, netip.MustParseAddrPort("198.19.7.5:30001"))
	defer other.Cancel()
	src.send(t, []newConn{made}, nil)
	src.send(t, nil, nil)
	wantPending(t, other, "an Expectation for another DNAT target, after the late event")

	// Not in the table: from another source, or delivered elsewhere.
	for _, tt := range []struct {
		what      string
		from      netip.Addr
		to, via   netip.AddrPort
		wantFound bool
	}{
		{"the same connection, any delivery address", ctClient4, ctDst4, noVia, true},
		{"another source", ctOther4, ctDst4, dnatTo, false},
		{"another destination port", ctClient4, netip.AddrPortFrom(ctDst4.Addr(), 40009), dnatTo, false},
		{"another delivery address", ctClient4, ctDst4, netip.MustParseAddrPort("198.19.7.5:30001"), false},
	} {
		e := c.Expect(tt.from, tt.to, tt.via)
		found, err := e.Lookup(context.Background())
		e.Cancel()
		if err != nil || found != tt.wantFound {
			t.Errorf("%s: Lookup = %t, %v; want %t", tt.what, found, err, tt.wantFound)
		}
	}
}

// TestConntrackLookupSeen: an Expectation that an event satisfied needs no
// lookup.
func TestConntrackLookupSeen(t *testing.T) {
	c, src, _ := testConntrack(t)
	e := c.Expect(ctClient4, ctDst4, noVia)
	defer e.Cancel()
	src.send(t, []newConn{conn(netip.AddrPortFrom(ctClient4, 50000), ctDst4)}, nil)
	wantDone(t, e, "the event")
	if found, err := e.Lookup(context.Background()); !found || err != nil {
		t.Errorf("Lookup after the event = %t, %v; want true", found, err)
	}
	if src.lookups != 0 {
		t.Errorf("%d lookups in the table, want none", src.lookups)
	}
}

// TestConntrackLookupFails: a failed lookup is an error, never "made".
func TestConntrackLookupFails(t *testing.T) {
	c, src, _ := testConntrack(t)
	src.lookupErr = fmt.Errorf("netlink dump: %w", syscall.EPERM)
	src.made(newConn{key: newExpectKey(ctClient4, ctDst4)})
	e := c.Expect(ctClient4, ctDst4, noVia)
	defer e.Cancel()
	found, err := e.Lookup(context.Background())
	if found || !errors.Is(err, syscall.EPERM) {
		t.Errorf("Lookup = %t, %v; want false and the source's error", found, err)
	}
	if _, _, fail := lookups(c); fail != 1 {
		t.Errorf("failed lookups = %v, want 1", fail)
	}
	wantPending(t, e, "after a failed lookup")

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if found, err := e.Lookup(context.Background()); found || !errors.Is(err, ErrClosed) {
		t.Errorf("Lookup after Close = %t, %v; want ErrClosed", found, err)
	}
}

// TestConntrackOverflowReconciles: after the socket overflowed, a pending
// Expectation whose connection the kernel made (its event lost) is
// satisfied from the table, without waiting for its owner.
func TestConntrackOverflowReconciles(t *testing.T) {
	c, src, logs := testConntrack(t)
	lost := c.Expect(ctClient4, ctDst4, noVia)
	defer lost.Cancel()
	notYet := c.Expect(ctClient6, ctDst6, noVia)
	defer notYet.Cancel()
	src.made(conn(netip.AddrPortFrom(ctClient4, 50000), ctDst4))
	src.send(t, nil, fmt.Errorf("netlink receive: %w", syscall.ENOBUFS))
	wantDone(t, lost, "a connection whose event was lost")
	if err := lost.Err(); err != nil {
		t.Errorf("Err = %v", err)
	}
	src.send(t, nil, nil)
	wantPending(t, notYet, "a connection not made yet")
	if got := testutil.ToFloat64(c.metrics.overflows); got != 1 {
		t.Errorf("ftpgate_conntrack_overflows_total = %v, want 1", got)
	}
	if f, nf, _ := lookups(c); f != 1 || nf != 1 {
		t.Errorf("lookups found/not_found = %v/%v, want 1/1", f, nf)
	}
	if !strings.Contains(logs.String(), "found=1") {
		t.Errorf("the recovery is not logged:\n%s", logs)
	}
}

// TestExpectationCounters: the counters of the connection that satisfied
// an Expectation come from the table, picked by its source port among
// others to the same address and port; without counters (accounting off),
// or before the connection was seen, there are none.
func TestExpectationCounters(t *testing.T) {
	c, src, _ := testConntrack(t)
	client := netip.MustParseAddrPort("198.19.0.2:50000")
	dst := netip.MustParseAddrPort("198.19.0.1:40000")
	e := c.Expect(client.Addr(), dst, netip.AddrPort{})
	defer e.Cancel()
	if _, ok, err := e.Counters(context.Background()); ok || err != nil {
		t.Errorf("Counters before the connection = %v, %v", ok, err)
	}
	src.send(t, []newConn{conn(client, dst)}, nil)
	<-e.Done()

	earlier := conn(netip.MustParseAddrPort("198.19.0.2:49000"), dst) // in TIME_WAIT
	earlier.counters = &Counters{OrigBytes: 1, ReplyBytes: 2}
	if _, ok, _ := e.Counters(context.Background()); ok {
		t.Error("Counters with the connection missing from the table")
	}
	src.made(earlier)
	without := conn(client, dst)
	src.made(without)
	if _, ok, _ := e.Counters(context.Background()); ok {
		t.Error("Counters of an entry without counters (nf_conntrack_acct off)")
	}
	src.mu.Lock()
	src.table[1].counters = &Counters{OrigBytes: 700, ReplyBytes: 10_485_760}
	src.mu.Unlock()
	got, ok, err := e.Counters(context.Background())
	if !ok || err != nil || got != (Counters{OrigBytes: 700, ReplyBytes: 10_485_760}) {
		t.Errorf("Counters = %+v, %v, %v; want the seen connection's", got, ok, err)
	}
}
