package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ftpgate/ftpgate/nat"
	"github.com/ftpgate/ftpgate/proxy/ftp"
	"golang.org/x/time/rate"
)

// ErrShutdown is the cancel cause that tells sessions the process is
// stopping: their clients get a 421 reply before the connection closes.
var ErrShutdown = errors.New("ftpgate is shutting down")

// Causes of a session's or a data link's end, as reported in logs.
var (
	errCloseGrace  = errors.New("peer did not close the control connection in time")
	errDataTimeout = errors.New("data connection not established in time")
	errReplaced    = errors.New("replaced by a newer PASV/PORT")
	// errTransferRefused ends the link of a transfer command that the
	// server refused (550, say) before its data connection was made.
	errTransferRefused = errors.New("transfer command refused by the server")
	errBadServer       = errors.New("bad reply from server")
	errRefused         = errors.New("session refused")
	errLoginTimeout    = errors.New("not logged in within the login timeout")
	errLoginThrottled  = errors.New("too many failed logins from this client")
)

// session is one control connection from a client, proxied to the upstream
// server, with every data connection negotiated on it.
//
// Goroutines: serve (the owner) runs pumpCommands (client -> server) and
// pumpReplies (server -> client), and each negotiated data connection runs in
// a dataLink goroutine. All of them derive from ctx; serve returns only after
// every one has ended.
type session struct {
	srv *Server
	id  uint64
	log *slog.Logger

	client net.Conn
	server net.Conn // set once dialed (setServer), before the pumps start
	// serverMu guards server's setting against its closing by a cancel.
	serverMu sync.Mutex
	// out writes every reply to the client, from its own goroutine
	// (replyWriter): nothing writes to the client with mu held.
	out *replyWriter

	clientPeer, clientLocal netip.AddrPort
	// clientDst is the address the client connected to: clientLocal, or
	// behind a load balancer that speaks the PROXY protocol, the
	// destination in its header (where the client's data connections go
	// too).
	clientDst               netip.AddrPort
	serverPeer, serverLocal netip.AddrPort
	lr                      *ftp.LineReader // the client's commands; read by run, then by pumpCommands
	// tlsConfig is the session's TLS configuration towards its client
	// (newClientTLSConfig), if the listener speaks TLS to clients;
	// upTLSConfig towards its server (newUpstreamTLSConfig), if it speaks
	// TLS to the server.
	tlsConfig, upTLSConfig *tls.Config
	// origDst is where a transparent session's client was going.
	origDst netip.AddrPort
	// refused is set when the session was refused by policy.
	refused bool

	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup // running dataLinks

	// transfers counts the transfers running now: relayed data
	// connections copying, and kernel-path transfer commands (the data
	// never passes ftpgate) until their final reply.
	transfers atomic.Int32
	// kernelTransfers are the kernel-path ones among them (for
	// ftpgate_transfers_active).
	kernelTransfers atomic.Int32
	draining        atomic.Bool  // the server is stopping: end once idle
	loggedIn        atomic.Bool  // the server has answered 230 (or 232)
	drainCause      error        // set before draining
	pinholeSeq      atomic.Int32 // numbers the session's pinholes
	// lastTransfer is when the last data connection stopped copying, in
	// Unix nanoseconds: the idle clock restarts then.
	lastTransfer atomic.Int64

	// mu guards everything below and every write to the client, so that
	// replies reach the client whole and in the order of the commands.
	mu sync.Mutex
	// replies holds what each command sent to the server (or answered by
	// ftpgate) is waiting for, in command order: the head is answered by the
	// server's next final reply, or is a reply ftpgate sends itself.
	replies []expectation
	held    []byte    // lines of an intercepted reply read so far
	plan    *dataLink // negotiated and not yet used by a transfer command
	// negotiating counts intercepted PASV/PORT commands whose server reply
	// has not arrived; a transfer command sent meanwhile (pipelined) will
	// use the link that reply creates.
	negotiating int
	// useNext is the transfer command waiting for the link being
	// negotiated.
	useNext *transferRecord
	// user is the name the client sent with USER (never the password),
	// for the transfer lines; ascii, whether the last TYPE was A.
	user  string
	ascii bool
	// clientTLS: the control connection to the client is in TLS; pbsz,
	// protP: the client sent PBSZ, and PROT P (its data connections are
	// TLS ones).
	clientTLS, pbsz, protP bool
	links                  int // dataLinks negotiated and not yet established
	linkSeq                int

	// ports are the open data ports; the teardown closes those that no
	// dataLink did. Guarded by portsMu, not mu: ports are closed with mu
	// held.
	portsMu sync.Mutex
	ports   map[*dataPort]struct{}
	armed   map[*nat.PortPool]int // ports of each pool waiting for their connection
	// clientKey is the client as the per-client limits count it: its IPv4
	// address or its IPv6 prefix.
	clientKey netip.Prefix
	// rate paces the session's relayed data (SessionRate); nil: no limit.
	rate *rate.Limiter
}

