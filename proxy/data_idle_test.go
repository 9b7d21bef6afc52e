package proxy

import (
	"testing"
	"time"
)

// TestDataIdleTimeout: a client that opens its STOR data connection, sends
// a little and then stalls is cut off after DataIdle (outcome idle, both
// data connections reset, the server answers 426), and the session goes
// on; a transfer that keeps moving is not.
func TestDataIdleTimeout(t *testing.T) {
	h := newHarness(t, func(s *Server) { s.DataIdle = 300 * time.Millisecond })
	file := randomBytes(41, 1<<20)
	h.fake.SetFile("f", file)
	c := h.dial()
	c.login()

	p := c.negotiate("EPSV")
	c.send("STOR stalled")
	dc := p.open()
	if _, err := dc.Write(make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	c.expect(150)
	c.expect(426) // the server saw its data connection reset
	dc.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := dc.Read(make([]byte, 1)); err == nil {
		t.Error("the stalled data connection is still open")
	}
	dc.Close()
	h.waitLog("data connection idle: closed", "idle_seconds=0.3")
	h.waitLog("msg=transfer", "outcome=idle")

	// The session goes on, and a moving transfer is not cut.
	sameContent(t, "RETR", c.retr("EPSV", "f"), file)
	c.quit()
	h.sessionsEnded()
	if _, ok := h.fake.File("stalled"); ok {
		t.Error("the server stored the stalled upload")
	}
}
