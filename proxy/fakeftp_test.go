package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/nat"
	"github.com/ftpgate/ftpgate/proxy/ftp"
)

// Files the fake server treats specially on RETR.
const (
	endlessFile = "endless" // streams zeros until the data connection fails (bounded by fakeIOTimeout)
	vanishFile  = "vanish"  // sends vanishAfter zeros, then resets the data connection and drops the control connection
	vanishAfter = 256 << 10
	chunkSize   = 64 << 10 // RETR writes in chunks of this size

	fakeIOTimeout = 10 * time.Second
)

// fakeGreeting is multi-line, like many real banners.
const fakeGreeting = "220-fake FTP server\r\n220 ready\r\n"

// fakeHelp is a multi-line reply with an inner line that looks like a reply
// and a bare LF, which ftpgate must pass on byte for byte.
const fakeHelp = "214-The following commands are recognized.\r\n" +
	" USER PASS PASV EPSV PORT EPRT RETR STOR\n" +
	"200 this inner line is not a reply\r\n" +
	"214 Help OK.\r\n"

// fakeScript is how a test makes the fake server misbehave.
type fakeScript struct {
	// PassiveReply, if set and returning non-empty, replaces the reply
	// (without CRLF) to PASV or EPSV for a data listener at ap.
	PassiveReply func(verb string, ap netip.AddrPort) string
	// Throttle, if set, makes RETR pause this long after each chunk.
	Throttle time.Duration
	// Replies, if it has the verb, replaces the server's answer to it with
	// these raw lines (CRLF included).
	Replies map[string]string
	// TLS, if set, makes the server take AUTH TLS (control connection
	// only) and answer PBSZ and PROT.
	TLS *tls.Config
}

// dataRecord is one data connection the fake server made or accepted.
type dataRecord struct {
	Verb          string // PASV or EPSV: accepted; PORT or EPRT: dialled
	Local, Remote netip.AddrPort
}

// fakeFTP is a scripted in-process FTP server on 127.0.0.1. It serves any
// number of control connections, one command at a time each, records what
// it receives and every data connection, and keeps files in memory.
type fakeFTP struct {
	ln net.Listener
	wg sync.WaitGroup

	mu       sync.Mutex
	script   fakeScript
	files    map[string][]byte
	lines    []string // command lines received, terminators included
	data     []dataRecord
	sessions int // control connections accepted
	open     map[io.Closer]bool
	closed   bool
}

func newFakeFTP(t testing.TB) *fakeFTP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeFTP{ln: ln, files: make(map[string][]byte), open: make(map[io.Closer]bool)}
	f.wg.Add(1)
	go f.serve()
	t.Cleanup(f.Close)
	return f
}

func (f *fakeFTP) Addr() string { return f.ln.Addr().String() }

// Close stops the server, closes every connection and waits for its
// goroutines.
func (f *fakeFTP) Close() {
	f.mu.Lock()
	f.closed = true
	for c := range f.open {
		c.Close()
	}
	f.mu.Unlock()
	f.ln.Close()
	f.wg.Wait()
}

// Script changes how the server behaves from now on.
func (f *fakeFTP) Script(fn func(*fakeScript)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.script)
}

func (f *fakeFTP) SetFile(name string, b []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.files[name] = b
}

func (f *fakeFTP) File(name string) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.files[name]
	return b, ok
}

// Lines returns the command lines received so far, as received.
func (f *fakeFTP) Lines() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.lines)
}

// Commands returns the commands received so far, parsed.
func (f *fakeFTP) Commands() []ftp.Command {
	var cmds []ftp.Command
	for _, l := range f.Lines() {
		cmds = append(cmds, ftp.SplitCommand([]byte(l)))
	}
	return cmds
}

func (f *fakeFTP) DataConns() []dataRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.data)
}

func (f *fakeFTP) Sessions() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sessions
}

// track registers c to be closed by Close; it closes c and reports false if
// the server is already closed.
func (f *fakeFTP) track(c io.Closer) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		c.Close()
		return false
	}
	f.open[c] = true
	return true
}

func (f *fakeFTP) untrackClose(c io.Closer) {
	f.mu.Lock()
	delete(f.open, c)
	f.mu.Unlock()
	c.Close()
}

func (f *fakeFTP) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		if !f.track(c) {
			return
		}
		f.mu.Lock()
		f.sessions++
		f.mu.Unlock()
		// Read TCP urgent data inline, as real servers read the Telnet
		// Synch before ABOR: ftpgate sends the DM byte as urgent data.
		setOOBInline(c, slog.New(slog.DiscardHandler))
		f.wg.Add(1)
		go f.handle(c)
	}
}

// fakeFeat is the fake server's FEAT reply, as vsftpd with TLS enabled
// phrases it (no EPRT).
const fakeFeat = "211-Features:\r\n AUTH TLS\r\n EPSV\r\n MDTM\r\n PASV\r\n PBSZ\r\n PROT\r\n REST STREAM\r\n SIZE\r\n TVFS\r\n UTF8\r\n211 End\r\n"