// expectation is what one command in flight waits for.
type expectation struct {
	verb string
	// local, if non-nil, is a reply ftpgate sends itself, in turn; it
	// consumes no server reply.
	local []byte
	// intercept, if non-nil, receives the server's complete final reply
	// (all lines, raw) and its code, and returns what the client gets
	// instead. It runs without mu (it may open data ports), and takes mu
	// itself for the session's state.
	intercept func(reply []byte, code int) []byte
	// passive is set for ftpgate's own PASV or EPSV: the one command whose
	// 227 or 229 reply may come back (and is rewritten by intercept).
	// Every other 227, 228 or 229 is withheld.
	passive bool
	// kernelTransfer is set for a transfer command on the kernel path:
	// it counts in transfers until its final reply.
	kernelTransfer bool
	// link, for a transfer command, is the data link it uses: its final
	// positive reply waits until the link has its client end (see
	// handleReplyLine).
	link *dataLink
	// transfer, for a transfer command, is its audit record: the final
	// reply completes one half of it.
	transfer *transferRecord
}

func newSession(srv *Server, id uint64, c net.Conn, log *slog.Logger) *session {
	raw := c
	if w, ok := c.(rawConn); ok {
		raw = w.Raw()
	}
	setOOBInline(raw, log)
	return &session{
		srv:         srv,
		id:          id,
		log:         log,
		client:      c,
		clientPeer:  addrPortOf(c.RemoteAddr()),
		clientLocal: addrPortOf(raw.LocalAddr()),
		clientDst:   addrPortOf(c.LocalAddr()),
		ports:       make(map[*dataPort]struct{}),
		armed:       make(map[*nat.PortPool]int),
		clientKey:   ClientKey(addrPortOf(c.RemoteAddr()).Addr(), srv.clientIPv6Prefix()),
		rate:        newByteLimiter(srv.SessionRate),
	}
}

// rawConn is a connection that wraps another, as a listener that reads a
// PROXY protocol header (github.com/pires/go-proxyproto) returns: its
// RemoteAddr and LocalAddr are those of the header, Raw the socket's.
type rawConn interface {
	Raw() net.Conn
}

