package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/ftpgate/ftpgate/proxy/ftp"
)

// TLSMode says whether and how a side of a session speaks TLS (FTPS).
type TLSMode int

const (
	// TLSOff speaks plain FTP.
	TLSOff TLSMode = iota
	// TLSExplicit upgrades the control connection with AUTH TLS (RFC
	// 4217) on the control port.
	TLSExplicit
	// TLSImplicit speaks TLS from the first byte.
	TLSImplicit
)

// defaultTLSHandshakeTimeout bounds a TLS handshake, control or data,
// unless Server.TLSHandshakeTimeout says otherwise.
const defaultTLSHandshakeTimeout = 10 * time.Second

func (s *Server) tlsHandshakeTimeout() time.Duration {
	if s.TLSHandshakeTimeout > 0 {
		return s.TLSHandshakeTimeout
	}
	return defaultTLSHandshakeTimeout
}

// errSessionReuse refuses a client's TLS data connection that does not
// resume its control connection's TLS session.
var errSessionReuse = errors.New("the TLS data connection does not resume the control connection's TLS session")

// sessionTagPrefix starts the tag that ftpgate puts in the session tickets
// it issues on a control connection, to know them again on a data
// connection.
const sessionTagPrefix = "ftpgate-control-session:"

// newClientTLSConfig returns the session's TLS configuration towards its
// client: the listener's, with every session ticket it issues tagged with
// a secret of this session's. A data connection that resumes a session
// whose ticket does not carry the tag (another session's, or none) gets a
// full handshake, and is refused if ClientTLSReuse is set: a stranger who
// wins the race to a data port cannot resume a session he never had
// (docs/security.md, "Port theft").
func (s *Server) newClientTLSConfig() (*tls.Config, error) {
	tag := make([]byte, len(sessionTagPrefix)+16)
	copy(tag, sessionTagPrefix)
	if _, err := rand.Read(tag[len(sessionTagPrefix):]); err != nil {
		return nil, fmt.Errorf("tagging the session's TLS tickets: %w", err)
	}
	cfg := s.ClientTLS.Clone()
	cfg.WrapSession = func(cs tls.ConnectionState, st *tls.SessionState) ([]byte, error) {
		st.Extra = append(st.Extra, tag)
		return cfg.EncryptTicket(cs, st)
	}
	cfg.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		st, err := cfg.DecryptTicket(identity, cs)
		if err != nil || st == nil {
			return nil, nil // not a ticket of ours: a full handshake
		}
		for _, x := range st.Extra {
			if bytes.Equal(x, tag) {
				return st, nil
			}
		}
		return nil, nil // another session's
	}
	return cfg, nil
}

// tlsServerHandshake runs a TLS handshake as the server on c, bounded in
// time and by ctx.
func tlsServerHandshake(ctx context.Context, c net.Conn, cfg *tls.Config, timeout time.Duration) (*tls.Conn, error) {
	return tlsHandshake(ctx, tls.Server(c, cfg), timeout, "")
}

// tlsHandshake runs tc's handshake, bounded by timeout and ctx; peer
// names the other side in the error.
func tlsHandshake(ctx context.Context, tc *tls.Conn, timeout time.Duration, peer string) (*tls.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake with %s%s: %w", peer, tc.NetConn().RemoteAddr(), err)
	}
	return tc, nil
}

// startClientTLS runs AUTH TLS on the control connection (RFC 4217 section
// 4): the 234 goes out in the clear, then the client's TLS handshake, and
// from then on the session reads and writes the client through TLS.
//
// SECURITY: a client that sent more after AUTH, before its handshake, is
// refused: those bytes came in the clear and must not be read as if they
// had come through TLS (the STARTTLS command injection of CVE-2011-0411).
func (ss *session) startClientTLS(cmd ftp.Command) error {
	ss.mu.Lock()
	pending := len(ss.replies)
	ss.mu.Unlock()
	switch {
	case ss.clientTLS:
		ss.replyLocal(503, "TLS is on already.")
		return nil
	case pending > 0:
		ss.replyLocal(503, "AUTH with commands still unanswered; send it alone.")
		return nil
	case ss.lr.Buffered() > 0:
		ss.reject("command refused", "tls", "err", "bytes after AUTH, before the TLS handshake")
		ss.replyNow(421, "Bytes after AUTH before the TLS handshake; closing.")
		return errors.New("client sent bytes after AUTH, before the TLS handshake")
	}
	ss.replyNow(234, "AUTH "+strings.ToUpper(cmd.Arg)+" OK, proceed with the TLS handshake.")
	err := ss.out.switchConn(func(plain net.Conn) (net.Conn, error) {
		return tlsServerHandshake(ss.ctx, plain, ss.tlsConfig, ss.srv.tlsHandshakeTimeout())
	})
	if err != nil {
		ss.reject("session ended", "tls", "err", err)
		return err
	}
	ss.mu.Lock()
	ss.clientTLS = true
	ss.mu.Unlock()
	ss.client = ss.out.conn()
	ss.lr.Reset(ss.client)
	ss.log.Debug("TLS on the control connection", "version", tls.VersionName(ss.client.(*tls.Conn).ConnectionState().Version))
	return nil
}

