package proxy

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/nat"
	"github.com/ftpgate/ftpgate/proxy/ftp"
)

// ioTimeout bounds every read and accept of the test client, so that a
// broken proxy fails a test instead of hanging it.
const ioTimeout = 10 * time.Second

var loopback = netip.MustParseAddr("127.0.0.1")

// ftpClient is a minimal FTP client for the tests. Its methods call
// t.Fatal, so they must run on the test's goroutine.
type ftpClient struct {
	t  testing.TB
	c  *net.TCPConn
	rw net.Conn // what replies are read from and commands written to: c, or TLS over it
	rr *ftp.ReplyReader
	// clientPorts, if valid, is the range every 227/229 must name a port
	// in, with the address 127.0.0.1.
	clientPorts nat.PortRange
}

// dialFTP connects to addr from local ("" for any local address).
func dialFTP(t testing.TB, addr, local string) *ftpClient {
	t.Helper()
	d := net.Dialer{Timeout: ioTimeout}
	if local != "" {
		la, err := net.ResolveTCPAddr("tcp", local)
		if err != nil {
			t.Fatal(err)
		}
		d.LocalAddr = la
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dialing the proxy: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &ftpClient{t: t, c: c.(*net.TCPConn), rw: c, rr: ftp.NewReplyReader(c, 1<<16)}
}

// reply reads one complete reply, all its lines.
func (c *ftpClient) reply() (code int, text string, err error) {
	c.rw.SetReadDeadline(time.Now().Add(ioTimeout))
	var b strings.Builder
	for {
		rl, err := c.rr.Next()
		if err != nil {
			return 0, b.String(), err
		}
		b.Write(rl.Raw)
		if rl.Last {
			return rl.Code, b.String(), nil
		}
	}
}

// expect reads one reply and fails the test unless it has code.
func (c *ftpClient) expect(code int) string {
	c.t.Helper()
	got, text, err := c.reply()
	if err != nil {
		c.t.Fatalf("waiting for a %d reply: %v (read %q)", code, err, text)
	}
	if got != code {
		c.t.Fatalf("got reply %q, want code %d", text, code)
	}
	return text
}

func (c *ftpClient) write(b []byte) {
	c.t.Helper()
	c.rw.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := c.rw.Write(b); err != nil {
		c.t.Fatalf("writing %q: %v", b, err)
	}
}

func (c *ftpClient) send(line string) { c.t.Helper(); c.write([]byte(line + "\r\n")) }

// cmd sends line and expects a reply with code.
func (c *ftpClient) cmd(line string, code int) string {
	c.t.Helper()
	c.send(line)
	return c.expect(code)
}

func (c *ftpClient) login() {
	c.t.Helper()
	c.expect(220)
	c.cmd("USER anonymous", 331)
	c.cmd("PASS guest", 230)
}

// expectClosed reads until the connection ends, failing if a reply arrives
// or if it does not end in time.
func (c *ftpClient) expectClosed() {
	c.t.Helper()
	code, text, err := c.reply()
	if err == nil {
		c.t.Fatalf("got reply %d %q, want the connection closed", code, text)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		c.t.Fatalf("want the connection closed, got %v", err)
	}
}

// quit sends QUIT, expects 221 and the end of the connection, and closes it.
func (c *ftpClient) quit() {
	c.t.Helper()
	c.cmd("QUIT", 221)
	c.expectClosed()
	c.c.Close()
}

// dataPlan is a data connection the client has negotiated.
type dataPlan struct {
	verb  string
	reply string
	addr  netip.AddrPort // passive: where the client connects; active: its listener
	ln    *net.TCPListener
	t     testing.TB
}

// open connects (passive) or accepts (active) the data connection.
func (p *dataPlan) open() *net.TCPConn {
	p.t.Helper()
	c, err := p.tryOpen()
	if err != nil {
		p.t.Fatalf("opening the data connection for %s: %v", p.verb, err)
	}
	p.t.Cleanup(func() { c.Close() })
	return c
}

func (p *dataPlan) tryOpen() (*net.TCPConn, error) {
	if p.ln == nil {
		c, err := net.DialTimeout("tcp", p.addr.String(), ioTimeout)
		if err != nil {
			return nil, err
		}
		return c.(*net.TCPConn), nil
	}
	defer p.ln.Close()
	p.ln.SetDeadline(time.Now().Add(ioTimeout))
	return p.ln.AcceptTCP()
}

// negotiate sends PASV, EPSV, PORT or EPRT and checks the reply.
func (c *ftpClient) negotiate(verb string) *dataPlan {
	c.t.Helper()
	return c.negotiateAdvertising(verb, loopback)
}

// negotiateAdvertising is negotiate, writing adv as the client's address
// in PORT or EPRT.
func (c *ftpClient) negotiateAdvertising(verb string, adv netip.Addr) *dataPlan {
	c.t.Helper()
	p := &dataPlan{verb: verb, t: c.t}
	switch verb {
	case "PASV":
		p.reply = c.cmd("PASV", 227)
		ap, err := nat.Parse227(p.reply)
		if err != nil {
			c.t.Fatalf("parsing %q: %v", p.reply, err)
		}
		p.addr = ap
	case "EPSV":
		p.reply = c.cmd("EPSV", 229)
		port, err := nat.Parse229(p.reply)
		if err != nil {
			c.t.Fatalf("parsing %q: %v", p.reply, err)
		}
		p.addr = netip.AddrPortFrom(loopback, port)
	case "PORT", "EPRT":
		ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: loopback.AsSlice()})
		if err != nil {
			c.t.Fatal(err)
		}
		c.t.Cleanup(func() { ln.Close() })
		p.ln = ln
		p.addr = addrPortOf(ln.Addr())
		advertised := netip.AddrPortFrom(adv, p.addr.Port())
		arg := nat.FormatPORT(advertised)
		if verb == "EPRT" {
			arg = nat.FormatEPRT(advertised)
		}
		p.reply = c.cmd(verb+" "+arg, 200)
		return p
	default:
		c.t.Fatalf("negotiate %q", verb)
	}
	if p.addr.Addr() != loopback {
		c.t.Errorf("%s reply %q names %v, want 127.0.0.1", verb, p.reply, p.addr.Addr())
	}
	if c.clientPorts.Len() > 0 && !c.clientPorts.Contains(p.addr.Port()) {
		c.t.Errorf("%s reply %q names port %d, want one in ClientPorts %v", verb, p.reply, p.addr.Port(), c.clientPorts)
	}
	return p
}