// serve runs the session to its end and releases everything it opened.
func (ss *session) serve(parent context.Context) {
	ctx, cancel := context.WithCancelCause(parent)
	ss.mu.Lock()
	ss.ctx, ss.cancel = ctx, cancel
	ss.mu.Unlock()
	if err := ss.startTLS(); err != nil {
		ss.client.Close()
		ss.log.Info("session ended", "err", err)
		ss.srv.Metrics.sessionStarted(ss.srv.Name)
		ss.srv.Metrics.sessionEnded(ss.srv.Name, err, false, 0)
		cancel(err)
		return
	}
	ss.out = newReplyWriter(ss.client, ss.srv.idleTimeout(), func(err error) { cancel(err) })
	go ss.out.run()
	// SECURITY: a session that does not log in goes, with the upstream
	// connection it holds (docs/security.md, "Exhaustion").
	// (The session's end logs the cause: ss.log is not for this goroutine.)
	login := time.AfterFunc(ss.srv.loginTimeout(), func() {
		if !ss.loggedIn.Load() {
			ss.srv.Metrics.rejection(ss.srv.Name, "login_timeout")
			ss.replyNow(421, "Login timeout, closing control connection.")
			cancel(errLoginTimeout)
		}
	})
	defer login.Stop()
	start := time.Now()
	ss.log.Info("session started", "local", ss.clientLocal.String())
	ss.srv.Metrics.sessionStarted(ss.srv.Name)
	err := ss.run()
	ss.cancel(err)
	ss.wg.Wait()
	// Transfer commands whose final reply never came: their lines say so.
	ss.mu.Lock()
	for _, exp := range ss.replies {
		if exp.transfer != nil {
			exp.transfer.replyDoneLocked(0)
		}
	}
	ss.mu.Unlock()
	ss.portsMu.Lock()
	var left []*dataPort
	for dp := range ss.ports {
		left = append(left, dp)
	}
	ss.portsMu.Unlock()
	for _, dp := range left {
		dp.Close()
	}
	// The last replies (the 221 after QUIT, a 421) go out, within
	// closeGrace, then the writer closes the client connection.
	ss.out.finish(nil, closeGrace)
	ss.out.wait()
	if ss.server != nil {
		ss.server.Close()
	}
	attrs := []any{"seconds", time.Since(start).Seconds()}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	ss.log.Info("session ended", attrs...)
	// Kernel-path transfers whose final reply never came end with it.
	ss.srv.Metrics.transfers(ss.srv.Name, KernelPath, -int(ss.kernelTransfers.Swap(0)))
	ss.srv.Metrics.sessionEnded(ss.srv.Name, err, ss.refused, time.Since(start))
}

func (ss *session) run() error {
	ctx := ss.ctx
	// Cancelling the session ends it, whatever it is waiting for (a forward
	// client's login, the server's greeting, a peer that does not read):
	// the writer takes the 421 of a shutdown after the replies queued
	// before it, and closes the client connection once they are out, within
	// shutdownGrace whatever the client does, which also ends the reads
	// from the client; the server's connection closes at once.
	stop := context.AfterFunc(ctx, func() {
		var last []byte
		if errors.Is(context.Cause(ctx), ErrShutdown) {
			last = ftp.AppendReply(nil, 421, "Service closing control connection, ftpgate is shutting down.")
		}
		ss.out.finish(last, shutdownGrace)
		ss.closeServer()
	})
	defer stop()
	ss.lr = ftp.NewLineReader(ss.client, ss.srv.maxLineBytes())
	target := ss.srv.Upstream
	var forwardUser string
	if ss.srv.Forward {
		dst, user, err := ss.forwardLogin()
		if err != nil {
			return err
		}
		target, forwardUser = dst.String(), user
		ss.setUser(user)
		ss.log = ss.log.With("destination", target)
	}
	if ss.srv.transparent() {
		dst, err := ss.destination()
		if err != nil {
			ss.refused = true
			ss.reject("session refused", "allow_list", "err", err)
			ss.replyNow(421, "Service not available, destination not allowed.")
			return err
		}
		ss.origDst = dst
		target = dst.String()
		ss.log = ss.log.With("destination", target)
	}
	targets, reverse := ss.reverseTargets()
	if !reverse {
		targets = []string{target}
	}
	up, err := ss.dialUpstream(targets, reverse)
	if err != nil {
		if ctx.Err() == nil {
			ss.replyNow(421, "Service not available, the FTP server cannot be reached.")
		}
		return err
	}
	if err := ss.setServer(up); err != nil {
		return err
	}
	if ss.srv.UpstreamProxyProtocol != 0 {
		if err := ss.sendProxyHeader(up); err != nil {
			ss.replyNow(421, "Service not available, the FTP server cannot be reached.")
			return err
		}
	}
	ss.serverPeer, ss.serverLocal = addrPortOf(up.RemoteAddr()), addrPortOf(up.LocalAddr())
	ss.log = ss.log.With("server", ss.serverPeer.String())
	greeted := false // the server's greeting was read here (TLS to the server)
	if ss.srv.UpstreamTLSMode != TLSOff && ss.srv.UpstreamTLS != nil {
		ss.upTLSConfig = ss.srv.newUpstreamTLSConfig()
		conn, greeting, err := ss.startServerTLS(up)
		if err != nil {
			ss.reject("session ended", "server_tls", "err", err)
			if errors.Is(err, errServerTLS) {
				ss.replyNow(421, "Service not available, the FTP server refused TLS.")
			} else {
				ss.replyNow(421, "Service not available, TLS to the FTP server failed.")
			}
			return err
		}
		if err := ss.setServer(conn); err != nil {
			return err
		}
		greeted = true
		if forwardUser == "" {
			ss.mu.Lock()
			ss.writeClientLocked(greeting)
			ss.mu.Unlock()
		}
	}
	switch {
	case greeted && forwardUser != "":
		if err := ss.forward(ftp.AppendCommand(nil, "USER", forwardUser), expectation{verb: "USER"}); err != nil {
			return err
		}
	case greeted:
		// The greeting has gone to the client.
	case forwardUser != "":
		// The client had ftpgate's greeting: the server's is swallowed (but
		// a refusal passes), then the client's USER goes on, without the
		// destination.
		ss.replies = append(ss.replies, expectation{verb: "(greeting)", intercept: func(reply []byte, code int) []byte {
			if code == 220 {
				return nil
			}
			return reply
		}})
		if err := ss.forward(ftp.AppendCommand(nil, "USER", forwardUser), expectation{verb: "USER"}); err != nil {
			return err
		}
	default:
		ss.replies = append(ss.replies, expectation{verb: "(greeting)"})
	}

	errc := make(chan error, 2)
	go ss.pumpCommands(errc)
	go ss.pumpReplies(errc)
	err = <-errc
	if err != nil {
		ss.cancel(err)
	}
	// One side closed cleanly: let the other finish (the 221 after QUIT).
	t := time.AfterFunc(closeGrace, func() { ss.cancel(errCloseGrace) })
	err2 := <-errc
	t.Stop()
	if err == nil {
		err = err2
	}
	if ctx.Err() != nil {
		// What cancelled the session (a shutdown, a login timeout, the
		// first error) says more than the read it made fail.
		err = context.Cause(ctx)
	}
	return err
}

