package proxy

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/nat"
	"github.com/ftpgate/ftpgate/rules"
)

// fakeWatcher is a ConnectionWatcher standing in for the conntrack
// watcher: it reports nothing by itself (its events are late), and its
// table holds every connection the test declares made.
type fakeWatcher struct {
	mu       sync.Mutex
	made     map[netip.AddrPort]bool // by original destination
	lookups  int
	failWith error // Lookup's error, if set
	expected []*fakeExpected
	counters *rules.Counters // what Counters returns for a made connection, if set
}

func newFakeWatcher() *fakeWatcher { return &fakeWatcher{made: map[netip.AddrPort]bool{}} }

func (w *fakeWatcher) Expect(from netip.Addr, to, via netip.AddrPort) ExpectedConnection {
	w.mu.Lock()
	defer w.mu.Unlock()
	e := &fakeExpected{w: w, to: to, done: make(chan struct{})}
	w.expected = append(w.expected, e)
	return e
}

// connected records that the kernel made the connection to to, without an
// event (as when the session ends before the event has been read).
func (w *fakeWatcher) connected(to netip.AddrPort) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.made[to] = true
}

// fail ends every Expectation with err, as a failed event socket does.
func (w *fakeWatcher) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.expected {
		e.err = err
		close(e.done)
	}
	w.expected = nil
}

func (w *fakeWatcher) lookupCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lookups
}

type fakeExpected struct {
	w    *fakeWatcher
	to   netip.AddrPort
	done chan struct{}
	err  error // set before done is closed
}

func (e *fakeExpected) Done() <-chan struct{} { return e.done }

func (e *fakeExpected) Err() error {
	select {
	case <-e.done:
		return e.err
	default:
		return nil
	}
}

func (e *fakeExpected) Lookup(context.Context) (bool, error) {
	e.w.mu.Lock()
	defer e.w.mu.Unlock()
	e.w.lookups++
	if e.w.failWith != nil {
		return false, e.w.failWith
	}
	return e.w.made[e.to], nil
}

func (e *fakeExpected) Counters(context.Context) (rules.Counters, bool, error) {
	e.w.mu.Lock()
	defer e.w.mu.Unlock()
	if e.w.counters == nil || !e.w.made[e.to] {
		return rules.Counters{}, false, nil
	}
	return *e.w.counters, true, nil
}

func (e *fakeExpected) Cancel() {}

// withKernelPath puts the harness's proxy on the kernel data path, with
// pinholes recorded by r and connections reported by w.
func withKernelPath(r *recordingPinholer, w *fakeWatcher) func(*Server) {
	return func(s *Server) {
		s.DataPath = KernelPath
		s.Pinholes = r
		s.Connections = w
	}
}

// kernelTransfer runs EPSV and RETR f on the kernel path: the test plays
// the kernel, connecting the client straight to the pinhole's DNAT target
// as the DNAT rule would, and tells w that the connection was made.
func kernelTransfer(t *testing.T, c *ftpClient, r *recordingPinholer, w *fakeWatcher) []byte {
	t.Helper()
	p := c.negotiate("EPSV")
	opened, _ := r.state()
	if len(opened) == 0 {
		t.Fatal("no pinhole opened for EPSV")
	}
	ph := opened[len(opened)-1]
	if ph.Deliver != rules.DNAT || ph.To.Port() != p.addr.Port() {
		t.Fatalf("pinhole %+v: want DNAT for the announced port %d", ph, p.addr.Port())
	}
	c.send("RETR f")
	dc, err := net.DialTimeout("tcp", ph.DNATTo.String(), ioTimeout)
	if err != nil {
		t.Fatalf("connecting to the DNAT target %s: %v", ph.DNATTo, err)
	}
	defer dc.Close()
	w.connected(ph.To)
	dc.SetReadDeadline(time.Now().Add(ioTimeout))
	var b bytes.Buffer
	if _, err := b.ReadFrom(dc); err != nil {
		t.Fatalf("reading the data connection: %v", err)
	}
	c.expect(150)
	c.expect(226)
	return b.Bytes()
}

// kernelRetrSession runs one session that downloads file through
// kernelTransfer, and waits for its end.
func kernelRetrSession(t *testing.T, h *harness, r *recordingPinholer, w *fakeWatcher, file []byte) {
	t.Helper()
	h.fake.SetFile("f", file)
	c := h.dial()
	c.login()
	if got := kernelTransfer(t, c, r, w); !bytes.Equal(got, file) {
		t.Error("RETR: content differs")
	}
	c.quit()
	h.sessionsEnded()
}

