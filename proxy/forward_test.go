package proxy

import (
	"net/netip"
	"testing"
)

func TestSplitUserHost(t *testing.T) {
	for _, tc := range []struct{ in, user, host string }{
		{"anonymous@ftp.example.net", "anonymous", "ftp.example.net"},
		{"alice@198.18.1.2:2121", "alice", "198.18.1.2:2121"},
		{"bob@example.org@[2001:db8::2]:21", "bob@example.org", "[2001:db8::2]:21"},
		{"nohost", "", ""},
		{"@host", "", ""},
		{"user@", "", ""},
	} {
		user, host, ok := splitUserHost(tc.in)
		if user != tc.user || host != tc.host || ok != (tc.user != "") {
			t.Errorf("splitUserHost(%q) = %q, %q, %v", tc.in, user, host, ok)
		}
	}
}

// TestForwardRefused: in forward mode ftpgate greets the client itself,
// answers commands before USER, and refuses with 421 a destination outside
// AllowDestinations, the gateway itself, a port other than 21 (an SMTP
// relay), and a NAT64 address, inside an allowed NAT64 prefix, that
// reaches a private IPv4 address. (Successful forward sessions need a
// non-loopback server: the end-to-end tests have them.)
func TestForwardRefused(t *testing.T) {
	for _, dest := range []string{"198.51.100.7", "127.0.0.1:21", "198.18.1.2:25", "[64:ff9b::a00:5]", "[64:ff9b::7f00:1]:21"} {
		t.Run(dest, func(t *testing.T) {
			h := newHarness(t, func(s *Server) {
				s.Upstream = ""
				s.Forward = true
				s.AllowDestinations = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15"), netip.MustParsePrefix("64:ff9b::/96")}
			})
			c := h.dial()
			c.expect(220)
			c.cmd("SYST", 530)
			c.cmd("AUTH TLS", 534)
			c.cmd("USER nobody", 530)
			c.send("USER anonymous@" + dest)
			c.expect(421)
			c.expectClosed()
			h.sessionsEnded()
			h.waitLog("session refused", "reason=allow_list")
			if n := len(h.fake.Commands()); n != 0 {
				t.Errorf("the server received %d commands", n)
			}
		})
	}
}