// startTLS prepares the session's TLS towards its client, and runs the
// handshake at once in implicit mode.
func (ss *session) startTLS() error {
	if ss.srv.ClientTLSMode == TLSOff || ss.srv.ClientTLS == nil {
		return nil
	}
	cfg, err := ss.srv.newClientTLSConfig()
	if err != nil {
		return err
	}
	ss.tlsConfig = cfg
	if ss.srv.ClientTLSMode != TLSImplicit {
		return nil
	}
	tc, err := tlsServerHandshake(ss.ctx, ss.client, cfg, ss.srv.tlsHandshakeTimeout())
	if err != nil {
		ss.srv.Metrics.rejection(ss.srv.Name, "tls")
		return fmt.Errorf("implicit TLS: %w", err)
	}
	ss.client, ss.clientTLS = tc, true
	return nil
}

// setServer makes up the session's connection to the server (first the
// plain one, then, for TLS to the server, the TLS one over it, before the
// pumps start), unless the session has been cancelled meanwhile: then it
// closes up.
func (ss *session) setServer(up net.Conn) error {
	ss.serverMu.Lock()
	defer ss.serverMu.Unlock()
	if err := ss.ctx.Err(); err != nil {
		up.Close()
		return context.Cause(ss.ctx)
	}
	ss.server = up
	return nil
}

// closeServer closes the connection to the server, if there is one.
func (ss *session) closeServer() {
	ss.serverMu.Lock()
	defer ss.serverMu.Unlock()
	if ss.server != nil {
		ss.server.Close()
	}
}

// destination is where a transparent session goes: the client's original
// destination, if the policy allows it.
func (ss *session) destination() (netip.AddrPort, error) {
	dst, err := ss.srv.OriginalDestination(ss.client)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("finding the original destination: %w", err)
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	// SECURITY: never back into the gateway itself (a client connecting to
	// the listener directly has the listener as its destination).
	if ss.srv.isLocal(dst.Addr()) {
		return netip.AddrPort{}, fmt.Errorf("destination %s is the gateway itself: %w", dst, nat.ErrDestination)
	}
	if err := nat.CheckDestination(dst, ss.srv.AllowDestinations, ss.srv.AllowPorts); err != nil {
		return netip.AddrPort{}, err
	}
	return dst, nil
}

