package proxy

import (
	"bytes"
	"slices"
	"testing"
	"time"
)

// TestServerCommands: which data command the server receives for each
// client command, per ServerCommands (family translation for servers that
// know only RFC 959, or only RFC 2428).
func TestServerCommands(t *testing.T) {
	for _, tc := range []struct {
		commands ServerCommands
		client   string
		server   string
	}{
		{AutoCommands, "PASV", "PASV"},
		{AutoCommands, "EPSV", "EPSV"},
		{AutoCommands, "PORT", "PORT"},
		{AutoCommands, "EPRT", "EPRT"},
		{ClassicCommands, "EPSV", "PASV"},
		{ClassicCommands, "EPRT", "PORT"},
		{ExtendedCommands, "PASV", "EPSV"},
		{ExtendedCommands, "PORT", "EPRT"},
	} {
		t.Run(tc.client+"->"+tc.server, func(t *testing.T) {
			h := newHarness(t, func(s *Server) { s.ServerCommands = tc.commands })
			file := randomBytes(3, 64<<10)
			h.fake.SetFile("f", file)
			c := h.dial()
			c.login()
			if got := c.retr(tc.client, "f"); !bytes.Equal(got, file) {
				t.Error("RETR: content differs")
			}
			c.quit()
			h.sessionsEnded()
			if verbs := h.verbs(); !slices.Contains(verbs, tc.server) {
				t.Errorf("the server received %v, want %s", verbs, tc.server)
			}
		})
	}
}

// TestREIN: REIN forgets the negotiated data connection (its port goes back
// to the pool); a transfer command after it gets ftpgate's own 425.
func TestREIN(t *testing.T) {
	h := newHarness(t)
	c := h.dial()
	c.login()
	c.negotiate("PASV")
	c.send("REIN")
	c.reply() // the fake server's answer to REIN, whatever it is
	if !eventually(2*time.Second, h.portsFree) {
		t.Error("the port of the forgotten PASV is still taken")
	}
	c.cmd("RETR f", 425)
	c.quit()
	h.sessionsEnded()
	if slices.Contains(h.verbs(), "RETR") {
		t.Error("the server received the RETR")
	}
}