// TestKernelPathLateEvent reproduces the kernel-path transfers that were
// logged "pinhole closed" though the kernel had forwarded them (make test
// was red one run in three): conntrack reports a connection
// asynchronously, and a short transfer's session can end before the event
// has been read. The link must then ask the conntrack table, not conclude
// that the connection was never made.
func TestKernelPathLateEvent(t *testing.T) {
	r := &recordingPinholer{open: map[int]rules.Pinhole{}}
	w := newFakeWatcher()
	h := newHarness(t, withKernelPath(r, w))
	kernelRetrSession(t, h, r, w, randomBytes(3, 4096))
	h.waitLog("outcome=forwarded", "seen_by=lookup")
	h.waitLog("found in the conntrack table")
	if h.logged("pinhole closed") {
		t.Error(`a forwarded transfer was logged "pinhole closed"`)
	}
	if n := w.lookupCount(); n != 1 {
		t.Errorf("%d lookups, want 1", n)
	}
	if _, open := r.state(); open != 0 {
		t.Errorf("%d pinholes open after the session ended", open)
	}
}

// TestKernelPathCounters: with conntrack counters, a kernel-path
// transfer's line carries the bytes each way, the IP and TCP headers taken
// off (52 bytes a packet over IPv4), and says where they came from.
func TestKernelPathCounters(t *testing.T) {
	r := &recordingPinholer{open: map[int]rules.Pinhole{}}
	w := newFakeWatcher()
	file := randomBytes(7, 4096)
	// The client connected (EPSV): original = client to server.
	w.counters = &rules.Counters{OrigBytes: 10 * 52, OrigPackets: 10, ReplyBytes: 4096 + 6*52, ReplyPackets: 6}
	h := newHarness(t, withKernelPath(r, w))
	kernelRetrSession(t, h, r, w, file)
	h.waitLog("msg=transfer", "data_path=kernel", "bytes=4096 bytes_to_client=4096 bytes_to_server=0", "code=226 outcome=forwarded", "bytes_from=conntrack")
}

// TestKernelPathNotConnected: a link that a transfer command used, whose
// connection the kernel never made, is "expired"; so is one whose lookup
// failed (logged), never "forwarded". Its transfer line comes when the
// session ends, with no reply code: none came.
func TestKernelPathNotConnected(t *testing.T) {
	for _, failWith := range []error{nil, errors.New("netlink dump: permission denied")} {
		r := &recordingPinholer{open: map[int]rules.Pinhole{}}
		w := newFakeWatcher()
		w.failWith = failWith
		h := newHarness(t, withKernelPath(r, w), func(s *Server) { s.DataTimeout = time.Second })
		h.fake.SetFile("f", randomBytes(4, 4096))
		c := h.dial()
		c.login()
		c.negotiate("EPSV")
		c.send("RETR f") // the transfer command uses the link; no connection comes
		if !eventually(5*time.Second, func() bool { _, open := r.state(); return open == 0 }) {
			t.Fatal("the pinholes stayed open past data_timeout")
		}
		c.c.Close()
		// The fake server still waits for the data connection (10 s), so
		// the session ends closeGrace (5 s) after the client left.
		if !eventually(15*time.Second, func() bool { return h.srv.Limiter.Active() == 0 }) {
			t.Fatal("the session did not end")
		}
		h.sessionsEnded()
		h.waitLog("msg=transfer", "command=RETR path=f", "code=0 outcome=expired")
		if h.logged("outcome=forwarded") {
			t.Errorf("lookup error %v: a connection never made was logged forwarded", failWith)
		}
		if failWith != nil {
			h.waitLog("looking up a kernel-path data connection", "permission denied")
		}
	}
}

// TestKernelPathRefused: a transfer command the server refuses (550)
// closes its pinholes at once, not at data_timeout, and its transfer line
// says so, with the code, without asking the conntrack table.
func TestKernelPathRefused(t *testing.T) {
	r := &recordingPinholer{open: map[int]rules.Pinhole{}}
	w := newFakeWatcher()
	h := newHarness(t, withKernelPath(r, w), func(s *Server) { s.DataTimeout = time.Minute })
	c := h.dial()
	c.login()
	c.negotiate("EPSV")
	c.cmd("RETR missing", 550)
	if !eventually(5*time.Second, func() bool { _, open := r.state(); return open == 0 }) {
		t.Error("the pinholes stayed open after the server refused the transfer")
	}
	h.waitLog("msg=transfer", "command=RETR path=missing direction=download data_path=kernel", "code=550 outcome=refused")
	c.quit()
	h.sessionsEnded()
	if n := w.lookupCount(); n != 0 {
		t.Errorf("%d conntrack lookups for a refused transfer, want 0", n)
	}
}

