// Package proxy is ftpgate's FTP application-layer gateway: it accepts FTP
// control connections, proxies each to its upstream server as one session,
// rewrites the address-bearing commands and replies (PORT, EPRT, PASV, EPSV,
// 227, 229), and relays the data connections they negotiate.
//
// A session is one goroutine tree owned by one context: when the session
// ends, for whatever reason, one cancel closes both control connections,
// every data listener and data connection it opened, and returns every port
// it took to its pool.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/ftpgate/ftpgate/nat"
	"github.com/ftpgate/ftpgate/rules"
	"golang.org/x/time/rate"
)

// ServerMode says how ftpgate asks the upstream server for data connections,
// whatever the client chose.
type ServerMode int

const (
	// SameMode asks the server the way the client asked ftpgate: passive
	// for PASV/EPSV, active for PORT/EPRT.
	SameMode ServerMode = iota
	// PassiveMode always sends the server PASV (or EPSV); ftpgate dials it.
	PassiveMode
	// ActiveMode always sends the server PORT (or EPRT); the server dials
	// ftpgate.
	ActiveMode
)

// String returns the configuration name of m.
func (m ServerMode) String() string {
	switch m {
	case SameMode:
		return "same"
	case PassiveMode:
		return "passive"
	case ActiveMode:
		return "active"
	}
	return fmt.Sprintf("ServerMode(%d)", int(m))
}

// Default values used where a Server field is zero.
const (
	DefaultIdleTimeout  = 15 * time.Minute
	DefaultLoginTimeout = 30 * time.Second
	DefaultDataTimeout  = 30 * time.Second
	DefaultMaxLineBytes = 4096
	// maxLinksPerSession bounds the data connections one session may have
	// negotiated but not yet established (docs/security.md).
	maxLinksPerSession = 4
	// closeGrace is how long a session waits, after one side of the control
	// channel has closed, for the other side to close too; and how long
	// its last replies may take to reach the client.
	closeGrace = 5 * time.Second
	// shutdownGrace bounds how long a cancelled session (a shutdown, a
	// failure) keeps writing its last replies, its 421 included, to a
	// client that does not read them.
	shutdownGrace = 2 * time.Second
)

// SourceCheck is the policy for the source address of data connections.
type SourceCheck int

const (
	// SourceCheckStrict accepts a data connection only from the control
	// peer's address (the default).
	SourceCheckStrict SourceCheck = iota
	// SourceCheckTrusted also accepts one from TrustedSources.
	SourceCheckTrusted
	// SourceCheckOff accepts one from anywhere: the pinholes alone guard.
	SourceCheckOff
)

// ServerCommands says which data commands ftpgate sends the server.
type ServerCommands int

const (
	// AutoCommands mirrors the client: PASV/PORT when it sent PASV/PORT,
	// EPSV/EPRT when it sent EPSV/EPRT, and always EPSV/EPRT to a server on
	// IPv6.
	AutoCommands ServerCommands = iota
	// ClassicCommands always sends PASV and PORT (RFC 959), for IPv4-only
	// servers that do not know RFC 2428: an IPv6 client's EPSV/EPRT is
	// translated.
	ClassicCommands
	// ExtendedCommands always sends EPSV and EPRT (RFC 2428).
	ExtendedCommands
)

// DataPath says how data connections are carried.
type DataPath int

const (
	// RelayPath copies each data connection through ftpgate's own sockets
	// (splice on Linux). It can convert modes.
	RelayPath DataPath = iota
	// KernelPath installs DNAT and ACCEPT pinholes and lets the kernel
	// forward the data connection: it never enters ftpgate. It cannot
	// convert modes: ServerMode must be SameMode.
	KernelPath
)

// String returns the configuration name of p.
func (p DataPath) String() string {
	if p == KernelPath {
		return "kernel"
	}
	return "relay"
}

