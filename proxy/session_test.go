package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/nat"
	"github.com/ftpgate/ftpgate/proxy/ftp"
)

const fileSize = 1 << 20

func sameContent(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if g, w := sha256.Sum256(got), sha256.Sum256(want); g != w {
		t.Errorf("%s: got %d bytes (sha256 %x), want %d bytes (sha256 %x)", what, len(got), g[:8], len(want), w[:8])
	}
}

// negotiationVerbs returns the address-bearing commands the fake server
// received, with their arguments.
func negotiationVerbs(h *harness) []ftp.Command {
	var cmds []ftp.Command
	for _, c := range h.fake.Commands() {
		switch c.Verb {
		case "PASV", "EPSV", "PORT", "EPRT", "LPRT", "LPSV":
			cmds = append(cmds, c)
		}
	}
	return cmds
}

// checkServerPort checks that a PORT or EPRT the server received names
// 127.0.0.1 and a port of ServerPorts.
func checkServerPort(t *testing.T, h *harness, cmd ftp.Command) {
	t.Helper()
	parse := nat.ParsePORT
	if cmd.Verb == "EPRT" {
		parse = nat.ParseEPRT
	}
	ap, err := parse(cmd.Arg)
	if err != nil {
		t.Errorf("server got %s %q: %v", cmd.Verb, cmd.Arg, err)
		return
	}
	if ap.Addr() != loopback || !h.srv.ServerPorts.Range().Contains(ap.Port()) {
		t.Errorf("server got %s %s, want 127.0.0.1 and a port in ServerPorts %v", cmd.Verb, ap, h.srv.ServerPorts.Range())
	}
}

// TestTransfer runs a RETR and a STOR of 1 MiB for every way a client can
// ask for a data connection and every way ftpgate can ask the server.
func TestTransfer(t *testing.T) {
	tests := []struct {
		client string
		mode   ServerMode
		server string // what the fake server must receive
	}{
		{"PASV", SameMode, "PASV"},
		{"EPSV", SameMode, "EPSV"},
		{"PORT", SameMode, "PORT"},
		{"EPRT", SameMode, "EPRT"},
		{"PASV", PassiveMode, "PASV"},
		{"EPSV", PassiveMode, "EPSV"},
		{"PORT", PassiveMode, "PASV"},
		{"EPRT", PassiveMode, "EPSV"},
		{"PASV", ActiveMode, "PORT"},
		{"EPSV", ActiveMode, "EPRT"},
		{"PORT", ActiveMode, "PORT"},
		{"EPRT", ActiveMode, "EPRT"},
	}
	for i, tt := range tests {
		t.Run(tt.client+"/"+tt.mode.String(), func(t *testing.T) {
			h := newHarness(t, withMode(tt.mode))
			down := randomBytes(uint64(i), fileSize)
			up := randomBytes(uint64(i+100), fileSize)
			h.fake.SetFile("down.bin", down)

			c := h.dial()
			c.login()
			c.cmd("TYPE I", 200)
			sameContent(t, "RETR", c.retr(tt.client, "down.bin"), down)
			c.stor(tt.client, "up.bin", up)
			got, _ := h.fake.File("up.bin")
			sameContent(t, "STOR", got, up)
			c.quit()
			h.sessionsEnded()

			cmds := negotiationVerbs(h)
			if len(cmds) != 2 || cmds[0].Verb != tt.server || cmds[1].Verb != tt.server {
				t.Errorf("server received %v, want %s twice", cmds, tt.server)
			}
			for _, cmd := range cmds {
				if cmd.Verb == "PORT" || cmd.Verb == "EPRT" {
					checkServerPort(t, h, cmd)
				}
			}
			data := h.fake.DataConns()
			if len(data) != 2 {
				t.Fatalf("server data connections: %v, want 2", data)
			}
			for _, d := range data {
				if d.Verb != tt.server || d.Remote.Addr() != loopback {
					t.Errorf("server data connection %+v, want one negotiated by %s with 127.0.0.1", d, tt.server)
				}
				if (d.Verb == "PORT" || d.Verb == "EPRT") && !h.srv.ServerPorts.Range().Contains(d.Remote.Port()) {
					t.Errorf("server dialled %v, want a port in ServerPorts %v", d.Remote, h.srv.ServerPorts.Range())
				}
			}
		})
	}
}

func TestListings(t *testing.T) {
	h := newHarness(t)
	h.fake.SetFile("b.txt", []byte("bravo"))
	h.fake.SetFile("a.txt", []byte("alpha!"))
	c := h.dial()
	c.login()

	p := c.negotiate("PASV")
	c.send("LIST")
	want := "-rw-r--r-- 1 ftp ftp 6 Jan 01 00:00 a.txt\r\n-rw-r--r-- 1 ftp ftp 5 Jan 01 00:00 b.txt\r\n"
	if got := string(c.download(p)); got != want {
		t.Errorf("LIST = %q, want %q", got, want)
	}
	p = c.negotiate("EPRT")
	c.send("NLST")
	if got, want := string(c.download(p)), "a.txt\r\nb.txt\r\n"; got != want {
		t.Errorf("NLST = %q, want %q", got, want)
	}
	c.quit()
	h.sessionsEnded()
}

func TestRestRetr(t *testing.T) {
	for _, verb := range []string{"PASV", "PORT"} {
		t.Run(verb, func(t *testing.T) {
			h := newHarness(t)
			file := randomBytes(7, fileSize)
			h.fake.SetFile("f", file)
			c := h.dial()
			c.login()
			const offset = 100000
			p := c.negotiate(verb)
			c.cmd(fmt.Sprintf("REST %d", offset), 350)
			c.send("RETR f")
			sameContent(t, "RETR after REST", c.download(p), file[offset:])
			c.quit()
			h.sessionsEnded()
		})
	}
}