// pumpCommands copies commands from the client to the server, intercepting
// the address-bearing ones. It is a method, not a closure, so that it has a
// name in stack dumps.
func (ss *session) pumpCommands(errc chan<- error) {
	errc <- ss.readCommands()
}

// pumpReplies copies replies from the server to the client, rewriting the
// ones that answer intercepted commands.
func (ss *session) pumpReplies(errc chan<- error) {
	errc <- ss.readReplies()
}

func (ss *session) readCommands() error {
	idle := ss.srv.idleTimeout()
	lr := ss.lr
	for {
		ss.client.SetReadDeadline(time.Now().Add(idle))
		line, err := lr.ReadLine()
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded) && ss.ctx.Err() == nil:
			if ss.transfers.Load() > 0 || time.Since(time.Unix(0, ss.lastTransfer.Load())) < idle {
				continue // the control channel is quiet during transfers
			}
			ss.replyNow(421, "Idle timeout, closing control connection.")
			return fmt.Errorf("client idle for %s: %w", idle, err)
		case errors.Is(err, ftp.ErrLineTooLong):
			ss.reject("command refused", "line_too_long", "max_bytes", ss.srv.maxLineBytes())
			ss.replyNow(500, "Line too long.")
			ss.drainClient()
			return fmt.Errorf("reading command: %w", err)
		case errors.Is(err, io.EOF):
			closeWrite(ss.server)
			return nil
		default:
			closeWrite(ss.server)
			return fmt.Errorf("reading command: %w", err)
		}
		if err := ss.handleCommand(line); err != nil {
			return err
		}
	}
}

func (ss *session) readReplies() error {
	rr := ftp.NewReplyReader(ss.server, ss.srv.maxLineBytes())
	for {
		rl, err := rr.Next()
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			ss.out.closeWrite()
			return nil
		case errors.Is(err, ftp.ErrBadReply), errors.Is(err, ftp.ErrLineTooLong):
			ss.log.Warn("bad reply from server", "err", err)
			ss.replyNow(421, "Service not available, bad reply from the FTP server.")
			return fmt.Errorf("%w: %w", errBadServer, err)
		default:
			return fmt.Errorf("reading reply: %w", err)
		}
		if err := ss.handleReplyLine(rl); err != nil {
			return err
		}
	}
}