// fakeSession is one control connection's state.
type fakeSession struct {
	f          *fakeFTP
	c          net.Conn
	peer       netip.AddrPort
	rest       int64
	pasv       *fakePassive   // pending passive data listener
	active     netip.AddrPort // pending PORT/EPRT target
	activeVerb string
}

type fakePassive struct {
	verb string
	ln   *net.TCPListener
	conn chan *net.TCPConn // the one accepted data connection
}

func (f *fakeFTP) handle(c net.Conn) {
	defer f.wg.Done()
	defer f.untrackClose(c)
	s := &fakeSession{f: f, c: c, peer: addrPortOf(c.RemoteAddr())}
	defer s.dropData()
	r := bufio.NewReader(c)
	io.WriteString(c, fakeGreeting)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		f.mu.Lock()
		f.lines = append(f.lines, line)
		f.mu.Unlock()
		before := s.c
		if !s.do(ftp.SplitCommand([]byte(line))) {
			return
		}
		if s.c != before { // AUTH TLS
			r = bufio.NewReader(s.c)
		}
	}
}

// startTLS answers AUTH TLS and runs the server's handshake.
func (s *fakeSession) startTLS(cfg *tls.Config) bool {
	s.reply(234, "Proceed with negotiation.")
	tc := tls.Server(s.c, cfg)
	tc.SetDeadline(time.Now().Add(fakeIOTimeout))
	if err := tc.Handshake(); err != nil {
		return false
	}
	tc.SetDeadline(time.Time{})
	s.c = tc
	return true
}

func (s *fakeSession) reply(code int, text string) {
	fmt.Fprintf(s.c, "%d %s\r\n", code, text)
}

// do runs one command; it reports false when the session must end.
func (s *fakeSession) do(cmd ftp.Command) bool {
	s.f.mu.Lock()
	scripted, ok := s.f.script.Replies[cmd.Verb]
	s.f.mu.Unlock()
	if ok {
		io.WriteString(s.c, scripted)
		return true
	}
	switch cmd.Verb {
	case "USER":
		s.reply(331, "Password required.")
	case "PASS":
		if cmd.Arg == "wrong" {
			s.reply(530, "Login incorrect.")
			break
		}
		s.reply(230, "Logged in.")
	case "TYPE", "NOOP", "MODE", "STRU":
		s.reply(200, cmd.Verb+" ok.")
	case "SYST":
		s.reply(215, "UNIX Type: L8")
	case "HELP":
		io.WriteString(s.c, fakeHelp)
	case "FEAT":
		io.WriteString(s.c, fakeFeat)
	case "AUTH":
		s.f.mu.Lock()
		cfg := s.f.script.TLS
		s.f.mu.Unlock()
		if cfg != nil {
			return s.startTLS(cfg)
		}
		s.reply(234, "Proceed with negotiation.") // ftpgate must never let this through
	case "PBSZ", "PROT":
		s.reply(200, cmd.Verb+" ok.")
	case "REST":
		n, err := strconv.ParseInt(cmd.Arg, 10, 64)
		if err != nil || n < 0 {
			s.reply(501, "Bad REST offset.")
			break
		}
		s.rest = n
		s.reply(350, fmt.Sprintf("Restarting at %d.", n))
	case "PASV", "EPSV":
		s.listen(cmd.Verb)
	case "PORT", "EPRT":
		parse := nat.ParsePORT
		if cmd.Verb == "EPRT" {
			parse = nat.ParseEPRT
		}
		ap, err := parse(cmd.Arg)
		if err != nil {
			s.reply(501, "Bad address.")
			break
		}
		s.dropData()
		s.active, s.activeVerb = ap, cmd.Verb
		s.reply(200, cmd.Verb+" command successful.")
	case "RETR", "LIST", "NLST":
		return s.send(cmd)
	case "STOR":
		s.receive(cmd.Arg)
	case "ABOR":
		s.dropData()
		s.reply(225, "No transfer to ABOR.")
	case "QUIT":
		s.reply(221, "Goodbye.")
		return false
	default:
		s.reply(500, "Unknown command.")
	}
	return true
}

// listen opens a passive data listener and answers PASV or EPSV.
func (s *fakeSession) listen(verb string) {
	s.dropData()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil || !s.f.track(ln) {
		s.reply(425, "Cannot listen.")
		return
	}
	p := &fakePassive{verb: verb, ln: ln, conn: make(chan *net.TCPConn, 1)}
	s.pasv = p
	s.f.wg.Add(1)
	go s.f.acceptData(p, s.peer.Addr())
	ap := addrPortOf(ln.Addr())
	reply := nat.Format229(ap.Port())
	if verb == "PASV" {
		reply = nat.Format227(ap)
	}
	s.f.mu.Lock()
	script := s.f.script
	s.f.mu.Unlock()
	if script.PassiveReply != nil {
		if r := script.PassiveReply(verb, ap); r != "" {
			reply = r
		}
	}
	io.WriteString(s.c, reply+"\r\n")
}