// Server proxies the FTP control connections accepted on one listener: to
// one upstream server (reverse mode), or each to the destination it had
// before the firewall diverted it to ftpgate (transparent mode). Its fields
// are read-only once Serve is called; a Server must not be copied after
// first use.
type Server struct {
	// Name labels the listener in logs.
	Name string

	// Upstream is the FTP server's host:port in reverse mode. Leave it
	// empty in transparent mode.
	Upstream string

	// Upstreams, if set, replaces Upstream with several servers (a legacy
	// pair, say): a session tries them in UpstreamPolicy's order, each
	// within DataTimeout, and one that could not be reached is tried last
	// for UpstreamHoldDown (if zero, DefaultUpstreamHoldDown).
	Upstreams        []string
	UpstreamPolicy   UpstreamPolicy
	UpstreamHoldDown time.Duration

	// UpstreamProxyProtocol, 1 or 2, sends a PROXY protocol header of that
	// version first on each connection to the server, carrying the
	// client's address and the one it connected to, so that a server that
	// reads it (ProFTPD's mod_proxy_protocol, say) logs and limits by the
	// real client. 0: none.
	UpstreamProxyProtocol int

	// OriginalDestination, if set, makes the listener transparent: it
	// returns where an accepted connection was going before the firewall
	// diverted it (SO_ORIGINAL_DST after REDIRECT, or the local address
	// after TPROXY), and the session connects there. The client then
	// believes it talks to that server, so 227 replies keep its address
	// and the client's data connections to it are intercepted by Redirect
	// (relay) or DNAT (kernel) pinholes.
	OriginalDestination func(net.Conn) (netip.AddrPort, error)

	// Forward makes the listener an explicit proxy: the client logs in as
	// "USER name@host[:port]", and the session connects to host (a name is
	// resolved within DataTimeout), within AllowDestinations, and logs in
	// there as name. Upstream is then empty.
	Forward bool

	// ProxyProtocol says that the listener reads PROXY protocol headers
	// from trusted load balancers (before the session starts). A session
	// from any other source that sends one is refused: the header is not
	// believed.
	ProxyProtocol bool

	// AllowDestinations limits where a transparent or forward session may
	// connect (see nat.CheckDestination: special-purpose addresses only
	// when listed, and none but listed ones when it is not empty). A
	// forward listener needs it (the configuration refuses one without).
	// The gateway's own addresses are never dialled.
	AllowDestinations []netip.Prefix

	// AllowPorts are the ports a transparent or forward session may
	// connect to. If empty, port 21 only.
	AllowPorts []nat.PortRange

	// LocalAddress reports whether an address is the gateway's own. If nil,
	// the addresses of the network interfaces are used.
	LocalAddress func(netip.Addr) bool

	// DataPath is RelayPath (the zero value) or KernelPath.
	DataPath DataPath

	// Connections, if set, tells the kernel path when the data connection
	// of a pinhole has been made, so that the pinhole goes at once
	// (rules.Conntrack). If nil, a kernel-path pinhole stays until
	// DataTimeout after the transfer command, a replacement or the
	// session's end.
	Connections ConnectionWatcher

	// ServerMode is how ftpgate asks the server for data connections.
	ServerMode ServerMode

	// ExtraVerbs are verbs, in upper case (letters only), that the
	// listener forwards besides those ftpgate knows (ftp.KnownVerb), for
	// servers with commands of their own. Any other verb is refused with
	// 502. A verb listed here must carry no address: ftpgate forwards its
	// line and its reply as they are.
	ExtraVerbs []string

	// AllowClients, if not empty, are the only client addresses (after
	// the PROXY protocol, if any) that may open a session; others get
	// 421 and are counted (reason allow_clients).
	AllowClients []netip.Prefix

	// ReadOnly refuses every command that changes the server's files
	// (writeVerbs) with 550; DenyCommands refuses these verbs (upper
	// case) with 502. Both are counted (reason policy).
	ReadOnly     bool
	DenyCommands []string

	// ClientTLS, with ClientTLSMode explicit or implicit, is the TLS
	// configuration towards clients (FTPS, RFC 4217): its certificate,
	// versions and session tickets. Each session clones it.
	ClientTLS *tls.Config

	// ClientTLSMode is TLSOff (the zero value: AUTH is refused),
	// TLSExplicit (AUTH TLS on the control connection) or TLSImplicit
	// (TLS from the first byte).
	ClientTLSMode TLSMode

	// TLSRequired refuses every command but AUTH, FEAT, QUIT, NOOP, SYST
	// and HELP before AUTH TLS, and every transfer without PROT P.
	TLSRequired bool

	// ClientTLSReuse requires a client's TLS data connection to resume its
	// control connection's TLS session (a stranger cannot).
	ClientTLSReuse bool

	// UpstreamTLS, with UpstreamTLSMode explicit or implicit, is the TLS
	// configuration towards the server: its roots, server name and
	// versions. The server's data connections are TLS too (PROT P), and
	// resume the control connection's session.
	UpstreamTLS *tls.Config

	// UpstreamTLSMode is TLSOff (the zero value), TLSExplicit (ftpgate
	// sends AUTH TLS after the server's greeting) or TLSImplicit.
	UpstreamTLSMode TLSMode

	// TLSHandshakeTimeout bounds each TLS handshake, with the client or
	// the server, on the control or a data connection. Zero means 10s.
	TLSHandshakeTimeout time.Duration

	// ServerCommands is which data commands ftpgate sends the server.
	// ClassicCommands needs a server on IPv4.
	ServerCommands ServerCommands

	// ClientAddress is written in 227 replies to clients. If zero, the
	// address the client connected to is used. Data listeners for clients
	// always bind the address the client connected to.
	ClientAddress netip.Addr

	// ClientAddressHost, if set, is a DNS name whose IPv4 address is
	// written in 227 replies instead (see ResolvedAddress); Serve keeps it
	// resolved.
	ClientAddressHost *ResolvedAddress

	// ClientPorts are the ports ftpgate listens on for clients' data
	// connections (passive mode towards the client). Required.
	ClientPorts *nat.PortPool

	// AdvertisePorts, if valid, are the ports written in 227/229 replies
	// instead of ClientPorts, port for port (a load balancer or a
	// Kubernetes NodePort that remaps them). Same length as ClientPorts.
	AdvertisePorts nat.PortRange

	// SourceCheck says which sources ftpgate accepts a data connection
	// from (docs/security.md).
	SourceCheck SourceCheck

	// TrustedSources are accepted as the source of data connections with
	// SourceCheckTrusted (load balancers that change the source).
	TrustedSources []netip.Prefix

	// ServerAddress is written in PORT/EPRT commands to the server. If zero,
	// the local address of the upstream control connection is used.
	ServerAddress netip.Addr

	// ServerPorts are the ports ftpgate listens on for the server's data
	// connections (active mode towards the server). Required.
	ServerPorts *nat.PortPool

	// LoginTimeout closes a session that has not logged in (no 230 from
	// the server) this long after it started. If zero,
	// DefaultLoginTimeout.
	LoginTimeout time.Duration

	// DataIdle closes a relayed data connection that has received no
	// byte, in either direction, for this long (outcome idle). Zero turns
	// it off.
	DataIdle time.Duration

	// IdleTimeout closes a session whose client sends nothing for this long
	// while no transfer runs. If zero, DefaultIdleTimeout.
	IdleTimeout time.Duration

	// DataTimeout bounds dialing the upstream server and establishing each
	// data connection (counted from the 227/PORT reply, and again from the
	// transfer command). If zero, DefaultDataTimeout.
	DataTimeout time.Duration

	// MaxLineBytes is the longest control line accepted, terminator
	// included. A longer client line is answered with 500 and the session
	// closed. If zero, DefaultMaxLineBytes.
	MaxLineBytes int

	// Pinholes opens the firewall pinhole of each data listener before its
	// port is announced. If nil, no firewall is managed.
	Pinholes rules.Pinholer

	// Metrics receives the proxy's counters. If nil, nothing is counted.
	Metrics *Metrics

	// LoginThrottle refuses the sessions of a client that failed to log in
	// too often. Share one among the listeners of a process. If nil, no
	// throttle.
	LoginThrottle *LoginThrottle

	// SessionRate and ListenerRate, in bytes per second, pace the relayed
	// data of each session and of all the listener's sessions together,
	// both directions together (rate_limit). 0: no limit. The kernel path
	// is not paced.
	SessionRate, ListenerRate int64

	// OnTransfer, if set, receives the audit record of every transfer
	// command (an xferlog writer, say) once the transfer line is logged.
	// It is called with the session's locks held: it must not block.
	OnTransfer func(Transfer)

	// Limiter admits sessions; share one among the listeners of a process.
	// If nil, sessions are not limited.
	Limiter *SessionLimiter

	// Logger receives the server's and its sessions' logs. If nil, logs are
	// discarded.
	Logger *slog.Logger

	// Dial connects to the upstream server. If nil, a net.Dialer is used.
	// The returned connection must be a *net.TCPConn for data relaying to
	// use splice(2); the control connection may be any net.Conn.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// DrainTimeout is how long Serve lets running transfers finish after
	// its context is done. Zero: sessions are closed at once.
	DrainTimeout time.Duration

	wg            sync.WaitGroup // one per running session
	upstreamState upstreamState
	rateOnce      sync.Once
	rate          *rate.Limiter // ListenerRate's bucket

	mu       sync.Mutex // guards sessions
	sessions map[*session]struct{}
}