// download reads the data connection of p to its end, then expects 150
// and 226 on the control connection.
func (c *ftpClient) download(p *dataPlan) []byte {
	c.t.Helper()
	dc := p.open()
	defer dc.Close()
	dc.SetReadDeadline(time.Now().Add(ioTimeout))
	b, err := io.ReadAll(dc)
	if err != nil {
		c.t.Fatalf("reading the data connection: %v (after %d bytes)", err, len(b))
	}
	c.expect(150)
	c.expect(226)
	return b
}

// retr negotiates with verb and downloads name.
func (c *ftpClient) retr(verb, name string) []byte {
	c.t.Helper()
	p := c.negotiate(verb)
	c.send("RETR " + name)
	return c.download(p)
}

// stor negotiates with verb and uploads b as name.
func (c *ftpClient) stor(verb, name string, b []byte) {
	c.t.Helper()
	p := c.negotiate(verb)
	c.send("STOR " + name)
	dc := p.open()
	dc.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := dc.Write(b); err != nil {
		c.t.Fatalf("writing the data connection: %v", err)
	}
	dc.Close()
	c.expect(150)
	c.expect(226)
}

// dialRefused reports whether a connection to ap is refused.
func dialRefused(ap netip.AddrPort) bool {
	c, err := net.DialTimeout("tcp", ap.String(), ioTimeout)
	if err == nil {
		c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// readAll reads c to its end; the error is nil at EOF.
func readAll(c net.Conn) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	return io.ReadAll(c)
}