// TestServerAdvertisesOtherAddress: a 227 naming another address than the
// server's control address is not followed (docs/security.md).
func TestServerAdvertisesOtherAddress(t *testing.T) {
	for _, tt := range []struct {
		client string
		mode   ServerMode
	}{{"PASV", SameMode}, {"PORT", PassiveMode}} {
		t.Run(tt.client+"/"+tt.mode.String(), func(t *testing.T) {
			h := newHarness(t, withMode(tt.mode))
			h.fake.Script(func(s *fakeScript) {
				s.PassiveReply = func(verb string, ap netip.AddrPort) string {
					if verb != "PASV" {
						return ""
					}
					return nat.Format227(netip.AddrPortFrom(netip.MustParseAddr("10.1.2.3"), ap.Port()))
				}
			})
			file := randomBytes(3, fileSize)
			h.fake.SetFile("f", file)
			c := h.dial()
			c.login()
			sameContent(t, "RETR", c.retr(tt.client, "f"), file)
			c.quit()
			h.sessionsEnded()
			if d := h.fake.DataConns(); len(d) != 1 || d[0].Verb != "PASV" || d[0].Remote.Addr() != loopback {
				t.Errorf("server data connections %+v, want one from 127.0.0.1 after PASV", d)
			}
			h.waitLog("server advertised another address", "advertised=10.1.2.3:")
		})
	}
}

// TestClientBehindNAT: a PORT naming a private address is served at the
// client's control address (docs/security.md).
func TestClientBehindNAT(t *testing.T) {
	for _, verb := range []string{"PORT", "EPRT"} {
		t.Run(verb, func(t *testing.T) {
			h := newHarness(t)
			file := randomBytes(4, 4096)
			h.fake.SetFile("f", file)
			c := h.dial()
			c.login()
			p := c.negotiateAdvertising(verb, netip.MustParseAddr("192.168.1.2"))
			c.send("RETR f")
			sameContent(t, "RETR", c.download(p), file)
			c.quit()
			h.sessionsEnded()
			h.waitLog("client advertised a private address", "advertised=192.168.1.2:")
		})
	}
}

// TestRefusedCommands: commands ftpgate answers itself never reach the
// server, and get the right reply.
func TestRefusedCommands(t *testing.T) {
	tests := []struct {
		name, line string
		code       int
		text       string // the reply's text, if checked
		log        string // a word of the warning logged, if any
	}{
		{"PORT bounce", "PORT 8,8,8,8,78,32", 501, "Illegal address: data connections go to your own address only.", "reason=bounce"},
		{"EPRT bounce", "EPRT |1|8.8.8.8|20000|", 501, "", "reason=bounce"},
		{"EPRT bounce IPv6", "EPRT |2|2001:db8::1|20000|", 501, "", "reason=bounce"},
		{"PORT low port", "PORT 127,0,0,1,0,21", 504, "Command not implemented for that parameter: port below 1024.", "reason=low_port"},
		{"EPRT low port", "EPRT |1|127.0.0.1|1023|", 504, "", "reason=low_port"},
		{"EPRT family", "EPRT |3|127.0.0.1|20000|", 522, "Network protocol not supported, use (1,2).", "reason=family"},
		{"PORT short", "PORT 127,0,0,1,78", 501, "Syntax error in parameters or arguments.", "reason=syntax"},
		{"PORT octet", "PORT 127,0,0,256,78,32", 501, "", "reason=syntax"},
		{"PORT empty", "PORT", 501, "", "reason=syntax"},
		{"PORT port 0", "PORT 127,0,0,1,0,0", 501, "", "reason=syntax"},
		{"EPRT unterminated", "EPRT |1|127.0.0.1|20000", 501, "", "reason=syntax"},
		{"LPSV", "LPSV", 502, "Command not implemented, use EPRT or EPSV.", "reason=unsupported"},
		{"LPRT", "LPRT 4,4,127,0,0,1,2,78,32", 502, "", "reason=unsupported"},
		{"RETR without PASV", "RETR f", 425, "Use PORT or PASV first.", ""},
		{"STOR without PASV", "STOR f", 425, "", ""},
		{"LIST without PASV", "LIST", 425, "", ""},
		{"lower case", "retr f", 425, "", ""},
		{"EPSV IPv6", "EPSV 2", 522, "Network protocol not supported, use (1).", ""},
		{"EPSV ALL", "EPSV ALL", 200, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.fake.SetFile("f", []byte("data"))
			c := h.dial()
			c.login()
			got := c.cmd(tt.line, tt.code)
			if want := fmt.Sprintf("%d %s\r\n", tt.code, tt.text); tt.text != "" && got != want {
				t.Errorf("reply %q, want %q", got, want)
			}
			c.cmd("NOOP", 200)
			c.quit()
			h.sessionsEnded()
			if got, want := h.verbs(), []string{"USER", "PASS", "NOOP", "QUIT"}; !slices.Equal(got, want) {
				t.Errorf("server received %q, want %q", got, want)
			}
			if tt.log != "" {
				h.waitLog("command refused", tt.log)
			}
		})
	}
}

func TestLineTooLong(t *testing.T) {
	t.Run("1MiB without newline", func(t *testing.T) {
		h := newHarness(t)
		c := h.dial()
		c.login()
		done := make(chan error, 1)
		go func() {
			// The proxy stops reading, so this write fails or stalls.
			c.c.SetWriteDeadline(time.Now().Add(ioTimeout))
			_, err := c.c.Write(bytes.Repeat([]byte("A"), 1<<20))
			done <- err
		}()
		if got := c.expect(500); got != "500 Line too long.\r\n" {
			t.Errorf("reply %q", got)
		}
		c.expectClosed()
		<-done // 1 MiB may fit in the socket buffers: no verdict on the write
		h.sessionsEnded()
		if got, want := h.verbs(), []string{"USER", "PASS"}; !slices.Equal(got, want) {
			t.Errorf("server received %q, want %q", got, want)
		}
		h.waitLog("command refused", "reason=line_too_long")
	})
	// The limit counts the terminator: a line of exactly MaxLineBytes passes.
	t.Run("limit", func(t *testing.T) {
		h := newHarness(t, func(s *Server) { s.MaxLineBytes = 100 })
		c := h.dial()
		c.login()
		ok := "SITE " + strings.Repeat("x", 100-len("SITE \r\n"))
		c.cmd(ok, 500) // the fake server does not know SITE
		c.send(ok + "y")
		if got := c.expect(500); got != "500 Line too long.\r\n" {
			t.Errorf("reply %q", got)
		}
		c.expectClosed()
		h.sessionsEnded()
		if l := h.fake.Lines(); len(l) != 3 || l[2] != ok+"\r\n" {
			t.Errorf("server received %q, want USER, PASS and %q", l, ok)
		}
	})
}

