package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/proxy/ftp"
)

var (
	testCertOnce sync.Once
	testCertPair tls.Certificate
	testCertPool *x509.CertPool
)

// testCert is a self-signed certificate for 127.0.0.1, made once per test
// binary, and a pool that trusts it.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	testCertOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1),
			Subject:      pkix.Name{CommonName: "ftpgate test"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			panic(err)
		}
		testCertPair = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}
		testCertPool = x509.NewCertPool()
		testCertPool.AddCert(cert)
	})
	return testCertPair, testCertPool
}

// withClientTLS makes the harness's proxy speak TLS to clients.
func withClientTLS(t *testing.T, mode TLSMode, required, reuse bool) func(*Server) {
	cert, _ := testCert(t)
	return func(s *Server) {
		s.ClientTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		s.ClientTLSMode, s.TLSRequired, s.ClientTLSReuse = mode, required, reuse
	}
}

// clientTLSConfig is what an FTPS client uses; with cache, it resumes its
// control connection's session on data connections, as curl and lftp do.
func clientTLSConfig(t *testing.T, cache bool, version uint16) *tls.Config {
	_, pool := testCert(t)
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: version, MaxVersion: version}
	if cache {
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	}
	return cfg
}

// authTLS sends AUTH TLS, expects 234, and continues in TLS.
func (c *ftpClient) authTLS(cfg *tls.Config) {
	c.t.Helper()
	c.cmd("AUTH TLS", 234)
	tc := tls.Client(c.c, cfg)
	tc.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake on the control connection: %v", err)
	}
	tc.SetDeadline(time.Time{})
	c.rw, c.rr = tc, ftp.NewReplyReader(tc, 1<<16)
}

// openTLS opens p's data connection and runs the client's TLS handshake
// on it (RFC 4217: the FTP client is the TLS client, whoever connected).
func (p *dataPlan) openTLS(cfg *tls.Config) (*tls.Conn, error) {
	c, err := p.tryOpen()
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, cfg)
	tc.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

// loginTLS runs AUTH TLS, the login, PBSZ 0 and PROT P.
func (c *ftpClient) loginTLS(cfg *tls.Config) {
	c.t.Helper()
	c.authTLS(cfg)
	c.cmd("USER anonymous", 331)
	c.cmd("PASS guest", 230)
	c.cmd("PBSZ 0", 200)
	c.cmd("PROT P", 200)
}

// retrTLS reads p's data connection, already sent RETR for, in TLS and
// checks that it carried want and that the transfer ended 226. It returns
// the data connection's state.
func (c *ftpClient) retrTLS(p *dataPlan, cfg *tls.Config, want []byte) tls.ConnectionState {
	c.t.Helper()
	dc, err := p.openTLS(cfg)
	if err != nil {
		c.t.Fatalf("TLS data connection: %v", err)
	}
	got, err := readAll(dc)
	dc.Close()
	if err != nil {
		c.t.Errorf("reading the TLS data connection: %v", err)
	}
	sameContent(c.t, "RETR", got, want)
	c.expect(150)
	c.expect(226)
	return dc.ConnectionState()
}

// TestFTPSOffload: TLS to the client, plain FTP to the server (a legacy
// server gains FTPS). FEAT offers AUTH TLS, PBSZ and PROT; the client logs
// in over TLS; PROT P data connections are TLS on the client side and
// resume the control connection's session (TLS 1.2 and 1.3); the server
// sees none of AUTH, PBSZ and PROT.
func TestFTPSOffload(t *testing.T) {
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		for _, verb := range []string{"EPSV", "PORT"} {
			t.Run(tls.VersionName(version)+"/"+verb, func(t *testing.T) {
				h := newHarness(t, withClientTLS(t, TLSExplicit, true, true))
				file := randomBytes(21, 256<<10)
				h.fake.SetFile("f", file)
				cfg := clientTLSConfig(t, true, version)
				c := h.dial()
				c.expect(220)
				feat := c.cmd("FEAT", 211)
				for _, f := range []string{" AUTH TLS\r\n", " PBSZ\r\n", " PROT\r\n"} {
					if !strings.Contains(feat, f) {
						t.Errorf("FEAT lacks %q:\n%s", f, feat)
					}
				}
				c.loginTLS(cfg)
				p := c.negotiate(verb)
				c.send("RETR f")
				if !c.retrTLS(p, cfg, file).DidResume {
					t.Error("the data connection did not resume the control connection's session")
				}
				c.quit()
				h.sessionsEnded()
				for _, v := range h.verbs() {
					if v == "AUTH" || v == "PBSZ" || v == "PROT" {
						t.Errorf("the plain server received %s", v)
					}
				}
			})
		}
	}
}

