package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/nat"
)

// Port pools: each harness takes the next block of poolBlock ports, half
// for ClientPorts and half for ServerPorts, inside 20000-29999 (below
// Linux's ephemeral range, so outgoing connections never hold them). The
// first block is random, so that concurrent test processes rarely meet;
// listenData skips a port that another program holds anyway.
const (
	poolFirst = 20000
	poolPorts = 10000
	poolBlock = 20
)

var (
	poolStart = rand.IntN(poolPorts / poolBlock)
	poolNext  atomic.Int64
)

func newPools() (client, server *nat.PortPool) {
	n := (poolStart + int(poolNext.Add(1))) % (poolPorts / poolBlock)
	first := uint16(poolFirst + n*poolBlock)
	half := uint16(poolBlock / 2)
	return nat.NewPortPool(nat.PortRange{First: first, Last: first + half - 1}),
		nat.NewPortPool(nat.PortRange{First: first + half, Last: first + 2*half - 1})
}

// eventually polls cond every 10ms for at most d.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var warmNet sync.Once

func countFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("counting descriptors: %v", err)
	}
	return len(ents)
}

// listFDs describes the open descriptors, for a leak report.
func listFDs() string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var b strings.Builder
	for _, e := range ents {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		fmt.Fprintf(&b, "%s -> %s\n", e.Name(), target)
	}
	return b.String()
}

// checkLeaks records the number of goroutines and open descriptors, and
// checks at the end of the test (after every later cleanup) that both are
// back to where they were. Tests that use it must not run in parallel.
func checkLeaks(t testing.TB) {
	t.Helper()
	warmNet.Do(func() {
		// The runtime's network poller keeps descriptors open once
		// started; start it before counting.
		if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
			ln.Close()
		}
	})
	goroutines, fds := runtime.NumGoroutine(), countFDs(t)
	t.Cleanup(func() {
		var g, f int
		if !eventually(5*time.Second, func() bool {
			// io.Copy between TCP connections splices through pipes
			// that internal/poll keeps in a sync.Pool and closes
			// from a finalizer: collect them before counting.
			runtime.GC()
			g, f = runtime.NumGoroutine(), countFDs(t)
			return g <= goroutines && f <= fds
		}) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("leak: %d goroutines (was %d), %d descriptors (was %d)\n%s\n%s", g, goroutines, f, fds, listFDs(), buf)
		}
	})
}

// lockedBuffer collects log output from many goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// harness is one proxy.Server on 127.0.0.1 in front of one fakeFTP.
type harness struct {
	t      testing.TB
	fake   *fakeFTP
	srv    *Server
	addr   string
	logs   *lockedBuffer
	cancel context.CancelCauseFunc
	served chan error
	err    error // what Serve returned, once it has
	ended  bool
}

// newHarness starts a fake server and a proxy in front of it, configured by
// the functions given; it checks for leaks when the test ends.
func newHarness(t testing.TB, configure ...func(*Server)) *harness {
	t.Helper()
	checkLeaks(t)
	h := &harness{t: t, logs: new(lockedBuffer), served: make(chan error, 1)}
	h.fake = newFakeFTP(t)
	cp, sp := newPools()
	h.srv = &Server{
		Name:        t.Name(),
		Upstream:    h.fake.Addr(),
		ClientPorts: cp,
		ServerPorts: sp,
		IdleTimeout: 5 * time.Second,
		DataTimeout: 3 * time.Second,
		Limiter:     NewSessionLimiter(0, 0),
		Logger: slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{
			Level: slog.LevelDebug,
			ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey && len(groups) == 0 {
					return slog.Attr{}
				}
				return a
			},
		})),
	}
	for _, f := range configure {
		f(h.srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	ctx, cancel := context.WithCancelCause(context.Background())
	h.cancel = cancel
	go func() { h.served <- h.srv.Serve(ctx, ln) }()
	// Cleanups run last-registered first: the proxy stops, then the fake
	// server, then checkLeaks counts.
	t.Cleanup(func() {
		if err := h.shutdown(); !errors.Is(err, ErrShutdown) {
			t.Errorf("Serve returned %v, want %v", err, ErrShutdown)
		}
		if !eventually(2*time.Second, h.portsFree) {
			t.Errorf("after Serve returned: ClientPorts.InUse() = %d, ServerPorts.InUse() = %d, want 0",
				h.srv.ClientPorts.InUse(), h.srv.ServerPorts.InUse())
		}
		if t.Failed() {
			t.Logf("proxy log:\n%s", h.logs)
		}
	})
	return h
}

// shutdown cancels Serve's context with ErrShutdown and returns what Serve
// returned.
func (h *harness) shutdown() error {
	h.t.Helper()
	if h.ended {
		return h.err
	}
	h.ended = true
	h.cancel(ErrShutdown)
	select {
	case h.err = <-h.served:
	case <-time.After(10 * time.Second):
		h.err = errors.New("Serve did not return within 10s of the shutdown")
	}
	return h.err
}

func (h *harness) portsFree() bool {
	return h.srv.ClientPorts.InUse() == 0 && h.srv.ServerPorts.InUse() == 0
}

// dial connects a client to the proxy from 127.0.0.1.
func (h *harness) dial() *ftpClient {
	h.t.Helper()
	return h.dialFrom("")
}

func (h *harness) dialFrom(local string) *ftpClient {
	h.t.Helper()
	c := dialFTP(h.t, h.addr, local)
	c.clientPorts = h.srv.ClientPorts.Range()
	return c
}

// sessionsEnded waits until no session is active, then checks that every
// port went back to its pool.
func (h *harness) sessionsEnded() {
	h.t.Helper()
	h.sessionsActive(0)
	if !eventually(2*time.Second, h.portsFree) {
		h.t.Fatalf("after the session ended: ClientPorts.InUse() = %d, ServerPorts.InUse() = %d, want 0",
			h.srv.ClientPorts.InUse(), h.srv.ServerPorts.InUse())
	}
}

// sessionsActive waits until n sessions are active.
func (h *harness) sessionsActive(n int) {
	h.t.Helper()
	if !eventually(5*time.Second, func() bool { return h.srv.Limiter.Active() == n }) {
		h.t.Fatalf("%d sessions active, want %d", h.srv.Limiter.Active(), n)
	}
}

// waitLog waits until the proxy has logged a line containing every one of
// parts.
func (h *harness) waitLog(parts ...string) {
	h.t.Helper()
	if !eventually(2*time.Second, func() bool { return h.logged(parts...) }) {
		h.t.Errorf("no log line with %q", parts)
	}
}

func (h *harness) logged(parts ...string) bool {
	for line := range strings.Lines(h.logs.String()) {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// verbs returns the verbs the fake server received.
func (h *harness) verbs() []string {
	var vs []string
	for _, c := range h.fake.Commands() {
		vs = append(vs, c.Verb)
	}
	return vs
}

// randomBytes returns n pseudo-random bytes, the same for the same seed.
func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(b)
	return b
}

func withMode(m ServerMode) func(*Server) { return func(s *Server) { s.ServerMode = m } }