// handleCommand forwards one command line to the server, answers it itself,
// or rewrites it.
func (ss *session) handleCommand(line []byte) error {
	cmd, refusal := ss.parseCommand(line)
	if refusal != nil && refusal.end {
		ss.replyNow(refusal.code, refusal.text)
		return errRefused
	}
	if refusal != nil {
		ss.replyLocal(refusal.code, refusal.text)
		return nil
	}
	if r := ss.tlsRequiredRefusal(cmd); r != nil {
		ss.reject("command refused", "tls_required", "verb", cmd.Verb)
		ss.replyLocal(r.code, r.text)
		return nil
	}
	if ss.srv.ClientTLSMode != TLSOff {
		if handled, err := ss.tlsCommand(cmd); handled {
			return err
		}
	}
	switch cmd.Verb {
	case "PASV", "EPSV":
		if cmd.Verb == "EPSV" && strings.EqualFold(cmd.Arg, "ALL") {
			// RFC 2428 section 4: the client promises to use EPSV only.
			// ftpgate keeps its own freedom towards the server, so it
			// answers this itself.
			ss.replyLocal(200, "EPSV ALL ok.")
			return nil
		}
		return ss.negotiatePassive(cmd)
	case "PORT", "EPRT":
		return ss.negotiateActive(cmd)
	case "LPRT", "LPSV":
		// docs/security.md: never pass an address-bearing
		// command through unrewritten.
		ss.reject("command refused", "unsupported", "verb", cmd.Verb)
		ss.replyLocal(502, "Command not implemented, use EPRT or EPSV.")
		return nil
	case "AUTH":
		// TLS is not configured on this listener (or AUTH came again):
		// passed on, an encrypted control channel would hide every address
		// from ftpgate (docs/security.md). RFC 2228: 534, request denied
		// for policy reasons; clients that only try TLS go on in the clear.
		ss.refuseAuth(cmd)
		return nil
	case "FEAT":
		return ss.forward(canonicalLine(line, cmd), expectation{verb: cmd.Verb, intercept: ss.onFeatReply})
	case "REIN":
		if ss.clientTLS {
			// RFC 4217 section 11: REIN would reset the security state.
			ss.reject("command refused", "tls", "verb", cmd.Verb)
			ss.replyLocal(502, "REIN is not available on a TLS session.")
			return nil
		}
		ss.dropPlan(errors.New("REIN"))
	case "ABOR":
		// Send it as RFC 959 section 4.1.3 asks, whatever the client did
		// (Python's ftplib sends "ABOR" alone as urgent data): Telnet IP,
		// then the Synch, whose DM byte writeCommand sends as urgent data,
		// so that a server in the middle of a transfer notices it.
		if ss.upTLSConfig != nil {
			// On TLS the urgent byte would land outside the record
			// layer (RFC 4217 section 14): the bare command, in the
			// TLS stream.
			return ss.forward([]byte("ABOR\r\n"), expectation{verb: cmd.Verb})
		}
		return ss.forward(telnetAbort, expectation{verb: cmd.Verb})
	}
	switch cmd.Verb {
	case "USER":
		ss.setUser(cmd.Arg)
	case "TYPE":
		// The representation type, for the transfer records (xferlog's
		// "a" or "b"): TYPE A [N|T|C] is ASCII, TYPE I and L 8 binary.
		ss.mu.Lock()
		ss.ascii = strings.HasPrefix(strings.ToUpper(cmd.Arg), "A")
		ss.mu.Unlock()
	}
	exp := expectation{verb: cmd.Verb}
	if ftp.IsTransferCommand(cmd.Verb) {
		rec := ss.newTransferRecord(cmd.Verb, cmd.Arg)
		l, ok := ss.useLink(cmd, rec)
		if !ok {
			ss.replyLocal(425, "Use PORT or PASV first.")
			return nil
		}
		exp.link, exp.transfer = l, rec
		if l != nil && l.kernel != nil || l == nil && ss.srv.DataPath == KernelPath {
			// The data goes past ftpgate: the transfer runs, and the
			// control channel may be silent, until its final reply.
			exp.kernelTransfer = true
			ss.transfers.Add(1)
			ss.kernelTransfers.Add(1)
			ss.srv.Metrics.transfers(ss.srv.Name, KernelPath, 1)
		}
	}
	return ss.forward(canonicalLine(line, cmd), exp)
}

// forward sends a command line to the server and queues what it waits for.
// Only the command pump writes to the server, so order is kept.
func (ss *session) forward(line []byte, exp expectation) error {
	ss.mu.Lock()
	ss.replies = append(ss.replies, exp)
	ss.mu.Unlock()
	ss.server.SetWriteDeadline(time.Now().Add(ss.srv.idleTimeout()))
	if err := writeCommand(ss.server, line, ftp.TelnetPrefix(line)); err != nil {
		return fmt.Errorf("sending %s to server: %w", exp.verb, err)
	}
	return nil
}

// replyLocal queues a reply that ftpgate gives itself, sent once every
// earlier command has been answered.
func (ss *session) replyLocal(code int, text string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.replies = append(ss.replies, expectation{local: ftp.AppendReply(nil, code, text)})
	ss.deliverLocalLocked()
}

// setUser records the name the client logs in with.
func (ss *session) setUser(name string) {
	ss.mu.Lock()
	ss.user = name
	ss.mu.Unlock()
}

// replyNow writes a reply at once, out of turn: for replies that end the
// session.
func (ss *session) replyNow(code int, text string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.writeClientLocked(ftp.AppendReply(nil, code, text))
}

// deliverLocalLocked sends the local replies at the head of the queue.
func (ss *session) deliverLocalLocked() {
	for len(ss.replies) > 0 && ss.replies[0].local != nil {
		ss.writeClientLocked(ss.replies[0].local)
		ss.popLocked(ftp.ReplyCode(ss.replies[0].local))
	}
}