// TestFTPSSessionReuse: with ClientTLSReuse, a TLS data connection that
// does not resume the control connection's session (Python's ftplib does
// not) is refused, and the client gets 426; without it, it works.
func TestFTPSSessionReuse(t *testing.T) {
	for _, reuse := range []bool{true, false} {
		h := newHarness(t, withClientTLS(t, TLSExplicit, false, reuse), func(s *Server) { s.DataTimeout = time.Second })
		file := randomBytes(22, 4096)
		h.fake.SetFile("f", file)
		cfg := clientTLSConfig(t, false, tls.VersionTLS13) // no session cache: no resumption
		c := h.dial()
		c.expect(220)
		c.loginTLS(cfg)
		p := c.negotiate("EPSV")
		c.send("RETR f")
		if !reuse {
			c.retrTLS(p, cfg, file)
		} else {
			dc, err := p.openTLS(cfg)
			// The handshake completes (it cannot be told apart before),
			// then ftpgate closes the connection.
			if err == nil {
				b, _ := readAll(dc)
				dc.Close()
				if len(b) != 0 {
					t.Errorf("reuse required: a data connection without resumption got %d bytes", len(b))
				}
			}
			c.expect(150)
			c.expect(426)
			h.waitLog("reason=tls_session_reuse")
		}
		c.quit()
		h.sessionsEnded()
	}
}

// TestFTPSRequired: with TLSRequired, nothing but AUTH (and FEAT, QUIT,
// NOOP, SYST, HELP) before the TLS handshake, and no transfer without PROT
// P.
func TestFTPSRequired(t *testing.T) {
	h := newHarness(t, withClientTLS(t, TLSExplicit, true, true))
	c := h.dial()
	c.expect(220)
	c.cmd("USER anonymous", 530)
	c.cmd("PBSZ 0", 530)
	c.cmd("NOOP", 200)
	c.authTLS(clientTLSConfig(t, true, tls.VersionTLS13))
	c.cmd("USER anonymous", 331)
	c.cmd("PASS guest", 230)
	c.cmd("PROT P", 503) // PBSZ first
	c.cmd("PBSZ 0", 200)
	c.cmd("PROT C", 534)
	c.cmd("PROT S", 536)
	c.negotiate("EPSV")
	c.cmd("LIST", 521)
	c.cmd("CCC", 534)
	c.cmd("REIN", 502)
	c.cmd("AUTH TLS", 503)
	c.quit()
	h.sessionsEnded()
}

// TestFTPSImplicit: TLS from the first byte; the greeting comes through it.
func TestFTPSImplicit(t *testing.T) {
	h := newHarness(t, withClientTLS(t, TLSImplicit, false, true))
	file := randomBytes(23, 4096)
	h.fake.SetFile("f", file)
	cfg := clientTLSConfig(t, true, tls.VersionTLS12)
	tc, err := tls.Dial("tcp", h.addr, cfg)
	if err != nil {
		t.Fatalf("implicit TLS: %v", err)
	}
	c := &ftpClient{t: t, c: nil, rw: tc, rr: ftp.NewReplyReader(tc, 1<<16), clientPorts: h.srv.ClientPorts.Range()}
	t.Cleanup(func() { tc.Close() })
	c.expect(220)
	c.cmd("USER anonymous", 331)
	c.cmd("PASS guest", 230)
	c.cmd("PBSZ 0", 200)
	c.cmd("PROT P", 200)
	p := c.negotiate("PASV")
	c.send("RETR f")
	c.retrTLS(p, cfg, file)
	c.send("QUIT")
	c.expect(221)
	tc.Close()
	h.sessionsEnded()
}

// TestFTPSBadInput: bytes in the clear after AUTH (a command injected
// before the handshake, CVE-2011-0411) end the session; so do garbage
// instead of a ClientHello and a handshake that never comes (within the
// handshake timeout); each is logged, and nothing is left.
func TestFTPSBadInput(t *testing.T) {
	h := newHarness(t, withClientTLS(t, TLSExplicit, false, true), func(s *Server) { s.TLSHandshakeTimeout = time.Second })
	injected := h.dial()
	injected.expect(220)
	injected.write([]byte("AUTH TLS\r\nUSER injected\r\n"))
	injected.expect(421)
	injected.expectClosed()

	garbage := h.dial()
	garbage.expect(220)
	garbage.cmd("AUTH TLS", 234)
	garbage.write([]byte("this is not a ClientHello\r\n"))
	garbage.expectClosed()

	stalled := h.dial()
	stalled.expect(220)
	stalled.cmd("AUTH TLS", 234)
	stalled.write([]byte{0x16, 0x03, 0x01}) // the start of a record, and no more
	stalled.expectClosed()

	h.sessionsEnded()
	h.waitLog("bytes after AUTH, before the TLS handshake")
	h.waitLog("reason=tls", "TLS handshake")
	h.waitLog("reason=tls", "TLS handshake", "context deadline exceeded")
	for _, l := range h.fake.Lines() {
		if strings.Contains(l, "injected") {
			t.Errorf("the server received %q", l)
		}
	}
}