// TestBadPassiveReply: a reply to PASV or EPSV that ftpgate cannot use gets
// the client a 425, or the server's own refusal, and the session goes on.
func TestBadPassiveReply(t *testing.T) {
	tests := []struct {
		name, verb, reply string
		code              int
	}{
		{"garbage 227", "PASV", "227 Entering Passive Mode (garbage).", 425},
		{"227 port 0", "PASV", "227 Entering Passive Mode (127,0,0,1,0,0).", 425},
		{"garbage 229", "EPSV", "229 Entering Extended Passive Mode (|||x|)", 425},
		{"EPSV refused", "EPSV", "500 EPSV not understood.", 500},
		{"PASV refused", "PASV", "421 Too busy.", 421},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.fake.Script(func(s *fakeScript) {
				s.PassiveReply = func(string, netip.AddrPort) string { return tt.reply }
			})
			file := randomBytes(5, 4096)
			h.fake.SetFile("f", file)
			c := h.dial()
			c.login()
			got := c.cmd(tt.verb, tt.code)
			if tt.code != 425 && got != tt.reply+"\r\n" {
				t.Errorf("reply %q, want the server's %q", got, tt.reply)
			}
			c.cmd("NOOP", 200)
			c.cmd("RETR f", 425) // nothing was negotiated
			if !h.portsFree() {
				t.Errorf("ports in use after a failed negotiation: %d, %d", h.srv.ClientPorts.InUse(), h.srv.ServerPorts.InUse())
			}
			h.fake.Script(func(s *fakeScript) { s.PassiveReply = nil })
			sameContent(t, "RETR", c.retr(tt.verb, "f"), file)
			c.quit()
			h.sessionsEnded()
		})
	}
}

// TestPortTheft: a data connection from another address than the expected
// peer is reset, and the real one still works (docs/security.md).
func TestPortTheft(t *testing.T) {
	thief := func(t *testing.T, to netip.AddrPort) {
		t.Helper()
		d := net.Dialer{Timeout: ioTimeout, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		c, err := d.Dial("tcp", to.String())
		if errors.Is(err, syscall.ECONNRESET) {
			return // reset before the dial returned
		}
		if err != nil {
			t.Fatalf("thief dialing %v: %v", to, err)
		}
		defer c.Close()
		b, err := readAll(c)
		if len(b) != 0 || !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("thief read %d bytes, %v; want a reset", len(b), err)
		}
	}
	t.Run("client side", func(t *testing.T) {
		h := newHarness(t)
		file := randomBytes(6, fileSize)
		h.fake.SetFile("f", file)
		c := h.dial()
		c.login()
		p := c.negotiate("PASV")
		thief(t, p.addr)
		h.waitLog("data connection refused", "reason=theft", "side=client", "from=127.0.0.2:")
		c.send("RETR f")
		sameContent(t, "RETR", c.download(p), file)
		c.quit()
		h.sessionsEnded()
	})
	// However many strangers come first, the link waits for its peer:
	// before, it gave up after 16, so strangers could cancel transfers.
	t.Run("many strangers", func(t *testing.T) {
		h := newHarness(t)
		file := randomBytes(16, 4096)
		h.fake.SetFile("f", file)
		c := h.dial()
		c.login()
		p := c.negotiate("PASV")
		for range 40 {
			thief(t, p.addr)
		}
		c.send("RETR f")
		sameContent(t, "RETR", c.download(p), file)
		c.quit()
		h.sessionsEnded()
		if n := strings.Count(h.logs.String(), "reason=theft"); n != 40 {
			t.Errorf("%d strangers refused and logged, want 40", n)
		}
	})
	t.Run("server side", func(t *testing.T) {
		h := newHarness(t, withMode(ActiveMode))
		file := randomBytes(6, fileSize)
		h.fake.SetFile("f", file)
		c := h.dial()
		c.login()
		p := c.negotiate("PASV")
		cmds := negotiationVerbs(h)
		if len(cmds) != 1 || cmds[0].Verb != "PORT" {
			t.Fatalf("server received %v, want a PORT", cmds)
		}
		ap, err := nat.ParsePORT(cmds[0].Arg)
		if err != nil {
			t.Fatal(err)
		}
		thief(t, ap)
		h.waitLog("data connection refused", "reason=theft", "side=server", "from=127.0.0.2:")
		c.send("RETR f")
		sameContent(t, "RETR", c.download(p), file)
		c.quit()
		h.sessionsEnded()
	})
}

