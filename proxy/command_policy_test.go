package proxy

import (
	"strings"
	"testing"
)

// TestSmuggledCommands: a line that is not VERB or VERB SP arguments is
// refused with 500 and never reaches the server, whatever a liberal server
// would have made of it (ProFTPD splits the verb at any white space;
// vsftpd and pure-ftpd take P@SW for PASV); the log never shows a
// password, however spelled.
func TestSmuggledCommands(t *testing.T) {
	h := newHarness(t)
	c := h.dial()
	c.login()
	smuggled := []string{
		"P@SW",
		"PASV\t",
		"EPSV\t",
		"PORT\t127,0,0,1,78,32",
		"EPRT\t|1|127.0.0.1|20000|",
		"PASS\tsecret-tab",
		"PASV@",
		" PASV",
		"pa\xff\xf4sv",
		"RETR x\rPASV",
		"",
	}
	for _, line := range smuggled {
		c.cmd(line, 500)
	}
	c.cmd("NOOP", 200) // the session goes on
	c.quit()
	h.sessionsEnded()
	for _, l := range h.fake.Lines()[2:] {
		if !strings.HasPrefix(l, "NOOP") && !strings.HasPrefix(l, "QUIT") {
			t.Errorf("the server received %q", l)
		}
	}
	if n := strings.Count(h.logs.String(), "reason=command_syntax"); n != len(smuggled) {
		t.Errorf("%d refusals logged, want %d", n, len(smuggled))
	}
	if strings.Contains(h.logs.String(), "secret") {
		t.Errorf("a password reached the log:\n%s", h.logs)
	}
}

// TestUnknownVerbs: only the verbs ftpgate knows are forwarded; others get
// 502 (counted), unless the listener lists them in ExtraVerbs.
func TestUnknownVerbs(t *testing.T) {
	h := newHarness(t, func(s *Server) { s.ExtraVerbs = []string{"XFROB"} })
	c := h.dial()
	c.login()
	for _, line := range []string{"FROB x", "SPSV", "ESTP", "PASSWORD secret-unknown"} {
		c.cmd(line, 502)
	}
	c.cmd("xfrob y", 500) // the fake server does not know it either: forwarded
	c.cmd("SYST", 215)
	c.quit()
	h.sessionsEnded()
	got := strings.Join(h.fake.Lines()[2:], "")
	if want := "XFROB y\r\nSYST\r\nQUIT\r\n"; got != want {
		t.Errorf("the server received %q, want %q", got, want)
	}
	if n := strings.Count(h.logs.String(), "reason=unknown_verb"); n != 4 {
		t.Errorf("%d unknown verbs logged, want 4", n)
	}
	if strings.Contains(h.logs.String(), "secret") {
		t.Errorf("an unknown command's argument reached the log:\n%s", h.logs)
	}
}

// TestUnsolicitedPassiveReply: a 227, 228 or 229 that answers anything but
// ftpgate's own PASV or EPSV never reaches the client: its address would
// cross unrewritten. The client gets an error in its place, in turn.
func TestUnsolicitedPassiveReply(t *testing.T) {
	h := newHarness(t, func(s *Server) { s.ExtraVerbs = []string{"XPSV"} })
	h.fake.Script(func(s *fakeScript) {
		s.Replies = map[string]string{
			"XPSV": "227 Entering Passive Mode (10,0,0,5,200,10).\r\n",
			"SITE": "229-Extended\r\n inner line\r\n229 Entering Extended Passive Mode (|||51000|)\r\n",
			"SYST": "228 Entering Long Passive Mode (4,4,10,0,0,5,2,200,10)\r\n",
		}
	})
	c := h.dial()
	c.login()
	for _, line := range []string{"XPSV", "SITE X", "SYST"} {
		if got := c.cmd(line, 502); strings.Contains(got, "10,0,0,5") || strings.Contains(got, "51000") {
			t.Errorf("%s: the server's address reached the client: %q", line, got)
		}
	}
	c.cmd("NOOP", 200)
	c.quit()
	h.sessionsEnded()
	if n := strings.Count(h.logs.String(), "reason=unsolicited_reply"); n != 3 {
		t.Errorf("%d withheld replies logged, want 3", n)
	}
}