// popLocked removes the head of the queue, answered with a final reply
// code to the client.
func (ss *session) popLocked(code int) expectation {
	exp := ss.replies[0]
	ss.replies[0] = expectation{}
	ss.replies = ss.replies[1:]
	if code == 530 && (exp.verb == "USER" || exp.verb == "PASS") &&
		ss.srv.LoginThrottle.Failed(ss.clientKey, time.Now()) {
		// SECURITY: password guessing (docs/security.md).
		failures, window, ban := ss.srv.LoginThrottle.limits()
		ss.reject("failed logins: client refused for a while", "login_throttle",
			"failures", failures, "window_seconds", window.Seconds(), "ban_seconds", ban.Seconds())
		go ss.cancel(errLoginThrottled) // after the 530, queued
	}
	if exp.transfer != nil {
		if l := exp.transfer.link; l != nil && code >= 400 && !l.established {
			// No data connection comes after a refusal: its ports and
			// pinholes go now, not at data_timeout.
			l.cancel(errTransferRefused)
		}
		exp.transfer.replyDoneLocked(code)
	}
	if exp.kernelTransfer {
		ss.lastTransfer.Store(time.Now().UnixNano())
		ss.transfers.Add(-1)
		ss.kernelTransfers.Add(-1)
		ss.srv.Metrics.transfers(ss.srv.Name, KernelPath, -1)
	}
	return exp
}

// writeClientLocked queues b for the client; holding mu keeps the replies
// in order. It does no I/O. If the writer has ended, or the client is too
// far behind, the session ends.
func (ss *session) writeClientLocked(b []byte) error {
	if err := ss.out.write(b); err != nil {
		ss.cancel(err)
		return err
	}
	return nil
}

// handleReplyLine passes one reply line to the client, or holds it when it
// belongs to a reply that ftpgate rewrites or withholds.
func (ss *session) handleReplyLine(rl ftp.ReplyLine) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.replies) > 0 && ss.replies[0].link != nil && ftp.IsPositiveCompletion(rl.Code) {
		// The server has sent its data (226): the client must have its
		// data connection before it reads that, or it takes the transfer
		// for failed ("control connection has data while waiting for the
		// data connection"). ftpgate dials an active client only once the
		// server's connection is there, so a fast server's 226 can come
		// first: hold it until the link has its client end or has ended
		// (data_timeout at most), without the lock.
		l := ss.replies[0].link
		ss.replies[0].link = nil
		ss.mu.Unlock()
		<-l.clientReady
		ss.mu.Lock()
		if !l.clientOK.Load() && len(ss.replies) > 0 {
			// The data never reached the client: the server's 226 would
			// tell it otherwise.
			ss.replies[0].intercept = func([]byte, int) []byte {
				return ftp.AppendReply(nil, 426, "Data connection to the client failed; transfer aborted.")
			}
		}
	}
	final := rl.Last && !ftp.IsPreliminary(rl.Code)
	if final && (rl.Code == 230 || rl.Code == 232) {
		ss.loggedIn.Store(true)
	}
	if isAddressReply(rl.Code) && (len(ss.replies) == 0 || !ss.replies[0].passive) {
		return ss.withholdLocked(rl)
	}
	if len(ss.replies) == 0 || ss.replies[0].intercept == nil || ftp.IsPreliminary(rl.Code) {
		if err := ss.writeClientLocked(rl.Raw); err != nil {
			return err
		}
		if final && len(ss.replies) > 0 {
			ss.popLocked(rl.Code)
			ss.deliverLocalLocked()
			ss.endIfDrainedLocked()
		}
		return nil
	}
	if err := ss.holdLocked(rl); err != nil {
		return err
	}
	if !final {
		return nil
	}
	// The intercept may open a data port (network and firewall I/O): it
	// runs without mu. Its expectation stays at the head meanwhile, so no
	// other reply overtakes its answer.
	exp := ss.replies[0]
	held := append([]byte(nil), ss.held...)
	ss.held = ss.held[:0]
	ss.mu.Unlock()
	out := exp.intercept(held, rl.Code)
	ss.mu.Lock()
	ss.popLocked(ftp.ReplyCode(out))
	if err := ss.writeClientLocked(out); err != nil {
		return err
	}
	ss.deliverLocalLocked()
	return nil
}