// TestPeerVanishes: when either side disappears mid-transfer, the session
// ends and releases everything, and another session is not disturbed.
func TestPeerVanishes(t *testing.T) {
	for _, who := range []string{"client", "server"} {
		t.Run(who, func(t *testing.T) {
			h := newHarness(t)
			h.fake.Script(func(s *fakeScript) { s.Throttle = 20 * time.Millisecond })
			file := randomBytes(8, fileSize)
			h.fake.SetFile("f", file)

			// The bystander's transfer runs, throttled, while the
			// other session dies.
			other := h.dial()
			other.login()
			otherPlan := other.negotiate("EPSV")
			other.send("RETR f")
			otherData := otherPlan.open()

			c := h.dial()
			c.login()
			name := endlessFile
			if who == "server" {
				name = vanishFile
			}
			p := c.negotiate("PASV")
			c.send("RETR " + name)
			dc, err := p.tryOpen()
			if who == "server" && errors.Is(err, syscall.ECONNRESET) {
				// The server's reset can reach this end before
				// connect() returns: ftpgate passed it on at once.
				c.expect(150)
				c.expectClosed() // no 226
				c.c.Close()
				h.sessionsActive(1)
				finishOther(t, other, otherData, file)
				h.sessionsEnded()
				return
			}
			if err != nil {
				t.Fatalf("opening the data connection for PASV: %v", err)
			}
			defer dc.Close()
			c.expect(150)
			if who == "client" {
				buf := make([]byte, 100<<10)
				dc.SetReadDeadline(time.Now().Add(ioTimeout))
				if _, err := io.ReadFull(dc, buf); err != nil {
					t.Fatalf("reading the first bytes: %v", err)
				}
				dc.Close()
				c.c.Close()
			} else {
				b, _ := readAll(dc)
				if len(b) > vanishAfter || !bytes.Equal(b, make([]byte, len(b))) {
					t.Errorf("got %d bytes from a server that vanished after %d", len(b), vanishAfter)
				}
				c.expectClosed() // no 226
				c.c.Close()
			}
			h.sessionsActive(1)
			finishOther(t, other, otherData, file)
			h.sessionsEnded()
		})
	}
}

// finishOther checks that the bystander's transfer in TestPeerVanishes
// completed whole, then ends its session.
func finishOther(t *testing.T, other *ftpClient, data *net.TCPConn, file []byte) {
	t.Helper()
	b, err := readAll(data)
	if err != nil {
		t.Fatalf("other session's data: %v", err)
	}
	sameContent(t, "other session's RETR", b, file)
	other.expect(150)
	other.expect(226)
	other.cmd("NOOP", 200)
	other.quit()
}

// TestNegotiationReplaced: a second PASV/PORT replaces the first, whose
// listener closes and whose port goes back to the pool.
func TestNegotiationReplaced(t *testing.T) {
	tests := []struct {
		first, second string
	}{
		{"PASV", "PASV"},
		{"EPSV", "PASV"},
		{"PASV", "EPRT"},
		{"PORT", "PASV"},
		{"PORT", "PORT"},
	}
	for _, tt := range tests {
		t.Run(tt.first+"/"+tt.second, func(t *testing.T) {
			h := newHarness(t)
			file := randomBytes(9, fileSize)
			h.fake.SetFile("f", file)
			c := h.dial()
			c.login()
			first := c.negotiate(tt.first)
			used := func() int { return h.srv.ClientPorts.InUse() + h.srv.ServerPorts.InUse() }
			if got := used(); got != 1 {
				t.Errorf("%d ports in use after %s, want 1", got, tt.first)
			}
			second := c.negotiate(tt.second)
			if !eventually(2*time.Second, func() bool { return used() <= 1 }) {
				t.Errorf("%d ports in use after %s replaced %s, want at most 1", used(), tt.second, tt.first)
			}
			if first.ln == nil && !dialRefused(first.addr) {
				t.Errorf("the replaced data port %v still accepts connections", first.addr)
			}
			c.send("RETR f")
			sameContent(t, "RETR", c.download(second), file)
			if first.ln != nil {
				// ftpgate dials a PORT as soon as the server agrees; the
				// replaced one must carry no data.
				first.ln.SetDeadline(time.Now().Add(100 * time.Millisecond))
				if conn, err := first.ln.Accept(); err == nil {
					b, _ := readAll(conn)
					conn.Close()
					if len(b) > 0 {
						t.Errorf("the replaced PORT %v got %d bytes", first.addr, len(b))
					}
				}
			}
			c.quit()
			h.sessionsEnded()
			h.waitLog("data connection unused", "replaced by a newer PASV/PORT")
		})
	}
}

// TestDataTimeout: a data connection the client never makes is given up
// after DataTimeout; the server's transfer fails and its reply reaches the
// client.
func TestDataTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	for _, mode := range []ServerMode{SameMode, ActiveMode} {
		t.Run("RETR/"+mode.String(), func(t *testing.T) {
			h := newHarness(t, withMode(mode), func(s *Server) { s.DataTimeout = timeout })
			c := h.dial()
			c.login()
			p := c.negotiate("PASV")
			start := time.Now()
			c.send("RETR " + endlessFile)
			c.expect(150)
			// ftpgate resets the server's data connection; the
			// server's write fails and it says so.
			c.expect(426)
			if d := time.Since(start); d < timeout-50*time.Millisecond || d > 3*time.Second {
				t.Errorf("426 after %v, want about %v", d, timeout)
			}
			if !eventually(time.Second, h.portsFree) {
				t.Errorf("ports in use after the data timeout: %d, %d", h.srv.ClientPorts.InUse(), h.srv.ServerPorts.InUse())
			}
			if !dialRefused(p.addr) {
				t.Errorf("data port %v still accepts connections after the timeout", p.addr)
			}
			h.waitLog("data connection failed", "command=\"RETR endless\"", "data connection not established in time")
			c.cmd("NOOP", 200)
			c.quit()
			h.sessionsEnded()
		})
	}
	t.Run("unused", func(t *testing.T) {
		h := newHarness(t, func(s *Server) { s.DataTimeout = timeout })
		h.fake.SetFile("f", []byte("data"))
		c := h.dial()
		c.login()
		p := c.negotiate("PASV")
		if !eventually(2*time.Second, h.portsFree) {
			t.Fatalf("ports in use %v after the data timeout", h.srv.ClientPorts.InUse())
		}
		if !dialRefused(p.addr) {
			t.Errorf("data port %v still accepts connections after the timeout", p.addr)
		}
		c.cmd("RETR f", 425)
		c.quit()
		h.sessionsEnded()
		if got, want := h.verbs(), []string{"USER", "PASS", "PASV", "QUIT"}; !slices.Equal(got, want) {
			t.Errorf("server received %q, want %q", got, want)
		}
	})
}