// tlsCommand answers the commands of RFC 2228 and RFC 4217 that ftpgate
// handles itself for a client side in TLS (AUTH, PBSZ, PROT, CCC), and
// reports whether cmd was one of them.
func (ss *session) tlsCommand(cmd ftp.Command) (bool, error) {
	switch cmd.Verb {
	case "AUTH":
		arg := strings.ToUpper(cmd.Arg)
		if ss.srv.ClientTLSMode != TLSExplicit || (arg != "TLS" && arg != "SSL" && arg != "TLS-C") {
			break
		}
		return true, ss.startClientTLS(cmd)
	case "PBSZ":
		if !ss.clientTLS {
			ss.replyLocal(503, "PBSZ needs AUTH TLS first.")
			return true, nil
		}
		ss.mu.Lock()
		ss.pbsz = true
		ss.mu.Unlock()
		ss.replyLocal(200, "PBSZ=0")
		return true, nil
	case "PROT":
		switch {
		case !ss.clientTLS:
			ss.replyLocal(503, "PROT needs AUTH TLS first.")
		case !ss.pbsz:
			ss.replyLocal(503, "PROT needs PBSZ first.")
		case strings.EqualFold(cmd.Arg, "P"):
			ss.setProtP(true)
			ss.replyLocal(200, "PROT now Private.")
		case strings.EqualFold(cmd.Arg, "C"):
			if ss.srv.TLSRequired {
				ss.replyLocal(534, "PROT C refused: data connections must be encrypted.")
				break
			}
			ss.setProtP(false)
			ss.replyLocal(200, "PROT now Clear.")
		case strings.EqualFold(cmd.Arg, "S"), strings.EqualFold(cmd.Arg, "E"):
			ss.replyLocal(536, "PROT S and E are not supported.")
		default:
			ss.replyLocal(504, "Unknown PROT level.")
		}
		return true, nil
	case "CCC":
		ss.reject("command refused", "tls", "verb", cmd.Verb)
		ss.replyLocal(534, "CCC refused: the control connection stays encrypted.")
		return true, nil
	}
	return false, nil
}

func (ss *session) setProtP(on bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.protP = on
}

// tlsRequiredRefusal is the reply to a command that TLS required forbids
// before AUTH TLS, or nil.
func (ss *session) tlsRequiredRefusal(cmd ftp.Command) *refusal {
	if !ss.srv.TLSRequired {
		return nil
	}
	ss.mu.Lock()
	clientTLS, protP := ss.clientTLS, ss.protP
	ss.mu.Unlock()
	switch {
	case !clientTLS && !isOneOf(cmd.Verb, []string{"AUTH", "FEAT", "QUIT", "NOOP", "SYST", "HELP"}):
		return &refusal{code: 530, text: "TLS required: use AUTH TLS first."}
	case clientTLS && !protP && ftp.IsTransferCommand(cmd.Verb):
		return &refusal{code: 521, text: "Data connections must be encrypted: use PROT P."}
	}
	return nil
}

// clientDataTLS makes a client's data connection c a TLS one, as PROT P
// asks: ftpgate is the TLS server, whichever side connected (RFC 4217
// section 7). With ClientTLSReuse, the handshake must resume the
// control connection's session.
func (l *dataLink) clientDataTLS(c net.Conn) (net.Conn, error) {
	ss := l.ss
	tc, err := tlsServerHandshake(l.ctx, c, ss.tlsConfig, ss.srv.tlsHandshakeTimeout())
	if err != nil {
		return nil, fmt.Errorf("client data connection: %w", err)
	}
	if ss.srv.ClientTLSReuse && !tc.ConnectionState().DidResume {
		ss.reject("data connection refused", "tls_session_reuse", "link", l.id, "from", c.RemoteAddr().String())
		tc.Close()
		return nil, errSessionReuse
	}
	return tc, nil
}

// newUpstreamTLSConfig returns the session's TLS configuration towards its
// server: the listener's, with a session cache of its own, which its data
// connections share with its control connection. Servers such as vsftpd
// (require_ssl_reuse, its default) and ProFTPD refuse a data connection
// that does not resume the control connection's session; the cache is
// keyed by server name, the same on every connection of the session.
func (s *Server) newUpstreamTLSConfig() *tls.Config {
	cfg := s.UpstreamTLS.Clone()
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
	return cfg
}

// tlsClientHandshake runs a TLS handshake as the client on c, bounded in
// time and by ctx.
func tlsClientHandshake(ctx context.Context, c net.Conn, cfg *tls.Config, timeout time.Duration) (*tls.Conn, error) {
	return tlsHandshake(ctx, tls.Client(c, cfg), timeout, "server ")
}

// errServerTLS is what a session ends with when its server would not speak
// TLS as configured.
var errServerTLS = errors.New("the server refused TLS")