// ConnectionWatcher reports the connections that the kernel forwards on
// the kernel data path (rules.Conntrack).
type ConnectionWatcher interface {
	// Expect registers interest in the next TCP connection from from to
	// to (its destination before any NAT) that is delivered to via (its
	// DNAT target). Call it before the pinhole opens; always Cancel what
	// it returns.
	Expect(from netip.Addr, to, via netip.AddrPort) ExpectedConnection
}

// ExpectedConnection is one connection that a ConnectionWatcher looks out
// for (*rules.Expectation).
type ExpectedConnection interface {
	// Done is closed when the connection has been seen, or when watching
	// failed: then Err says why.
	Done() <-chan struct{}
	// Err is nil while Done is open and once the connection was seen.
	Err() error
	// Lookup asks the kernel's connection table whether the connection
	// has been made, for when Done did not close in time: the kernel's
	// events are asynchronous, so they can be late, and lost when the
	// watcher falls behind.
	Lookup(ctx context.Context) (bool, error)
	// Counters returns the seen connection's byte counters from the
	// kernel's table, for its transfer line; ok is false where the kernel
	// keeps none (net.netfilter.nf_conntrack_acct off).
	Counters(ctx context.Context) (c rules.Counters, ok bool, err error)
	// Cancel unregisters; idempotent.
	Cancel()
}