// TestSlowTransfer: DataTimeout bounds establishing a data connection, not
// the transfer: a transfer may take longer once both ends are connected,
// whether they connected before or after the transfer command.
//
// Where both ends connect before the command (the server end is dialled
// at the 227, and the client connects at once, as curl and ftplib do),
// dataLink.useLocked re-arms the establishment timer that run had already
// stopped, and the transfer is cut DataTimeout after the command. The
// early=false case hits the same race when the client's connection wins
// against the command on its way through ftpgate.
func TestSlowTransfer(t *testing.T) {
	const timeout = 300 * time.Millisecond
	tests := []struct {
		client string
		mode   ServerMode
		early  bool // connect the client's data connection before RETR
	}{
		{"PASV", SameMode, true},
		{"PASV", SameMode, false},
		{"EPSV", PassiveMode, true},
		// ftpgate dials a PORT client only after the transfer command
		// (TestActiveDialAfterCommand): never early.
		{"PORT", PassiveMode, false},
		{"PORT", SameMode, false},
		{"PASV", ActiveMode, true},
	}
	for _, tt := range tests {
		name := fmt.Sprintf("%s/%s/early=%v", tt.client, tt.mode, tt.early)
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, withMode(tt.mode), func(s *Server) { s.DataTimeout = timeout })
			// 16 chunks, 60ms apart: about 900ms, three data timeouts.
			h.fake.Script(func(s *fakeScript) { s.Throttle = 60 * time.Millisecond })
			file := randomBytes(10, fileSize)
			h.fake.SetFile("f", file)
			c := h.dial()
			c.login()
			p := c.negotiate(tt.client)
			var dc *net.TCPConn
			if tt.early {
				dc = p.open()
				serverEarly := tt.mode == PassiveMode || (tt.mode == SameMode && p.ln == nil)
				if serverEarly {
					// Both ends are connected before the
					// transfer command: wait until ftpgate has them.
					if !eventually(2*time.Second, func() bool { return len(h.fake.DataConns()) == 1 && h.srv.ClientPorts.InUse() == 0 }) {
						t.Fatalf("data connection not established before RETR")
					}
					time.Sleep(50 * time.Millisecond) // for run to stop its timer
				}
			}
			c.send("RETR f")
			if dc == nil {
				dc = p.open()
			}
			start := time.Now()
			b, err := readAll(dc)
			if err != nil {
				t.Errorf("after %v and %d bytes: %v", time.Since(start), len(b), err)
			}
			sameContent(t, "RETR", b, file)
			c.expect(150)
			c.expect(226)
			c.quit()
			h.sessionsEnded()
		})
	}
}

func TestLimits(t *testing.T) {
	refused := func(t *testing.T, h *harness, local string) {
		t.Helper()
		c := h.dialFrom(local)
		if got := c.expect(421); got != "421 Too many connections, try again later.\r\n" {
			t.Errorf("reply %q", got)
		}
		c.expectClosed()
	}
	t.Run("MaxSessions", func(t *testing.T) {
		h := newHarness(t, func(s *Server) { s.Limiter = NewSessionLimiter(1, 0) })
		c := h.dial()
		c.login()
		refused(t, h, "")
		refused(t, h, "127.0.0.2:0")
		c.cmd("NOOP", 200)
		c.quit()
		h.sessionsEnded()
		c = h.dial()
		c.login()
		c.quit()
		h.sessionsEnded()
		if n := h.fake.Sessions(); n != 2 {
			t.Errorf("server saw %d sessions, want 2", n)
		}
		h.waitLog("session refused", "reason=limit", "session limit reached")
	})
	t.Run("per client", func(t *testing.T) {
		h := newHarness(t, func(s *Server) { s.Limiter = NewSessionLimiter(0, 1) })
		c := h.dial()
		c.login()
		refused(t, h, "127.0.0.1:0")
		other := h.dialFrom("127.0.0.2:0")
		other.login()
		other.quit()
		c.quit()
		h.sessionsEnded()
		if n := h.fake.Sessions(); n != 2 {
			t.Errorf("server saw %d sessions, want 2", n)
		}
		h.waitLog("session refused", "per-client session limit reached")
	})
	// One data port per pool waits for its connection at a time: one per
	// direction is what clients use. Before, a session could hold 4, and
	// 64 sessions per client.
	t.Run("armed data ports", func(t *testing.T) {
		const timeout = 4 * time.Second
		h := newHarness(t, func(s *Server) { s.DataTimeout = timeout })
		h.fake.SetFile("f", []byte("small"))
		c := h.dial()
		c.login()
		// The RETR uses the link, and the server sends its few bytes, but
		// the client never connects: the port stays armed until the data
		// timeout, and the client gets 426, not the server's 226 (the data
		// never reached it).
		c.negotiate("PASV")
		c.send("RETR f")
		c.expect(150)
		c.send("PASV")
		c.expect(426)
		c.expect(425)
		h.waitLog("data connection refused", "reason=limit")
		if !eventually(timeout+3*time.Second, h.portsFree) {
			t.Fatalf("ports in use after the data timeout")
		}
		c.negotiate("PASV")
		c.quit()
		h.sessionsEnded()
	})
}

func TestIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	t.Run("idle", func(t *testing.T) {
		h := newHarness(t, func(s *Server) { s.IdleTimeout = idle })
		c := h.dial()
		c.login()
		start := time.Now()
		if got := c.expect(421); got != "421 Idle timeout, closing control connection.\r\n" {
			t.Errorf("reply %q", got)
		}
		if d := time.Since(start); d < idle-50*time.Millisecond {
			t.Errorf("421 after %v, want %v", d, idle)
		}
		c.expectClosed()
		h.sessionsEnded()
	})
	// The control channel is quiet during a transfer; that is not idle.
	t.Run("transfer", func(t *testing.T) {
		h := newHarness(t, func(s *Server) { s.IdleTimeout = idle })
		h.fake.Script(func(s *fakeScript) { s.Throttle = 60 * time.Millisecond })
		file := randomBytes(11, fileSize)
		h.fake.SetFile("f", file)
		c := h.dial()
		c.login()
		// retr fails on a 421 in place of the 150 or 226.
		sameContent(t, "RETR", c.retr("PORT", "f"), file)
		// A QUIT now could race the next idle deadline (see
		// TestIdleAfterTransfer): close instead.
		c.c.Close()
		h.sessionsEnded()
	})
}

func TestQuit(t *testing.T) {
	for _, halfClose := range []bool{false, true} {
		t.Run(fmt.Sprintf("halfClose=%v", halfClose), func(t *testing.T) {
			h := newHarness(t)
			c := h.dial()
			c.login()
			c.send("QUIT")
			if halfClose {
				// QUIT then close: the 221 still arrives.
				if err := c.c.CloseWrite(); err != nil {
					t.Fatal(err)
				}
			}
			if got := c.expect(221); got != "221 Goodbye.\r\n" {
				t.Errorf("reply %q", got)
			}
			c.expectClosed() // the proxy half-closes once the server has closed
			c.c.Close()
			h.sessionsEnded()
			if got, want := h.verbs(), []string{"USER", "PASS", "QUIT"}; !slices.Equal(got, want) {
				t.Errorf("server received %q, want %q", got, want)
			}
		})
	}
}

// TestPipelined: commands sent together are answered in order, whether
// the server or ftpgate answers them.
func TestPipelined(t *testing.T) {
	for _, verb := range []string{"PASV", "EPSV", "PORT"} {
		t.Run(verb, func(t *testing.T) {
			h := newHarness(t)
			file := randomBytes(12, fileSize)
			h.fake.SetFile("f", file)
			c := h.dial()
			c.login()
			p := &dataPlan{verb: verb, t: t}
			neg := verb
			if verb == "PORT" {
				ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: loopback.AsSlice()})
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				p.ln, p.addr = ln, addrPortOf(ln.Addr())
				neg = "PORT " + nat.FormatPORT(p.addr)
			}
			c.write([]byte("TYPE I\r\n" + neg + "\r\nRETR f\r\nNOOP\r\n"))
			c.expect(200)
			switch verb {
			case "PASV":
				ap, err := nat.Parse227(c.expect(227))
				if err != nil {
					t.Fatal(err)
				}
				p.addr = ap
			case "EPSV":
				port, err := nat.Parse229(c.expect(229))
				if err != nil {
					t.Fatal(err)
				}
				p.addr = netip.AddrPortFrom(loopback, port)
			case "PORT":
				c.expect(200)
			}
			sameContent(t, "RETR", c.download(p), file)
			c.expect(200)
			c.quit()
			h.sessionsEnded()
		})
	}
	t.Run("local replies", func(t *testing.T) {
		h := newHarness(t)
		c := h.dial()
		c.login()
		c.write([]byte("NOOP\r\nLPSV\r\nSYST\r\nRETR x\r\nPORT 8,8,8,8,78,32\r\nHELP\r\nEPSV ALL\r\nNOOP\r\n"))
		for _, code := range []int{200, 502, 215, 425, 501, 214, 200, 200} {
			c.expect(code)
		}
		c.quit()
		h.sessionsEnded()
	})
}

// TestTransparency: lines ftpgate does not rewrite pass byte for byte, in
// both directions.
func TestTransparency(t *testing.T) {
	t.Run("multi-line replies", func(t *testing.T) {
		h := newHarness(t)
		c := h.dial()
		if got := c.expect(220); got != fakeGreeting {
			t.Errorf("greeting %q, want %q", got, fakeGreeting)
		}
		if got := c.cmd("HELP", 214); got != fakeHelp {
			t.Errorf("HELP reply %q, want %q", got, fakeHelp)
		}
		c.quit()
		h.sessionsEnded()
	})
	const abor = "\xff\xf4\xff\xf2ABOR\r\n"
	t.Run("Telnet IAC", func(t *testing.T) {
		h := newHarness(t)
		c := h.dial()
		c.login()
		c.write([]byte(abor + "noop \t x\n"))
		c.expect(225)
		c.expect(200)
		c.quit()
		h.sessionsEnded()
		// The command as parsed, in RFC 959's spelling: upper-case verb,
		// CRLF, the argument byte for byte.
		if l := h.fake.Lines(); len(l) < 4 || l[2] != abor || l[3] != "NOOP \t x\r\n" {
			t.Errorf("server received %q, want %q then %q", l, abor, "NOOP \t x\r\n")
		}
	})
	// RFC 959 section 4.1.3: the DM is sent as TCP urgent data.
	t.Run("Telnet DM as urgent data", func(t *testing.T) {
		h := newHarness(t)
		c := h.dial()
		c.login()
		c.write([]byte("\xff\xf4\xff"))
		raw, err := c.c.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var serr error
		if err := raw.Write(func(fd uintptr) bool {
			serr = syscall.Sendto(int(fd), []byte{0xf2}, syscall.MSG_OOB, nil)
			return true
		}); err != nil || serr != nil {
			t.Fatalf("sending urgent data: %v, %v", err, serr)
		}
		c.write([]byte("ABOR\r\n"))
		c.expect(225)
		c.quit()
		h.sessionsEnded()
		if l := h.fake.Lines(); len(l) < 3 || l[2] != abor {
			t.Errorf("server received %q, want %q", l, abor)
		}
	})
}