// holdLocked keeps a line of a reply that ftpgate rewrites or withholds
// until the reply is complete, within a bound.
func (ss *session) holdLocked(rl ftp.ReplyLine) error {
	ss.held = append(ss.held, rl.Raw...)
	if len(ss.held) > 4*ss.srv.maxLineBytes() {
		ss.writeClientLocked(ftp.AppendReply(nil, 421, "Service not available, bad reply from the FTP server."))
		return fmt.Errorf("%w: reply %d longer than %d bytes", errBadServer, rl.Code, len(ss.held))
	}
	return nil
}

// isAddressReply reports whether code is a reply that carries an address
// for a data connection: 227 (PASV), 228 (LPSV), 229 (EPSV).
func isAddressReply(code int) bool { return code == 227 || code == 228 || code == 229 }

// withholdLocked swallows a 227, 228 or 229 reply that does not answer a
// PASV or EPSV of ftpgate's own (docs/security.md, "Smuggled commands"): its
// address would reach the client unrewritten. Once complete, the client
// gets an error in its place, as the answer to its command; a reply that
// answers no command at all is dropped.
func (ss *session) withholdLocked(rl ftp.ReplyLine) error {
	if err := ss.holdLocked(rl); err != nil {
		return err
	}
	if !rl.Last {
		return nil
	}
	ss.held = ss.held[:0]
	if len(ss.replies) == 0 || ss.replies[0].local != nil {
		ss.reject("reply withheld", "unsolicited_reply", "code", rl.Code, "answers", "nothing")
		return nil
	}
	exp := ss.popLocked(502)
	ss.reject("reply withheld", "unsolicited_reply", "code", rl.Code, "answers", exp.verb)
	if err := ss.writeClientLocked(ftp.AppendReply(nil, 502,
		"Reply withheld: the server answered with a data address that ftpgate did not ask for.")); err != nil {
		return err
	}
	ss.deliverLocalLocked()
	ss.endIfDrainedLocked()
	return nil
}

// startDrain tells the session that the server is stopping: it ends now if
// idle, else once its transfers and replies are done.
func (ss *session) startDrain(cause error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.drainCause = cause
	ss.draining.Store(true)
	ss.endIfDrainedLocked()
}

// endIfDrainedLocked ends a draining session that has no transfer running
// and no reply outstanding. It runs with mu held; the session's end (and
// its 421) happens once mu is released.
func (ss *session) endIfDrainedLocked() {
	if !ss.draining.Load() || ss.transfers.Load() > 0 || len(ss.replies) > 0 || ss.cancel == nil {
		return
	}
	cause := ss.drainCause
	go ss.cancel(cause)
}

// reject logs a refusal at Warn with its reason and counts it.
func (ss *session) reject(msg, reason string, attrs ...any) {
	ss.log.Warn(msg, append([]any{"reason", reason}, attrs...)...)
	ss.srv.Metrics.rejection(ss.srv.Name, reason)
}

// drainClient half-closes the client connection after a final reply and
// discards what the client still sends, for a bounded time and amount.
// Closing a socket with unread input makes the kernel send a reset, which
// can destroy the reply before the client reads it.
func (ss *session) drainClient() {
	ss.out.closeWrite()
	ss.client.SetReadDeadline(time.Now().Add(time.Second))
	io.CopyN(io.Discard, ss.client, 4<<20)
}

// closeWrite half-closes c where it can, so the peer sees EOF while replies
// still flow the other way.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// setOOBInline keeps TCP urgent data in the stream: a client's ABOR is sent
// as "IAC IP IAC DM ABOR" with the DM as urgent data (RFC 959 section 4.1.3),
// and by default Linux takes the urgent byte out of the stream, which would
// corrupt the line that ftpgate forwards.
func setOOBInline(c net.Conn, log *slog.Logger) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_OOBINLINE, 1)
	}); err != nil || serr != nil {
		log.Debug("setting SO_OOBINLINE", "err", errors.Join(err, serr))
	}
}
