package proxy

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/nat"
)

// TestAdvertisePorts: the 227/229 name a port of AdvertisePorts (a load
// balancer in front maps it, port for port, to ClientPorts).
func TestAdvertisePorts(t *testing.T) {
	adv := nat.PortRange{First: 30000, Last: 30009}
	h := newHarness(t, func(s *Server) {
		s.ClientPorts = nat.NewPortPool(nat.PortRange{First: s.ClientPorts.Range().First, Last: s.ClientPorts.Range().First + 9})
		s.AdvertisePorts = adv
	})
	c := h.dial()
	c.clientPorts = adv
	c.login()
	for _, verb := range []string{"PASV", "EPSV"} {
		p := c.negotiate(verb) // checks the port is in adv
		bound := h.srv.ClientPorts.Range().First + (p.addr.Port() - adv.First)
		// The listener is on the mapped client port.
		conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(loopback, bound).String(), time.Second)
		if err != nil {
			t.Fatalf("%s: nothing listens on the client port %d behind advertised %d: %v", verb, bound, p.addr.Port(), err)
		}
		conn.Close()
	}
	c.quit()
	h.sessionsEnded()
}

// TestSourceCheckTrusted: with SourceCheckTrusted a data connection from a
// trusted source (a load balancer that changes the source) is accepted.
func TestSourceCheckTrusted(t *testing.T) {
	h := newHarness(t, func(s *Server) {
		s.SourceCheck = SourceCheckTrusted
		s.TrustedSources = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	})
	file := randomBytes(11, 64<<10)
	h.fake.SetFile("f", file)
	c := h.dial()
	c.login()
	p := c.negotiate("PASV")
	c.send("RETR f")
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: time.Second}
	dc, err := d.Dial("tcp", p.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	dc.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(dc)
	dc.Close()
	if err != nil || !bytes.Equal(got, file) {
		t.Errorf("RETR through the trusted source: %d bytes, %v", len(got), err)
	}
	c.expect(150)
	c.expect(226)
	c.quit()
	h.sessionsEnded()
}