func TestShutdown(t *testing.T) {
	h := newHarness(t)
	c := h.dial()
	c.login()
	busy := h.dial()
	busy.login()
	p := busy.negotiate("PASV")
	busy.send("RETR " + endlessFile)
	dc := p.open()
	busy.expect(150)
	h.sessionsActive(2)

	if err := h.shutdown(); !errors.Is(err, ErrShutdown) {
		t.Errorf("Serve returned %v, want %v", err, ErrShutdown)
	}
	if got := c.expect(421); got != "421 Service closing control connection, ftpgate is shutting down.\r\n" {
		t.Errorf("reply %q", got)
	}
	c.expectClosed()
	// The busy session ends too, its transfer cut.
	if _, err := readAll(dc); err == nil {
		t.Errorf("endless transfer ended cleanly at shutdown")
	}
	for {
		_, _, err := busy.reply()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("busy session: %v, want it closed", err)
			}
			break
		}
	}
	if h.srv.Limiter.Active() != 0 {
		t.Errorf("%d sessions active after Serve returned", h.srv.Limiter.Active())
	}
	if _, err := net.DialTimeout("tcp", h.addr, time.Second); err == nil {
		t.Errorf("the listener still accepts after Serve returned")
	}
}

func TestUpstreamUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	h := newHarness(t, func(s *Server) { s.Upstream = closed })
	c := h.dial()
	if got := c.expect(421); got != "421 Service not available, the FTP server cannot be reached.\r\n" {
		t.Errorf("reply %q", got)
	}
	c.expectClosed()
	h.sessionsEnded()
}

// TestDial: Server.Dial, when set, is how ftpgate reaches the server.
func TestDial(t *testing.T) {
	var (
		mu       sync.Mutex
		calls    []string
		upstream string
	)
	h := newHarness(t, func(s *Server) {
		s.Upstream = "ftp.example:21"
		s.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			calls = append(calls, network+" "+addr)
			to := upstream
			mu.Unlock()
			var d net.Dialer
			return d.DialContext(ctx, network, to)
		}
	})
	mu.Lock()
	upstream = h.fake.Addr()
	mu.Unlock()
	c := h.dial()
	c.login()
	c.quit()
	h.sessionsEnded()
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"tcp ftp.example:21"}; !slices.Equal(calls, want) {
		t.Errorf("Dial calls %q, want %q", calls, want)
	}
}

func TestServeNeedsPools(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var s Server
	if err := s.Serve(context.Background(), ln); err == nil {
		t.Errorf("Serve without port pools returned nil")
	}
}

