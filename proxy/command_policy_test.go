package proxy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
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

// TestReadOnlyAndDenyCommands: a read-only listener refuses every command
// that changes the server's files with 550 (SITE but SITE HELP), a denied
// verb gets 502; none reaches the server, each is counted (reason policy),
// and reading still works.
func TestReadOnlyAndDenyCommands(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	h := newHarness(t, func(s *Server) {
		s.Metrics = m
		s.ReadOnly = true
		s.DenyCommands = []string{"NLST"}
	})
	file := randomBytes(31, 4096)
	h.fake.SetFile("f", file)
	c := h.dial()
	c.login()
	refused := []string{"STOR f", "APPE f", "STOU", "DELE f", "RMD d", "XRMD d", "MKD d", "XMKD d",
		"RNFR f", "RNTO g", "MFMT 20260101000000 f", "SITE CHMOD 777 f", "site cpfr f",
		"MDTM 20260101000000 f", "MDTM 20260101000000.123 f"}
	for _, line := range refused {
		c.cmd(line, 550)
	}
	c.cmd("NLST", 502)
	c.cmd("SITE HELP", 500) // allowed: the fake server does not know SITE
	c.cmd("MDTM f", 500)    // reading a time is allowed (the fake does not know MDTM)
	sameContent(t, "RETR", c.retr("EPSV", "f"), file)
	c.quit()
	h.sessionsEnded()
	for _, cmd := range h.fake.Commands() {
		if slices.Contains(writeVerbs, cmd.Verb) && cmd.Arg != "HELP" || cmd.Verb == "NLST" || cmd.Verb == "MDTM" && cmd.Arg != "f" {
			t.Errorf("the server received %s %s", cmd.Verb, cmd.Arg)
		}
	}
	if n := testutil.ToFloat64(m.rejections.WithLabelValues(t.Name(), "policy")); n != float64(len(refused)+1) {
		t.Errorf("ftpgate_rejections_total{reason=policy} = %v, want %d", n, len(refused)+1)
	}
}

// TestAllowClients: a client outside AllowClients gets 421 and no
// session (nothing reaches the server); one inside is served.
func TestAllowClients(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	h := newHarness(t, func(s *Server) {
		s.Metrics = m
		s.AllowClients = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	})
	refused := h.dialFrom("127.0.0.1:0")
	refused.expect(421)
	refused.expectClosed()
	allowed := h.dialFrom("127.0.0.2:0")
	allowed.login()
	allowed.quit()
	h.sessionsEnded()
	h.waitLog("session refused", "reason=allow_clients", "client=127.0.0.1:")
	if n := h.fake.Sessions(); n != 1 {
		t.Errorf("the server saw %d sessions, want 1", n)
	}
	if n := testutil.ToFloat64(m.sessions.WithLabelValues(t.Name(), "refused")); n != 1 {
		t.Errorf("refused sessions = %v, want 1", n)
	}
}
