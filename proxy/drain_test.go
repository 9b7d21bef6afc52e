package proxy

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// TestDrain: at shutdown with a DrainTimeout, a running transfer finishes
// (then its client gets 421), while an idle session gets 421 at once.
func TestDrain(t *testing.T) {
	h := newHarness(t, func(s *Server) { s.DrainTimeout = 5 * time.Second })
	file := randomBytes(9, 512<<10)
	h.fake.SetFile("f", file)
	h.fake.Script(func(s *fakeScript) { s.Throttle = 20 * time.Millisecond })

	idle := h.dial()
	idle.login()
	busy := h.dial()
	busy.login()
	p := busy.negotiate("PASV")
	busy.send("RETR f")
	dc := p.open()
	busy.expect(150)

	served := make(chan error, 1)
	go func() { served <- h.shutdown() }()

	// The idle session goes at once.
	if code, _, err := idle.reply(); err != nil || code != 421 {
		t.Errorf("idle session: reply %d, %v; want 421", code, err)
	}
	// The transfer finishes whole.
	dc.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(dc)
	if err != nil || !bytes.Equal(got, file) {
		t.Errorf("transfer during the drain: %d of %d bytes, %v", len(got), len(file), err)
	}
	busy.expect(226)
	if code, _, err := busy.reply(); err != nil || code != 421 {
		t.Errorf("busy session after its transfer: reply %d, %v; want 421", code, err)
	}
	select {
	case err := <-served:
		if !errors.Is(err, ErrShutdown) {
			t.Errorf("Serve returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the drain")
	}
	h.waitLog("draining", "sessions=2")
}

// TestShutdownSlowReader: a client that stops reading its replies (here a
// HELP reply of 16 MiB, more than the sockets buffer) must not hold up the
// shutdown. Before, the reply pump held the session's lock through a write
// whose deadline was idle_timeout, and the drain waited for that lock: the
// process did not exit until then. Now Serve returns within DrainTimeout
// and the writer's grace, whatever the client does (here the session has
// ended already: its client fell more than maxQueuedReplyBytes behind).
func TestShutdownSlowReader(t *testing.T) {
	const drain = time.Second
	h := newHarness(t, func(s *Server) {
		s.DrainTimeout = drain
		s.IdleTimeout = 10 * time.Minute
	})
	long := "214-Help follows.\r\n" + strings.Repeat(" a line of help text, long enough to fill buffers\r\n", 16<<20/52) + "214 End.\r\n"
	h.fake.Script(func(s *fakeScript) { s.Replies = map[string]string{"HELP": long} })
	c := h.dial()
	c.login()
	c.send("HELP") // and never read the reply
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	err := h.shutdown()
	if !errors.Is(err, ErrShutdown) {
		t.Errorf("Serve returned %v", err)
	}
	if d := time.Since(start); d > drain+shutdownGrace+closeGrace {
		t.Errorf("Serve returned %s after the shutdown, want within %s", d.Round(time.Millisecond), drain+shutdownGrace+closeGrace)
	}
	h.sessionsEnded()
}