// TestAdvertisedAddresses: ClientAddress is written in 227 replies and
// ServerAddress in PORT commands; listeners still bind the addresses the
// connections use. 198.18.0.0/15 is only written, never dialled.
func TestAdvertisedAddresses(t *testing.T) {
	clientAddr, serverAddr := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	h := newHarness(t, withMode(ActiveMode), func(s *Server) {
		s.ClientAddress, s.ServerAddress = clientAddr, serverAddr
	})
	file := randomBytes(13, 4096)
	h.fake.SetFile("f", file)
	c := h.dial()
	c.login()
	reply := c.cmd("PASV", 227)
	ap, err := nat.Parse227(reply)
	if err != nil || ap.Addr() != clientAddr || !h.srv.ClientPorts.Range().Contains(ap.Port()) {
		t.Fatalf("reply %q (%v), want %v and a port in %v", reply, err, clientAddr, h.srv.ClientPorts.Range())
	}
	cmds := negotiationVerbs(h)
	if len(cmds) != 1 || cmds[0].Verb != "PORT" {
		t.Fatalf("server received %v, want one PORT", cmds)
	}
	if got, err := nat.ParsePORT(cmds[0].Arg); err != nil || got.Addr() != serverAddr || !h.srv.ServerPorts.Range().Contains(got.Port()) {
		t.Errorf("server received PORT %q, want %v and a port in %v", cmds[0].Arg, serverAddr, h.srv.ServerPorts.Range())
	}
	// The client's listener is on 127.0.0.1 all the same.
	dc, err := net.DialTimeout("tcp", netip.AddrPortFrom(loopback, ap.Port()).String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	dc.Close()
	c.quit()
	h.sessionsEnded()
}

// TestIdleAfterTransfer: the idle clock starts again when a transfer ends
// (IdleTimeout: "sends nothing for this long while no transfer runs").
// readCommands re-arms its deadline when it passes during a transfer, and
// does not restart it when the transfer ends, so the session can be closed
// as idle right after a transfer.
func TestIdleAfterTransfer(t *testing.T) {
	const idle = 800 * time.Millisecond
	h := newHarness(t, func(s *Server) { s.IdleTimeout = idle })
	c := h.dial()
	c.login()
	p := c.negotiate("PORT")
	start := time.Now()
	c.send("STOR up")
	dc := p.open()
	c.expect(150)
	dc.Write([]byte("partial"))
	// The transfer outlives the first idle deadline and ends 3/4 of the
	// way to the second.
	time.Sleep(time.Until(start.Add(idle * 7 / 4)))
	dc.Close()
	c.expect(226)
	// Idle for half the timeout after the transfer: the session lives.
	time.Sleep(idle / 2)
	c.cmd("NOOP", 200)
	c.quit()
	h.sessionsEnded()
}

// TestBadServerReply: a server that does not speak FTP ends the session
// with a 421 to the client.
func TestBadServerReply(t *testing.T) {
	tests := []struct {
		name  string
		reply func(ap netip.AddrPort) string
	}{
		{"not a reply", func(netip.AddrPort) string { return "hello" }},
		{"line too long", func(netip.AddrPort) string { return "227 " + strings.Repeat("9", DefaultMaxLineBytes) }},
		{"held reply too long", func(ap netip.AddrPort) string {
			return strings.Repeat("227-"+strings.Repeat("x", 60)+"\r\n", 4*DefaultMaxLineBytes/60) + nat.Format227(ap)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.fake.Script(func(s *fakeScript) {
				s.PassiveReply = func(_ string, ap netip.AddrPort) string { return tt.reply(ap) }
			})
			c := h.dial()
			c.login()
			if got := c.cmd("PASV", 421); got != "421 Service not available, bad reply from the FTP server.\r\n" {
				t.Errorf("reply %q", got)
			}
			c.expectClosed()
			h.sessionsEnded()
		})
	}
}

// TestServerPassiveDialects: the forms of 227 and 229 seen in the wild are
// understood, and the client always gets the canonical form.
func TestServerPassiveDialects(t *testing.T) {
	p1p2 := func(ap netip.AddrPort) string { return fmt.Sprintf("%d,%d", ap.Port()>>8, ap.Port()&0xff) }
	tests := []struct {
		name, verb string
		reply      func(ap netip.AddrPort) string
	}{
		{"227 without parentheses", "PASV", func(ap netip.AddrPort) string { return "227 =127,0,0,1," + p1p2(ap) }},
		{"227 with spaces", "PASV", func(ap netip.AddrPort) string { return "227 Entering Passive Mode (127, 0, 0, 1, " + p1p2(ap) + ")" }},
		{"227 multi-line", "PASV", func(ap netip.AddrPort) string {
			return "227-Entering Passive Mode\r\n227-for 2 minutes\r\n" + nat.Format227(ap)
		}},
		{"229 other delimiter", "EPSV", func(ap netip.AddrPort) string {
			return fmt.Sprintf("229 Entering Extended Passive Mode (!!!%d!)", ap.Port())
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.fake.Script(func(s *fakeScript) {
				s.PassiveReply = func(_ string, ap netip.AddrPort) string { return tt.reply(ap) }
			})
			file := randomBytes(14, 4096)
			h.fake.SetFile("f", file)
			c := h.dial()
			c.login()
			p := c.negotiate(tt.verb)
			want := nat.Format227(p.addr) + "\r\n"
			if tt.verb == "EPSV" {
				want = nat.Format229(p.addr.Port()) + "\r\n"
			}
			if p.reply != want {
				t.Errorf("client got %q, want %q", p.reply, want)
			}
			c.send("RETR f")
			sameContent(t, "RETR", c.download(p), file)
			c.quit()
			h.sessionsEnded()
		})
	}
}

// TestReplaceWithOnePort: a PASV or PORT that replaces an unused one needs
// no spare port: the replaced one is given up first, as the server gives
// up its own. A pool of one port then serves a client that negotiates
// twice. (ftpgate takes the new port before the old link, in its own
// goroutine, gives the old one back: the pool needs a spare per session.)
func TestReplaceWithOnePort(t *testing.T) {
	tests := []struct {
		name  string
		mode  ServerMode
		verbs []string
	}{
		{"client side", SameMode, []string{"PASV", "PASV"}},
		{"client side EPSV", PassiveMode, []string{"EPSV", "EPSV"}},
		{"server side", ActiveMode, []string{"PORT", "PORT"}},
		{"both sides", ActiveMode, []string{"PASV", "EPSV"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, withMode(tt.mode), func(s *Server) {
				one := func(p *nat.PortPool) *nat.PortPool {
					r := p.Range()
					return nat.NewPortPool(nat.PortRange{First: r.First, Last: r.First})
				}
				s.ClientPorts, s.ServerPorts = one(s.ClientPorts), one(s.ServerPorts)
			})
			file := randomBytes(15, 4096)
			h.fake.SetFile("f", file)
			c := h.dial()
			c.login()
			var p *dataPlan
			for _, verb := range tt.verbs {
				p = c.negotiate(verb)
			}
			c.send("RETR f")
			sameContent(t, "RETR", c.download(p), file)
			c.quit()
			h.sessionsEnded()
		})
	}
}

// TestActiveDialAfterCommand: ftpgate connects to a client's PORT address
// only once a transfer command has used the negotiation and the server's
// connection is there, never for a PORT that no transfer follows.
func TestActiveDialAfterCommand(t *testing.T) {
	for _, mode := range []ServerMode{SameMode, PassiveMode} {
		t.Run(mode.String(), func(t *testing.T) {
			h := newHarness(t, withMode(mode))
			file := randomBytes(12, 4096)
			h.fake.SetFile("f", file)
			c := h.dial()
			c.login()
			p := c.negotiate("PORT")
			p.ln.SetDeadline(time.Now().Add(500 * time.Millisecond))
			if dc, err := p.ln.AcceptTCP(); err == nil {
				dc.Close()
				t.Fatal("ftpgate connected to the client's PORT address before any transfer command")
			}
			c.send("RETR f")
			sameContent(t, "RETR", c.download(p), file)
			c.quit()
			h.sessionsEnded()
		})
	}
}

// TestActiveReplyAfterDataConnection: ftpgate dials an active client only
// once the server's data connection is there, so a fast server's 226 can
// come before ftpgate has connected to the client; a client that reads the
// 226 while it still waits for its data connection takes the transfer for
// failed (curl: "control connection has data while waiting for the data
// connection"). The 226 waits until the client's data connection is made.
func TestActiveReplyAfterDataConnection(t *testing.T) {
	for range 20 {
		h := newHarness(t)
		file := randomBytes(17, 100)
		h.fake.SetFile("f", file)
		c := h.dial()
		c.login()
		p := c.negotiate("PORT")
		c.send("RETR f")
		c.expect(150)
		c.expect(226)
		// The data connection must be there already, in the listen queue.
		p.ln.SetDeadline(time.Now().Add(50 * time.Millisecond))
		dc, err := p.ln.AcceptTCP()
		if err != nil {
			t.Fatalf("after the 226, no data connection from ftpgate yet: %v", err)
		}
		b, _ := readAll(dc)
		dc.Close()
		sameContent(t, "RETR", b, file)
		c.quit()
		h.sessionsEnded()
	}
}