// acceptData accepts the data connection for p, only from the control
// connection's peer (as vsftpd does with pasv_promiscuous=NO).
func (f *fakeFTP) acceptData(p *fakePassive, peer netip.Addr) {
	defer f.wg.Done()
	defer f.untrackClose(p.ln)
	for {
		c, err := p.ln.AcceptTCP()
		if err != nil {
			return
		}
		if addrPortOf(c.RemoteAddr()).Addr() != peer {
			c.Close()
			continue
		}
		f.recordData(p.verb, c)
		if f.track(c) {
			p.conn <- c
		}
		return
	}
}

func (f *fakeFTP) recordData(verb string, c net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.data = append(f.data, dataRecord{verb, addrPortOf(c.LocalAddr()), addrPortOf(c.RemoteAddr())})
}

// dropData forgets the pending data connection, closing what it holds.
func (s *fakeSession) dropData() {
	if p := s.pasv; p != nil {
		s.pasv = nil
		s.f.untrackClose(p.ln)
		select {
		case c := <-p.conn:
			s.f.untrackClose(c)
		default:
		}
	}
	s.active = netip.AddrPort{}
}

// openData returns the data connection negotiated last.
func (s *fakeSession) openData() (*net.TCPConn, error) {
	if p := s.pasv; p != nil {
		s.pasv = nil
		defer s.f.untrackClose(p.ln)
		select {
		case c := <-p.conn:
			return c, nil
		case <-time.After(fakeIOTimeout):
			return nil, errors.New("no data connection")
		}
	}
	if ap := s.active; ap.IsValid() {
		s.active = netip.AddrPort{}
		d := net.Dialer{Timeout: fakeIOTimeout, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}
		c, err := d.Dial("tcp", ap.String())
		if err != nil {
			return nil, err
		}
		s.f.recordData(s.activeVerb, c)
		if !s.f.track(c) {
			return nil, net.ErrClosed
		}
		return c.(*net.TCPConn), nil
	}
	return nil, errors.New("no PORT or PASV")
}

// send answers RETR, LIST and NLST; it reports false if the server vanished.
func (s *fakeSession) send(cmd ftp.Command) bool {
	s.f.mu.Lock()
	script := s.f.script
	var body []byte
	limit := -1 // bytes to send before vanishing
	switch {
	case cmd.Verb == "LIST" || cmd.Verb == "NLST":
		for _, name := range slices.Sorted(maps.Keys(s.f.files)) {
			if cmd.Verb == "LIST" {
				body = fmt.Appendf(body, "-rw-r--r-- 1 ftp ftp %d Jan 01 00:00 %s\r\n", len(s.f.files[name]), name)
			} else {
				body = fmt.Appendf(body, "%s\r\n", name)
			}
		}
	case cmd.Arg == endlessFile:
		body = nil
	case cmd.Arg == vanishFile:
		body, limit = make([]byte, 4*vanishAfter), vanishAfter
	default:
		b, ok := s.f.files[cmd.Arg]
		if !ok {
			s.f.mu.Unlock()
			s.dropData()
			s.reply(550, "No such file.")
			return true
		}
		body = b[min(s.rest, int64(len(b))):]
	}
	s.f.mu.Unlock()
	s.rest = 0

	dc, err := s.openData()
	if err != nil {
		s.reply(425, "Can't open data connection.")
		return true
	}
	s.reply(150, "Opening BINARY mode data connection.")
	dc.SetWriteDeadline(time.Now().Add(fakeIOTimeout))
	if limit >= 0 {
		dc.Write(body[:limit])
		dc.SetLinger(0) // reset, as a crashing server's kernel may
		s.f.untrackClose(dc)
		return false
	}
	endless := cmd.Verb == "RETR" && cmd.Arg == endlessFile
	if endless {
		body = make([]byte, chunkSize)
	}
	for err == nil && (endless || len(body) > 0) {
		n := min(len(body), chunkSize)
		_, err = dc.Write(body[:n])
		if !endless {
			body = body[n:]
		}
		if script.Throttle > 0 && len(body) > 0 {
			time.Sleep(script.Throttle)
		}
	}
	s.f.untrackClose(dc)
	if err != nil {
		s.reply(426, "Connection closed; transfer aborted.")
		return true
	}
	s.reply(226, "Transfer complete.")
	return true
}

// receive answers STOR.
func (s *fakeSession) receive(name string) {
	dc, err := s.openData()
	if err != nil {
		s.reply(425, "Can't open data connection.")
		return
	}
	s.reply(150, "Ok to send data.")
	dc.SetReadDeadline(time.Now().Add(fakeIOTimeout))
	b, err := io.ReadAll(dc)
	s.f.untrackClose(dc)
	if err != nil {
		s.reply(426, "Connection closed; transfer aborted.")
		return
	}
	s.f.SetFile(name, b)
	s.reply(226, "Transfer complete.")
}
