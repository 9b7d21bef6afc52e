package proxy

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/rules"
)

// recordingPinholer is a rules.Pinholer that records what is open.
type recordingPinholer struct {
	mu     sync.Mutex
	opened []rules.Pinhole
	open   map[int]rules.Pinhole // by index in opened
	fail   bool
}

func (r *recordingPinholer) Open(_ context.Context, p rules.Pinhole) (func(context.Context) error, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		return nil, errors.New("the firewall says no")
	}
	i := len(r.opened)
	r.opened = append(r.opened, p)
	r.open[i] = p
	return func(context.Context) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.open, i)
		return nil
	}, nil
}

func (r *recordingPinholer) state() (opened []rules.Pinhole, open int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]rules.Pinhole(nil), r.opened...), len(r.open)
}

func withPinholer(r *recordingPinholer) func(*Server) {
	return func(s *Server) { s.Pinholes = r }
}

// TestPinholes: every data listener gets an exact pinhole for its one peer
// before its port is announced, and loses it once the connection is made,
// when the negotiation is replaced, and when the session ends.
func TestPinholes(t *testing.T) {
	for _, tc := range []struct {
		verb string
		mode ServerMode
		// the pinhole's side: the client (its own data listener) or the
		// server (ftpgate's listener for the server's connection)
		clientSide, serverSide bool
	}{
		{"PASV", SameMode, true, false},
		{"EPSV", PassiveMode, true, false},
		{"PORT", SameMode, false, true},
		{"PASV", ActiveMode, true, true},
		{"EPRT", PassiveMode, false, false},
	} {
		t.Run(tc.verb+"/"+tc.mode.String(), func(t *testing.T) {
			r := &recordingPinholer{open: map[int]rules.Pinhole{}}
			h := newHarness(t, withMode(tc.mode), withPinholer(r))
			file := randomBytes(7, 256<<10)
			h.fake.SetFile("f", file)
			c := h.dial()
			c.login()
			p := c.negotiate(tc.verb)
			opened, open := r.state()
			if want := btoi(tc.clientSide) + btoi(tc.serverSide); len(opened) != want || open != want {
				t.Fatalf("after %s: %d pinholes opened, %d open; want %d: %+v", tc.verb, len(opened), open, want, opened)
			}
			for _, ph := range opened {
				if ph.Deliver != rules.AcceptLocal || ph.Session == 0 || ph.Seq == 0 || ph.From != loopback || ph.To.Addr() != loopback {
					t.Errorf("pinhole %+v: want AcceptLocal from and to 127.0.0.1 with session and sequence", ph)
				}
				if tc.clientSide && ph.To.Port() == p.addr.Port() {
					tc.clientSide = false // found the client's
				}
			}
			if tc.clientSide {
				t.Errorf("no pinhole for the announced port %d: %+v", p.addr.Port(), opened)
			}
			c.send("RETR f")
			if got := c.download(p); !bytes.Equal(got, file) {
				t.Error("RETR: content differs")
			}
			if !eventually(2*time.Second, func() bool { _, open := r.state(); return open == 0 }) {
				t.Errorf("pinholes still open after the transfer: %+v", opened)
			}
			// An unused negotiation is closed with the session.
			c.negotiate(tc.verb)
			c.quit()
			h.sessionsEnded()
			if _, open := r.state(); open != 0 {
				t.Errorf("%d pinholes open after the session ended", open)
			}
		})
	}
}

// TestPinholeReplaced: a second PASV closes the first one's pinhole.
func TestPinholeReplaced(t *testing.T) {
	r := &recordingPinholer{open: map[int]rules.Pinhole{}}
	h := newHarness(t, withPinholer(r))
	c := h.dial()
	c.login()
	first := c.negotiate("PASV")
	second := c.negotiate("PASV")
	if !eventually(2*time.Second, func() bool { _, open := r.state(); return open == 1 }) {
		_, open := r.state()
		t.Fatalf("%d pinholes open after a second PASV, want 1", open)
	}
	r.mu.Lock()
	for _, ph := range r.open {
		if ph.To.Port() != second.addr.Port() || ph.To.Port() == first.addr.Port() {
			t.Errorf("open pinhole %+v, want the one for port %d", ph, second.addr.Port())
		}
	}
	r.mu.Unlock()
	c.quit()
	h.sessionsEnded()
}

// TestPinholeFailure: when the firewall refuses the pinhole, the client gets
// 425, no port stays taken, and the session goes on.
func TestPinholeFailure(t *testing.T) {
	r := &recordingPinholer{open: map[int]rules.Pinhole{}, fail: true}
	h := newHarness(t, withPinholer(r))
	c := h.dial()
	c.login()
	c.cmd("PASV", 425)
	if !h.portsFree() {
		t.Error("a port stays taken after the pinhole failed")
	}
	h.waitLog("opening pinhole", "the firewall says no")
	c.cmd("NOOP", 200)
	r.mu.Lock()
	r.fail = false
	r.mu.Unlock()
	c.negotiate("PASV")
	c.quit()
	h.sessionsEnded()
	if _, open := r.state(); open != 0 {
		t.Errorf("%d pinholes open after the session ended", open)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// blockingPinholer holds every Open until the test lets it go.
type blockingPinholer struct {
	entered chan struct{}
	release chan struct{}
}

func (b *blockingPinholer) Open(ctx context.Context, p rules.Pinhole) (func(context.Context) error, error) {
	b.entered <- struct{}{}
	<-b.release
	return func(context.Context) error { return nil }, nil
}

// TestNoLockAcrossPinholeIO: opening a pinhole is firewall I/O, which may
// take long (an iptables lock held by someone else). The session's lock is
// not held meanwhile: before, the intercepted 227 opened its data port with
// the lock held, and every other goroutine of the session (the reply
// writer's callers, the drain, the shutdown) waited for the firewall.
func TestNoLockAcrossPinholeIO(t *testing.T) {
	b := &blockingPinholer{entered: make(chan struct{}), release: make(chan struct{})}
	h := newHarness(t, func(s *Server) { s.Pinholes = b })
	c := h.dial()
	c.login()
	c.send("PASV")
	select {
	case <-b.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("no pinhole opened for PASV")
	}
	h.srv.mu.Lock()
	var ss *session
	for s := range h.srv.sessions {
		ss = s
	}
	h.srv.mu.Unlock()
	if ss.mu.TryLock() {
		ss.mu.Unlock()
	} else {
		t.Error("the session's lock is held while a pinhole is being opened")
	}
	close(b.release)
	c.expect(227)
	c.quit()
	h.sessionsEnded()
}