// Serve accepts control connections on ln and runs one session for each
// until ctx is done. Then it closes ln, lets running transfers finish for
// up to DrainTimeout, ends every session (their clients are told 421) and
// returns once all have finished, with ctx's cause.
//
// Closing ln retires the Server (a configuration reload does it): it stops
// accepting, its sessions go on untouched until they end (or ctx is done,
// as above), and Serve returns nil. Any other accept error is returned.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.ClientPorts == nil || s.ServerPorts == nil {
		return errors.New("proxy: Server needs ClientPorts and ServerPorts")
	}
	if s.DataPath == KernelPath && (s.ServerMode != SameMode || s.Pinholes == nil) {
		return errors.New("proxy: the kernel data path needs ServerMode SameMode and Pinholes")
	}
	s.Metrics.InitListener(s.Name)
	defer s.Metrics.watchPorts(s.Name, s.ClientPorts, s.ServerPorts)()
	if r := s.ClientAddressHost; r != nil {
		// Resolved while the listener serves; a retired listener's
		// sessions keep the last address.
		resolveCtx, stopResolving := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); r.Run(resolveCtx, s.logger().With("listener", s.Name)) }()
		defer func() { stopResolving(); <-done }()
	}
	// Sessions outlive ctx by the drain: they get their own context.
	sessCtx, endSessions := context.WithCancelCause(context.WithoutCancel(ctx))
	defer endSessions(nil)
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	err := s.accept(ctx, sessCtx, ln)
	if ctx.Err() == nil && errors.Is(err, net.ErrClosed) {
		// Retired (a reload replaced the listener, see Serve): the sessions
		// go on untouched until they end, or until ctx is done.
		err = nil
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
	if ctx.Err() != nil {
		s.drain(context.Cause(ctx))
	}
	endSessions(context.Cause(ctx))
	s.wg.Wait()
	return err
}

// accept runs the accept loop until ctx is done or accepting fails.
func (s *Server) accept(ctx, sessCtx context.Context, ln net.Listener) error {
	var delay time.Duration // back-off for temporary accept errors, as net/http does
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			var ne net.Error
			if errors.As(err, &ne) && !errors.Is(err, net.ErrClosed) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.logger().Warn("accepting control connection", "listener", s.Name, "err", err, "retry_in", delay)
				select {
				case <-time.After(delay):
					continue
				case <-ctx.Done():
					return context.Cause(ctx)
				}
			}
			return fmt.Errorf("accepting on %s: %w", ln.Addr(), err)
		}
		delay = 0
		s.wg.Add(1)
		go s.serveConn(sessCtx, c)
	}
}

// drain lets the running sessions finish their transfers, for at most
// DrainTimeout: a session ends (with a 421) as soon as it has no transfer
// running and no reply outstanding. Then the caller ends the rest.
func (s *Server) drain(cause error) {
	if s.DrainTimeout <= 0 {
		return
	}
	s.mu.Lock()
	n := len(s.sessions)
	for ss := range s.sessions {
		ss.startDrain(cause)
	}
	s.mu.Unlock()
	if n == 0 {
		return
	}
	s.logger().Info("draining", "listener", s.Name, "sessions", n, "timeout_seconds", s.DrainTimeout.Seconds())
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.DrainTimeout):
		s.logger().Warn("drain timeout: closing the sessions left", "listener", s.Name)
	}
}