// TestKernelPathWatchFails: an error from the watcher is not a connection:
// the pinhole stays (the connection may still come) until the link ends,
// instead of going after kernelPinholeGrace as for a seen connection.
func TestKernelPathWatchFails(t *testing.T) {
	r := &recordingPinholer{open: map[int]rules.Pinhole{}}
	w := newFakeWatcher()
	h := newHarness(t, withKernelPath(r, w), func(s *Server) { s.DataTimeout = 20 * time.Second })
	c := h.dial()
	c.login()
	c.negotiate("EPSV")
	w.fail(errors.New("conntrack events stopped: netlink receive: bad message"))
	h.waitLog("watching conntrack failed", "bad message")
	time.Sleep(kernelPinholeGrace + 500*time.Millisecond)
	if _, open := r.state(); open != 1 {
		t.Errorf("%d pinholes open %s after the watcher failed, want 1: an error is not a connection", open, kernelPinholeGrace+500*time.Millisecond)
	}
	c.quit()
	h.sessionsEnded()
	if _, open := r.state(); open != 0 {
		t.Errorf("%d pinholes open after the session ended", open)
	}
	if h.logged("outcome=forwarded") {
		t.Error("a link whose watcher failed was logged forwarded")
	}
}

// TestKernelPathPortsShared: two listeners (or two configuration
// generations) whose server_ports overlap, to the same server, on the
// kernel path. Each PORT makes a DNAT pinhole matching "server -> the
// gateway's port"; had both sessions the same port, the two pinholes would
// have the same match and different clients as targets, and one client's
// data would reach the other. With one allocator for the process, the port
// is held by one pinhole at a time: the second session is refused, not
// given the port.
func TestKernelPathPortsShared(t *testing.T) {
	ports := nat.NewPortAllocator()
	one := nat.PortRange{First: 29990, Last: 29990}
	r := &recordingPinholer{open: map[int]rules.Pinhole{}}
	shared := func(s *Server) { s.ServerPorts = nat.NewSharedPortPool(one, ports) }
	first := newHarness(t, withKernelPath(r, newFakeWatcher()), shared)
	second := newHarness(t, withKernelPath(r, newFakeWatcher()), shared,
		func(s *Server) { s.Upstream = first.srv.Upstream })
	a := first.dial()
	a.login()
	a.negotiate("PORT")
	b := second.dial()
	b.login()
	if got := b.cmd("PORT "+nat.FormatPORT(netip.MustParseAddrPort("127.0.0.1:30001")), 425); !strings.Contains(got, "Can't open data connection") {
		t.Errorf("second session's PORT: %q", got)
	}
	opened, open := r.state()
	if len(opened) != 1 || open != 1 {
		t.Errorf("%d pinholes opened, %d open; want the first session's only: %+v", len(opened), open, opened)
	}
	a.quit()
	first.sessionsEnded()
	// Released with the first session: the second may have it now.
	b.negotiate("PORT")
	b.quit()
	second.sessionsEnded()
	if ports.Held() != 0 {
		t.Errorf("%d ports held after both sessions ended", ports.Held())
	}
}

// TestKernelPathTransferNotIdle: on the kernel path the data never passes
// ftpgate, and the control channel is silent while it flows. A transfer
// longer than IdleTimeout must end with the server's 226, not with
// ftpgate's 421: the transfer runs until its final reply.
func TestKernelPathTransferNotIdle(t *testing.T) {
	r := &recordingPinholer{open: map[int]rules.Pinhole{}}
	w := newFakeWatcher()
	h := newHarness(t, withKernelPath(r, w), func(s *Server) { s.IdleTimeout = time.Second })
	h.fake.Script(func(s *fakeScript) { s.Throttle = 75 * time.Millisecond })
	kernelRetrSession(t, h, r, w, randomBytes(5, 40*chunkSize)) // 40 chunks, 75 ms apart: 3 s
	if h.logged("Idle timeout") || h.logged("client idle") {
		t.Error("the session timed out during a kernel-path transfer")
	}
}
