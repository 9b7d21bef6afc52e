package rules

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
)

// Addresses of the conntrack unit tests (198.18.0.0/15, 2001:db8::/32).
var (
	ctClient4 = netip.MustParseAddr("198.18.7.2")
	ctOther4  = netip.MustParseAddr("198.18.7.3")
	ctDst4    = netip.MustParseAddrPort("198.18.7.1:40001")
	ctClient6 = netip.MustParseAddr("2001:db8:7::2")
	ctDst6    = netip.MustParseAddrPort("[2001:db8:7::1]:40001")
)

// newFlow is a flow as a NEW event reports it: proto from src:sport to dst.
func newFlow(proto uint8, src netip.Addr, sport uint16, dst netip.AddrPort) *conntrack.Flow {
	f := conntrack.NewFlow(proto, 0, src, dst.Addr(), sport, dst.Port(), 120, 0)
	return &f
}

func TestFlowKey(t *testing.T) {
	mapped := func(a netip.Addr) netip.Addr { return netip.AddrFrom16(a.As16()) }
	for _, tt := range []struct {
		name string
		f    *conntrack.Flow
		want expectKey
		ok   bool
	}{
		{"tcp4", newFlow(syscall.IPPROTO_TCP, ctClient4, 50000, ctDst4), expectKey{ctClient4, ctDst4}, true},
		{"tcp6", newFlow(syscall.IPPROTO_TCP, ctClient6, 50000, ctDst6), expectKey{ctClient6, ctDst6}, true},
		{"mapped", newFlow(syscall.IPPROTO_TCP, mapped(ctClient4), 1, netip.AddrPortFrom(mapped(ctDst4.Addr()), ctDst4.Port())),
			expectKey{ctClient4, ctDst4}, true},
		{"udp", newFlow(syscall.IPPROTO_UDP, ctClient4, 50000, ctDst4), expectKey{}, false},
		{"sctp", newFlow(syscall.IPPROTO_SCTP, ctClient4, 50000, ctDst4), expectKey{}, false},
		{"empty", &conntrack.Flow{}, expectKey{}, false},
	} {
		got, ok := flowKey(tt.f)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: flowKey = %v, %t, want %v, %t", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

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
		if e := x.take(k); e != nil {
			t.Errorf("take(%v) = %v, want nil", k, e.key)
		}
	}
	if e := x.take(expectKey{ctClient4, ctDst4}); e != a {
		t.Errorf("first take = %p, want the oldest (%p)", e, a)
	}
	if e := x.take(expectKey{ctClient4, ctDst4}); e != b {
		t.Errorf("second take = %p, want the next (%p)", e, b)
	}
	if e := x.take(expectKey{ctClient4, ctDst4}); e != nil {
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
	if got := x.take(expectKey{ctClient4, ctDst4}); got != d {
		t.Error("after removing the middle one, take did not return the oldest")
	}
	if got := x.take(expectKey{ctClient4, ctDst4}); got != f {
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
// once closed, an error like a closed socket's.
type fakeSource struct {
	recv   chan fakeRecv
	closed chan struct{}
	once   sync.Once
}

type fakeRecv struct {
	msgs []netlink.Message
	err  error
}

func newFakeSource() *fakeSource {
	return &fakeSource{recv: make(chan fakeRecv), closed: make(chan struct{})}
}

func (f *fakeSource) Receive() ([]netlink.Message, error) {
	select {
	case r := <-f.recv:
		return r.msgs, r.err
	case <-f.closed:
		return nil, &netlink.OpError{Op: "receive", Err: net.ErrClosed}
	}
}

func (f *fakeSource) Close() error {
	f.once.Do(func() { close(f.closed) })
	return nil
}

// send hands the reader one Receive result; it returns once the reader has
// taken it.
func (f *fakeSource) send(t *testing.T, msgs []netlink.Message, err error) {
	t.Helper()
	select {
	case f.recv <- fakeRecv{msgs, err}:
	case <-time.After(5 * time.Second):
		t.Fatal("reader did not call Receive within 5s")
	}
}

// ctEvent builds the netlink message of a conntrack event as the kernel
// sends it (include/uapi/linux/netfilter/nfnetlink_conntrack.h): an
// nfgenmsg header, then CTA_TUPLE_ORIG { CTA_TUPLE_IP { src, dst },
// CTA_TUPLE_PROTO { CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT } }
// and CTA_TUPLE_REPLY likewise, with the reply tuple given.
func ctEvent(t *testing.T, create bool, proto uint8, src netip.AddrPort, dst netip.AddrPort, replySrc netip.AddrPort) netlink.Message {
	t.Helper()
	be16 := func(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
	tuple := func(typ uint16, s, d netip.AddrPort) netfilter.Attribute {
		srcType, dstType := uint16(1), uint16(2) // CTA_IP_V4_SRC, CTA_IP_V4_DST
		if s.Addr().Is6() {
			srcType, dstType = 3, 4 // CTA_IP_V6_SRC, CTA_IP_V6_DST
		}
		return netfilter.Attribute{Type: typ, Nested: true, Children: []netfilter.Attribute{
			{Type: 1, Nested: true, Children: []netfilter.Attribute{ // CTA_TUPLE_IP
				{Type: srcType, Data: s.Addr().AsSlice()},
				{Type: dstType, Data: d.Addr().AsSlice()},
			}},
			{Type: 2, Nested: true, Children: []netfilter.Attribute{ // CTA_TUPLE_PROTO
				{Type: 1, Data: []byte{proto}},  // CTA_PROTO_NUM
				{Type: 2, Data: be16(s.Port())}, // CTA_PROTO_SRC_PORT
				{Type: 3, Data: be16(d.Port())}, // CTA_PROTO_DST_PORT
			}},
		}}
	}
	family := netfilter.ProtoIPv4
	if src.Addr().Is6() {
		family = netfilter.ProtoIPv6
	}
	flags := netlink.HeaderFlags(0)
	if create {
		flags = netlink.Create | netlink.Excl // a NEW event; without them an UPDATE
	}
	m, err := netfilter.MarshalNetlink(netfilter.Header{
		SubsystemID: netfilter.NFSubsysCTNetlink,
		MessageType: 0, // IPCTNL_MSG_CT_NEW
		Family:      family,
		Flags:       flags,
	}, []netfilter.Attribute{
		tuple(1, src, dst), // CTA_TUPLE_ORIG
		tuple(2, replySrc, netip.AddrPortFrom(src.Addr(), src.Port())), // CTA_TUPLE_REPLY
		{Type: 3, Data: binary.BigEndian.AppendUint32(nil, 0x8)},       // CTA_STATUS: IPS_CONFIRMED
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// newEvent is a NEW event of a TCP connection without NAT.
func newEvent(t *testing.T, src netip.AddrPort, dst netip.AddrPort) netlink.Message {
	return ctEvent(t, true, syscall.IPPROTO_TCP, src, dst, dst)
}

func testConntrack(t *testing.T) (*Conntrack, *fakeSource, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	src := newFakeSource()
	c := newConntrack(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), src)
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

// TestConntrackEvents decodes kernel-format messages through the reader:
// only a NEW event of a TCP connection whose original tuple is from -> to
// satisfies an Expectation.
func TestConntrackEvents(t *testing.T) {
	c, src, _ := testConntrack(t)
	e4 := c.Expect(ctClient4, ctDst4)
	defer e4.Cancel()
	e6 := c.Expect(ctClient6, ctDst6)
	defer e6.Cancel()
	dnatTo := netip.MustParseAddrPort("198.19.7.5:30000")

	for _, m := range []struct {
		what string
		msg  netlink.Message
	}{
		{"another source", newEvent(t, netip.AddrPortFrom(ctOther4, 50000), ctDst4)},
		{"another port", newEvent(t, netip.AddrPortFrom(ctClient4, 50000), netip.AddrPortFrom(ctDst4.Addr(), 40002))},
		{"udp", ctEvent(t, true, syscall.IPPROTO_UDP, netip.AddrPortFrom(ctClient4, 50000), ctDst4, ctDst4)},
		{"update", ctEvent(t, false, syscall.IPPROTO_TCP, netip.AddrPortFrom(ctClient4, 50000), ctDst4, ctDst4)},
		{"DNAT target in the reply tuple only", ctEvent(t, true, syscall.IPPROTO_TCP, netip.AddrPortFrom(ctClient4, 50000),
			netip.AddrPortFrom(netip.MustParseAddr("198.18.7.9"), 2000), ctDst4)},
	} {
		src.send(t, []netlink.Message{m.msg}, nil)
		src.send(t, nil, nil) // the reader has handled the previous one
		wantPending(t, e4, m.what)
	}
	src.send(t, []netlink.Message{{Data: []byte("not an nfnetlink message")}}, nil)
	src.send(t, nil, nil)
	wantPending(t, e4, "garbage")

	// Two events in one read, IPv6 and a DNATed IPv4 one matched on its original tuple.
	src.send(t, []netlink.Message{
		newEvent(t, netip.AddrPortFrom(ctClient6, 50001), ctDst6),
		ctEvent(t, true, syscall.IPPROTO_TCP, netip.AddrPortFrom(ctClient4, 50002), ctDst4, dnatTo),
	}, nil)
	wantDone(t, e6, "IPv6")
	wantDone(t, e4, "IPv4 DNAT")
	if e4.Err() != nil || e6.Err() != nil {
		t.Errorf("Err = %v, %v after a match, want nil", e4.Err(), e6.Err())
	}
	e4.Cancel() // after Done: harmless
	e4.Cancel()
}

func TestConntrackOverflow(t *testing.T) {
	c, src, logs := testConntrack(t)
	e := c.Expect(ctClient4, ctDst4)
	defer e.Cancel()
	enobufs := &netlink.OpError{Op: "receive", Err: syscall.ENOBUFS}
	src.send(t, nil, enobufs)
	src.send(t, nil, enobufs)
	src.send(t, []netlink.Message{newEvent(t, netip.AddrPortFrom(ctClient4, 50000), ctDst4)}, nil)
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
	e := c.Expect(ctClient4, ctDst4)
	defer e.Cancel()
	src.send(t, nil, &netlink.OpError{Op: "receive", Err: syscall.EBADMSG})
	wantDone(t, e, "after a fatal error")
	if err := e.Err(); !errors.Is(err, syscall.EBADMSG) {
		t.Errorf("Err = %v, want the reader's error", err)
	}
	later := c.Expect(ctClient4, ctDst4)
	defer later.Cancel()
	wantDone(t, later, "Expect after the reader failed")
	if err := later.Err(); !errors.Is(err, syscall.EBADMSG) {
		t.Errorf("Err = %v, want the reader's error", err)
	}
}

func TestConntrackClose(t *testing.T) {
	base := runtime.NumGoroutine()
	src := newFakeSource()
	c := newConntrack(slog.New(slog.DiscardHandler), src)
	pending := c.Expect(ctClient4, ctDst4)
	canceled := c.Expect(ctClient6, ctDst6)
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
	after := c.Expect(ctClient4, ctDst4)
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
	e := c.Expect(ctClient4, ctDst6)
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
	c := newConntrack(slog.New(slog.DiscardHandler), src)
	port := func(i, j int) uint16 { return uint16(40000 + i*100 + j) }
	events := map[uint16]netlink.Message{}
	for i := range 8 {
		for j := range 50 {
			events[port(i, j)] = newEvent(t, netip.AddrPortFrom(ctClient4, 1), netip.AddrPortFrom(ctDst4.Addr(), port(i, j)))
		}
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 50 {
				to := netip.AddrPortFrom(ctDst4.Addr(), port(i, j))
				e := c.Expect(ctClient4, to)
				if j%2 == 0 {
					e.Cancel()
					continue
				}
				src.recv <- fakeRecv{msgs: []netlink.Message{events[to.Port()]}}
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

func TestUnavailable(t *testing.T) {
	for _, tt := range []struct {
		err         error
		unsupported bool
	}{
		{syscall.EPROTONOSUPPORT, true},
		{fmt.Errorf("netfilter query: %w", &netlink.OpError{Op: "receive", Err: syscall.EINVAL}), true},
		{&netlink.OpError{Op: "receive", Err: syscall.EPERM}, false},
	} {
		err := unavailable("probing", tt.err)
		if errors.Is(err, errors.ErrUnsupported) != tt.unsupported || !errors.Is(err, tt.err) {
			t.Errorf("unavailable(%v) = %v", tt.err, err)
		}
	}
}