// serveConn runs in its own goroutine and owns c until it returns.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer s.wg.Done()
	if _, ok := c.(rawConn); ok {
		// A PROXY protocol header comes first: read and check it (the
		// listener's policy refuses one from an untrusted source) before
		// anything else, bounded in time.
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(nil); err != nil {
			s.logger().Warn("session refused", "listener", s.Name, "reason", "proxy_protocol",
				"from", c.(rawConn).Raw().RemoteAddr().String(), "err", err)
			s.Metrics.sessionRefused(s.Name, "proxy_protocol")
			c.Close()
			return
		}
		c.SetReadDeadline(time.Time{})
	}
	client := addrPortOf(c.RemoteAddr())
	log := s.logger().With("listener", s.Name, "client", client.String())
	if !s.clientAllowed(client.Addr()) {
		log.Warn("session refused", "reason", "allow_clients")
		s.Metrics.sessionRefused(s.Name, "allow_clients")
		refuse(c, 421, "Service not available from your address.")
		return
	}
	if banned, until := s.LoginThrottle.Banned(ClientKey(client.Addr(), s.clientIPv6Prefix()), time.Now()); banned {
		log.Warn("session refused", "reason", "login_throttle", "until", until.UTC().Format(time.RFC3339))
		s.Metrics.sessionRefused(s.Name, "login_throttle")
		refuse(c, 421, "Too many failed logins from your address, try again later.")
		return
	}
	id, release := uint64(0), func() {}
	if s.Limiter != nil {
		var err error
		id, release, err = s.Limiter.Acquire(client.Addr())
		if err != nil {
			log.Warn("session refused", "reason", "limit", "err", err)
			s.Metrics.sessionRefused(s.Name, "limit")
			refuse(c, 421, "Too many connections, try again later.")
			return
		}
	}
	defer release()
	ss := newSession(s, id, c, log.With("session", id))
	s.mu.Lock()
	if s.sessions == nil {
		s.sessions = make(map[*session]struct{})
	}
	s.sessions[ss] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.sessions, ss)
		s.mu.Unlock()
	}()
	ss.serve(ctx)
}

// clientAllowed reports whether a client at a may open a session: any,
// without AllowClients.
func (s *Server) clientAllowed(a netip.Addr) bool {
	if len(s.AllowClients) == 0 {
		return true
	}
	a = a.Unmap()
	for _, p := range s.AllowClients {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientIPv6Prefix is the prefix length by which the limiter counts IPv6
// clients, for the per-client port share too.
func (s *Server) clientIPv6Prefix() int {
	if s.Limiter == nil {
		return DefaultClientIPv6Prefix
	}
	return s.Limiter.IPv6Prefix()
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Server) loginTimeout() time.Duration {
	return cmp0(s.LoginTimeout, DefaultLoginTimeout)
}

func (s *Server) idleTimeout() time.Duration {
	return cmp0(s.IdleTimeout, DefaultIdleTimeout)
}

func (s *Server) dataTimeout() time.Duration {
	return cmp0(s.DataTimeout, DefaultDataTimeout)
}

func (s *Server) maxLineBytes() int {
	return cmp0(s.MaxLineBytes, DefaultMaxLineBytes)
}

// transparent reports whether sessions go to their original destination.
func (s *Server) transparent() bool { return s.OriginalDestination != nil }

// isLocal reports whether a is one of the gateway's own addresses.
func (s *Server) isLocal(a netip.Addr) bool {
	if s.LocalAddress != nil {
		return s.LocalAddress(a)
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true // fail closed
	}
	for _, ia := range addrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil && p.Addr().Unmap() == a.Unmap() {
			return true
		}
	}
	return false
}

func (s *Server) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if s.Dial != nil {
		return s.Dial(ctx, network, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// cmp0 returns v, or def if v is the zero value.
func cmp0[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// refuse writes one reply to a connection that gets no session and closes it.
func refuse(c net.Conn, code int, text string) {
	c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "%d %s\r\n", code, text)
	c.Close()
}

// addrPortOf returns the address of a TCP net.Addr, unmapped, or the zero
// AddrPort for other kinds of address.
func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