// startServerTLS makes the control connection to the server a TLS one, as
// UpstreamTLSMode says, and sets its data connections to TLS (PBSZ 0, PROT
// P). It reads the server's greeting itself and returns it, for the client.
// up is the plain connection; it returns the connection to read and write
// from then on. It runs before the session's pumps, with the server's
// replies read here, one by one.
func (ss *session) startServerTLS(up net.Conn) (net.Conn, []byte, error) {
	cfg := ss.upTLSConfig
	deadline := time.Now().Add(ss.srv.dataTimeout())
	up.SetDeadline(deadline)
	defer up.SetDeadline(time.Time{})
	conn := up
	// handshake makes conn a TLS connection over up, under the same
	// deadline.
	handshake := func() error {
		tc, err := tlsClientHandshake(ss.ctx, up, cfg, ss.srv.tlsHandshakeTimeout())
		if err != nil {
			return err
		}
		tc.SetDeadline(deadline)
		conn = tc
		return nil
	}
	defer func() { conn.SetDeadline(time.Time{}) }()
	if ss.srv.UpstreamTLSMode == TLSImplicit {
		if err := handshake(); err != nil {
			return nil, nil, err
		}
	}
	rr := ftp.NewReplyReader(conn, ss.srv.maxLineBytes())
	greeting, code, err := readWholeReply(rr)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the server's greeting: %w", err)
	}
	if code != 220 {
		return nil, greeting, fmt.Errorf("%w: its greeting is %d", errServerTLS, code)
	}
	// ask sends a command of ftpgate's own and checks the reply's code.
	ask := func(c net.Conn, rr *ftp.ReplyReader, cmd string, want int) error {
		if _, err := c.Write(ftp.AppendCommand(nil, cmd, "")); err != nil {
			return fmt.Errorf("sending %s to the server: %w", cmd, err)
		}
		reply, code, err := readWholeReply(rr)
		switch {
		case err != nil:
			return fmt.Errorf("reading the server's reply to %s: %w", cmd, err)
		case code != want:
			return fmt.Errorf("%w: %s answered %q", errServerTLS, cmd, strings.TrimSpace(string(reply)))
		}
		return nil
	}
	if ss.srv.UpstreamTLSMode == TLSExplicit {
		if err := ask(conn, rr, "AUTH TLS", 234); err != nil {
			return nil, greeting, err
		}
		if rr.Buffered() > 0 {
			return nil, greeting, fmt.Errorf("%w: bytes after its 234, before the handshake", errServerTLS)
		}
		if err := handshake(); err != nil {
			return nil, greeting, err
		}
		rr = ftp.NewReplyReader(conn, ss.srv.maxLineBytes())
	}
	for _, cmd := range []string{"PBSZ 0", "PROT P"} {
		if err := ask(conn, rr, cmd, 200); err != nil {
			return nil, greeting, err
		}
	}
	if rr.Buffered() > 0 {
		return nil, greeting, fmt.Errorf("%w: unsolicited bytes after PROT P", errServerTLS)
	}
	ss.log.Debug("TLS towards the server", "version", tls.VersionName(conn.(*tls.Conn).ConnectionState().Version))
	return conn, greeting, nil
}

// readWholeReply reads one complete reply (all its lines), skipping
// preliminary ones, and returns the final one's raw bytes and code.
func readWholeReply(rr *ftp.ReplyReader) ([]byte, int, error) {
	var b []byte
	for {
		rl, err := rr.Next()
		if err != nil {
			return b, 0, err
		}
		b = append(b, rl.Raw...)
		if rl.Last {
			if ftp.IsPreliminary(rl.Code) {
				b = b[:0]
				continue
			}
			return b, rl.Code, nil
		}
	}
}

// serverDataTLS makes the server's data connection c a TLS one: ftpgate,
// the FTP client, is the TLS client, whichever side connected, and resumes
// the control connection's session (the session's cache).
func (l *dataLink) serverDataTLS(c net.Conn) (net.Conn, error) {
	tc, err := tlsClientHandshake(l.ctx, c, l.ss.upTLSConfig, l.ss.srv.tlsHandshakeTimeout())
	if err != nil {
		return nil, fmt.Errorf("server data connection: %w", err)
	}
	return tc, nil
}

// refuseAuth answers an AUTH that this listener does not take (its tls
// mode is off, the mechanism is not TLS, or TLS is implicit), saying
// why, and counts it
// (reason=tls_unavailable): an operator sees how many clients ask for
// FTPS where it is not offered. A transparent listener cannot offer it:
// ftpgate would have to impersonate every destination.
func (ss *session) refuseAuth(cmd ftp.Command) {
	ss.reject("command refused", "tls_unavailable", "verb", cmd.Verb, "arg", cmd.Arg)
	switch {
	case ss.srv.ClientTLSMode == TLSExplicit:
		ss.replyLocal(504, "Only AUTH TLS (or SSL, TLS-C) is supported.")
	case ss.srv.ClientTLSMode == TLSImplicit:
		ss.replyLocal(534, "TLS is on already (implicit).")
	case ss.srv.transparent():
		ss.replyLocal(534, "AUTH refused: this gateway must read the control channel and does not terminate TLS for intercepted connections.")
	default:
		ss.replyLocal(534, "AUTH refused: TLS is not configured on this gateway's listener.")
	}
}