// TestFTPSStranger: a stranger connects to an announced TLS data port
// first, from an address the source check lets through (source_check off:
// a load balancer in front). With session reuse required, it cannot
// resume the control connection's session: refused, and the real client's
// transfer completes.
func TestFTPSStranger(t *testing.T) {
	h := newHarness(t, withClientTLS(t, TLSExplicit, true, true), func(s *Server) { s.SourceCheck = SourceCheckOff })
	file := randomBytes(24, 4096)
	h.fake.SetFile("f", file)
	cfg := clientTLSConfig(t, true, tls.VersionTLS13)
	c := h.dial()
	c.expect(220)
	c.loginTLS(cfg)
	p := c.negotiate("EPSV")

	d := net.Dialer{Timeout: ioTimeout, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	sc, err := d.Dial("tcp", p.addr.String())
	if err != nil {
		t.Fatalf("the stranger's connection: %v", err)
	}
	stranger := tls.Client(sc, clientTLSConfig(t, false, tls.VersionTLS13))
	stranger.SetDeadline(time.Now().Add(ioTimeout))
	if err := stranger.Handshake(); err == nil {
		if b, _ := readAll(stranger); len(b) != 0 {
			t.Errorf("the stranger read %d bytes", len(b))
		}
	}
	stranger.Close()

	c.send("RETR f") // the client's data connection, after the stranger's
	c.retrTLS(p, cfg, file)
	c.quit()
	h.sessionsEnded()
	h.waitLog("reason=tls_session_reuse", "from=127.0.0.2:")
}

// TestFTPSForwardLogin: in forward mode the client's TLS ends at ftpgate
// before USER name@host: AUTH TLS, then the login, in TLS. (A destination
// refused by the allow-list gets its 421 through TLS; successful forward
// sessions need a non-loopback server: the end-to-end tests have them.)
// Another AUTH mechanism is refused with 504.
func TestFTPSForwardLogin(t *testing.T) {
	h := newHarness(t, withClientTLS(t, TLSExplicit, true, true), func(s *Server) {
		s.Upstream = ""
		s.Forward = true
		s.AllowDestinations = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")}
	})
	c := h.dial()
	c.expect(220)
	c.cmd("USER anonymous@198.18.1.2", 530) // TLS required
	c.cmd("AUTH GSSAPI", 504)
	c.authTLS(clientTLSConfig(t, true, tls.VersionTLS13))
	c.cmd("PBSZ 0", 200)
	c.send("USER anonymous@198.51.100.7")
	c.expect(421)
	h.sessionsEnded()
	h.waitLog("session refused", "reason=allow_list")
	if n := len(h.fake.Commands()); n != 0 {
		t.Errorf("the server received %d commands", n)
	}
}

// newUpstreamTLSHarness is a harness whose proxy speaks TLS to its server
// (the fake, given the test certificate), trusting the test certificate,
// for serverName.
func newUpstreamTLSHarness(t *testing.T, serverName string) *harness {
	cert, pool := testCert(t)
	h := newHarness(t, func(s *Server) {
		s.UpstreamTLS = &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12}
		s.UpstreamTLSMode = TLSExplicit
	})
	h.fake.Script(func(s *fakeScript) {
		s.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	})
	return h
}

// TestFTPSUpstreamAbor: towards a TLS server, ftpgate sends AUTH TLS,
// PBSZ 0 and PROT P itself, and ABOR goes as the bare command: the Telnet
// Synch's urgent byte would land outside the TLS record layer.
func TestFTPSUpstreamAbor(t *testing.T) {
	h := newUpstreamTLSHarness(t, "127.0.0.1")
	c := h.dial()
	c.login()
	c.write([]byte("\xff\xf4\xff\xf2ABOR\r\n"))
	c.expect(225)
	c.quit()
	h.sessionsEnded()
	lines := h.fake.Lines()
	if !slices.Contains(lines, "ABOR\r\n") {
		t.Errorf("the TLS server did not receive a bare ABOR: %q", lines)
	}
	for _, want := range []string{"AUTH TLS\r\n", "PBSZ 0\r\n", "PROT P\r\n"} {
		if !slices.Contains(lines, want) {
			t.Errorf("the TLS server did not receive %q: %q", want, lines)
		}
	}
}

// TestFTPSUpstreamBadCertificate: a server certificate that does not hold
// the expected name ends the session with 421 before the client logs in,
// and the log says why.
func TestFTPSUpstreamBadCertificate(t *testing.T) {
	h := newUpstreamTLSHarness(t, "ftp.wrong.example")
	c := h.dial()
	c.expect(421)
	c.expectClosed()
	h.sessionsEnded()
	h.waitLog("reason=server_tls", "failed to verify certificate", "ftp.wrong.example")
	if slices.Contains(h.fake.Lines(), "USER anonymous\r\n") {
		t.Error("the server received the login")
	}
}
