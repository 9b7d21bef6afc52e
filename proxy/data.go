package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ftpgate/ftpgate/nat"
	"github.com/ftpgate/ftpgate/rules"
)

// maxArmedPerPool bounds the ports of one pool that a session may hold
// waiting for their connection: one per direction (client side, server
// side) is what clients use.
const maxArmedPerPool = 1

// errArmedLimit refuses a session one more port of a pool.
var errArmedLimit = errors.New("the session holds its data ports already")

// kernelPinholeGrace is how long a kernel-path pinhole stays after conntrack
// has seen its connection, for a retransmitted SYN.
const kernelPinholeGrace = 2 * time.Second

// kernelLookupTimeout bounds the lookup in the conntrack table of a
// kernel-path connection whose event did not come in time.
const kernelLookupTimeout = 5 * time.Second

// dataPort is a port that ftpgate announced for one data connection: taken
// from a pool, with the firewall pinhole that admits the one expected
// connection to it and, on the relay path, ftpgate's listener on it. On the
// kernel path, watch (if a ConnectionWatcher is set) reports when the
// kernel has seen the connection. Close removes the pinhole, closes the
// listener and returns the port; the session's teardown closes every
// dataPort still open.
type dataPort struct {
	ss           *session
	port         uint16
	addr         netip.Addr // the address port is held for in pool
	pool         *nat.PortPool
	ln           *net.TCPListener // nil on the kernel path
	pinhole      rules.Pinhole    // zero if no firewall is managed
	closePinhole func(context.Context) error
	watch        ExpectedConnection // nil if nothing watches the kernel
	armed        bool               // waits for its connection; guarded by ss.portsMu
	once         sync.Once
}

// openDataPort takes a port of addr from pool (addr is the address the
// peer connects to: the pinhole's destination, so that no two pinholes of
// the process share a match); on the relay path (listen valid) it listens
// on listen:port, skipping ports that another program holds, a bounded
// number of times. Then it opens the pinhole that pinhole(port) describes,
// before any reply announces the port.
//
// SECURITY: a session holds at most maxArmedPerPool ports of a pool
// waiting for their connection (one per direction is what clients use),
// and a client at most its share of the pool (PortPool.SetOwnerShare): one
// client cannot take the ports that others need (docs/security.md,
// "Exhaustion"). Refusals wrap errArmedLimit or nat.ErrOwnerShare.
func (ss *session) openDataPort(pool *nat.PortPool, addr, listen netip.Addr, pinhole func(port uint16) rules.Pinhole) (*dataPort, error) {
	ss.portsMu.Lock()
	armed := ss.armed[pool]
	ss.portsMu.Unlock()
	if armed >= maxArmedPerPool {
		return nil, fmt.Errorf("%w: %d port(s) of %s wait for their connection", errArmedLimit, armed, pool.Range())
	}
	tries := min(pool.Range().Len(), 32)
	for range tries {
		port, err := pool.Take(addr, ss.clientKey)
		if err != nil {
			return nil, fmt.Errorf("taking a data port: %w", err)
		}
		dp := &dataPort{ss: ss, port: port, addr: addr, pool: pool}
		if listen.IsValid() {
			dp.ln, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(listen, port)))
			if err != nil {
				pool.Release(addr, port)
				if errors.Is(err, syscall.EADDRINUSE) {
					continue
				}
				return nil, fmt.Errorf("listening on %s port %d: %w", listen, port, err)
			}
		}
		if err := dp.openPinhole(pinhole(port)); err != nil {
			if dp.ln != nil {
				dp.ln.Close()
			}
			pool.Release(addr, port)
			return nil, err
		}
		ss.portsMu.Lock()
		ss.ports[dp] = struct{}{}
		ss.armed[pool]++
		dp.armed = true
		ss.portsMu.Unlock()
		return dp, nil
	}
	return nil, fmt.Errorf("listening on %s: no free port in %s after %d tries", listen, pool.Range(), tries)
}

// openPinhole installs p, if the session manages a firewall. On the kernel
// path it first asks to be told when the connection is made.
func (dp *dataPort) openPinhole(p rules.Pinhole) error {
	ss := dp.ss
	if ss.srv.Pinholes == nil {
		return nil
	}
	p.Session, p.Seq = ss.id, int(ss.pinholeSeq.Add(1))
	if dp.ln == nil && ss.srv.Connections != nil {
		dp.watch = ss.srv.Connections.Expect(p.From, p.To, p.DNATTo)
	}
	closeFn, err := ss.srv.Pinholes.Open(ss.ctx, p)
	if err != nil {
		if dp.watch != nil {
			dp.watch.Cancel()
		}
		return fmt.Errorf("opening pinhole %s: %w", p, err)
	}
	dp.pinhole, dp.closePinhole = p, closeFn
	return nil
}

// Close removes the pinhole, closes the listener and returns the port to
// the pool. It is idempotent and safe for concurrent use.
func (dp *dataPort) Close() {
	dp.once.Do(func() {
		if dp.ln != nil {
			dp.ln.Close()
		}
		if dp.watch != nil {
			dp.watch.Cancel()
		}
		if dp.closePinhole != nil {
			// The session may be ending: removal must still happen.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(dp.ss.ctx), 10*time.Second)
			if err := dp.closePinhole(ctx); err != nil {
				dp.ss.log.Error("removing pinhole", "pinhole", dp.pinhole.String(), "err", err)
			}
			cancel()
		}
		dp.pool.Release(dp.addr, dp.port)
		dp.disarm()
		dp.ss.portsMu.Lock()
		delete(dp.ss.ports, dp)
		dp.ss.portsMu.Unlock()
	})
}

// disarm records that dp no longer waits for its connection: it has come,
// or dp is closed. Idempotent.
func (dp *dataPort) disarm() {
	ss := dp.ss
	ss.portsMu.Lock()
	defer ss.portsMu.Unlock()
	if dp.armed {
		dp.armed = false
		ss.armed[dp.pool]--
	}
}

// dataEnd is how ftpgate gets one end of a data connection: it accepts on ln
// (from peer only) or dials dialTo from the local address from.
type dataEnd struct {
	ln     *dataPort
	peer   netip.Addr
	dialTo netip.AddrPort
	from   netip.Addr
}

func (e dataEnd) String() string {
	if e.ln != nil {
		return fmt.Sprintf("listen %s from %s", e.ln.ln.Addr(), e.peer)
	}
	return "dial " + e.dialTo.String()
}

func (e dataEnd) close() {
	if e.ln != nil {
		e.ln.Close()
	}
}

func (e dataEnd) disarm() {
	if e.ln != nil {
		e.ln.disarm()
	}
}

// dataLink is one data connection negotiated on a session: it obtains both
// ends, copies between them and closes them. It is owned by its own
// goroutine (run); its context, a child of the session's, closes everything
// it holds when cancelled.
type dataLink struct {
	ss             *session
	id             int
	client, server dataEnd
	ctx            context.Context
	cancel         context.CancelCauseFunc
	timer          *time.Timer // cancels the link if it is not established in time

	// mode is how the client asked: "passive" (PASV/EPSV) or "active"
	// (PORT/EPRT).
	mode string
	// kernel, on the kernel path, is the port whose pinholes let the
	// kernel forward the connection; the link then copies nothing.
	kernel *dataPort
	// clientTLS: the client's data connection is a TLS one (PROT P).
	clientTLS bool

	// clientReady is closed once the client end is connected, or the
	// link has ended: a transfer's final reply waits for it.
	clientReady chan struct{}
	readyOnce   sync.Once
	clientOK    atomic.Bool // the client end was connected

	command string // the transfer command that used it; guarded by ss.mu
	// transfer is that command's audit record, and result the link's end
	// once known: whichever is set second completes the record's data
	// half. Guarded by ss.mu.
	transfer *transferRecord
	result   *dataResult
	// established is set once both ends are connected; guarded by ss.mu.
	established bool
	used        chan struct{} // closed when a transfer command uses the link
}

// startLinkLocked starts a dataLink that relays between ce and se. It runs
// with ss.mu held.
func (ss *session) startLinkLocked(ce, se dataEnd, cs clientSide) *dataLink {
	return ss.newLinkLocked(func(l *dataLink) {
		l.client, l.server, l.mode, l.clientTLS = ce, se, cs.mode(), cs.protP
	})
}

// startKernelLinkLocked starts a dataLink on the kernel path, for the
// pinholes of dp. It runs with ss.mu held.
func (ss *session) startKernelLinkLocked(dp *dataPort, mode string) *dataLink {
	return ss.newLinkLocked(func(l *dataLink) { l.kernel, l.mode = dp, mode })
}

func (ss *session) newLinkLocked(init func(*dataLink)) *dataLink {
	ss.linkSeq++
	l := &dataLink{ss: ss, id: ss.linkSeq, used: make(chan struct{}), clientReady: make(chan struct{})}
	init(l)
	l.ctx, l.cancel = context.WithCancelCause(ss.ctx)
	l.timer = time.AfterFunc(ss.srv.dataTimeout(), func() { l.cancel(errDataTimeout) })
	ss.links++
	ss.wg.Add(1)
	go l.run()
	return l
}

// setClientReady closes clientReady; idempotent.
func (l *dataLink) setClientReady() { l.readyOnce.Do(func() { close(l.clientReady) }) }

// useLocked records the transfer command that uses the link and restarts
// its establishment timer. It runs with ss.mu held.
func (l *dataLink) useLocked(rec *transferRecord, timeout time.Duration) {
	if l.command == "" {
		close(l.used)
	}
	l.command = rec.t.Command
	if rec.t.Path != "" {
		l.command += " " + rec.t.Path
	}
	l.transfer, rec.link = rec, l
	if l.result != nil {
		rec.dataDone(*l.result)
	}
	if !l.established {
		l.timer.Reset(timeout)
	}
}

// finish records how the link ended, for its transfer command's record
// (now, or when a command uses it). Only the first call counts.
func (l *dataLink) finish(res dataResult) {
	ss := l.ss
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if l.result != nil {
		return
	}
	res.path, res.mode = l.dataPath(), l.mode
	res.attrs = append([]any{"link", l.id}, res.attrs...)
	l.result = &res
	if l.transfer != nil {
		l.transfer.dataDone(res)
	}
}

// dataPath is the path the link's data takes.
func (l *dataLink) dataPath() DataPath {
	if l.kernel != nil {
		return KernelPath
	}
	return RelayPath
}

// establishedLocked marks the link established (or finished): it no longer
// counts against the pending data connections of its session. It runs with
// ss.mu held; only the first call counts.
func (l *dataLink) establishedLocked() {
	if !l.established {
		l.established = true
		l.ss.links--
	}
}

// release ends a link that no transfer command used. Its ports stop
// counting against the session at once, so that a new negotiation may
// have others; the link's goroutine closes them, with their listeners and
// pinholes (network and firewall I/O: never under ss.mu, which the caller
// holds).
func (l *dataLink) release(cause error) {
	l.cancel(cause)
	l.client.disarm()
	l.server.disarm()
	if l.kernel != nil {
		l.kernel.disarm()
	}
}

// closePorts closes the link's ports, with their listeners and pinholes,
// now rather than when its goroutine gets to it: a replacing negotiation
// may need them. Not with ss.mu held. Idempotent.
func (l *dataLink) closePorts() {
	l.client.close()
	l.server.close()
	if l.kernel != nil {
		l.kernel.Close()
	}
}

func (l *dataLink) run() {
	ss := l.ss
	defer ss.wg.Done()
	defer func() {
		l.setClientReady()
		l.timer.Stop()
		l.cancel(nil)
		// Unless it said otherwise, the link never carried data.
		l.finish(dataResult{outcome: "failed"})
		ss.mu.Lock()
		if r := l.result; l.transfer == nil && r.toClient+r.toServer > 0 {
			// Data moved, and no transfer command claimed it.
			ss.log.Info("data connection without a transfer command", append([]any{
				"bytes_to_client", r.toClient, "bytes_to_server", r.toServer}, r.attrs...)...)
		}
		ss.mu.Unlock()
		l.client.close()
		l.server.close()
		if l.kernel != nil {
			l.kernel.Close()
		}
		ss.mu.Lock()
		l.establishedLocked()
		if ss.plan == l {
			ss.plan = nil
		}
		ss.mu.Unlock()
	}()
	if l.kernel != nil {
		// The kernel carries the data: nothing to wait for.
		l.clientOK.Store(true)
		l.setClientReady()
		l.watchKernel()
		return
	}
	cc, sc, err := l.establish()
	if err != nil {
		ss.mu.Lock()
		cmd := l.command
		ss.mu.Unlock()
		switch {
		case cmd == "":
			// No transfer command used it: replaced, timed out, or its
			// session ended.
			ss.log.Debug("data connection unused", "link", l.id, "err", err)
		case errors.Is(err, errTransferRefused):
			// The server refused the command (550, say): no data
			// connection was to come.
			l.finish(dataResult{outcome: "refused"})
		default:
			ss.log.Warn("data connection failed", "link", l.id, "command", cmd, "err", err)
			ss.srv.Metrics.dataConnection(ss.srv.Name, RelayPath, "failed", 0, 0)
		}
		return
	}
	ss.mu.Lock()
	l.establishedLocked()
	l.timer.Stop()
	ss.mu.Unlock()
	l.relay(cc, sc)
}

// watchKernel waits, on the kernel path, until the kernel has seen the
// data connection (then the pinholes go at once: conntrack carries the
// flow), the link times out, or it is replaced or its session ends. Then it
// logs the transfer line, without byte counts: the data never entered
// ftpgate.
//
// The kernel reports the connection asynchronously: a short transfer can
// be over, and its session ended, before the event has been read. So a
// link that a transfer command used and that ends without the event asks
// the conntrack table whether the connection was made.
func (l *dataLink) watchKernel() {
	ss := l.ss
	w := l.kernel.watch
	seen := l.waitKernelEvent(w)
	if seen {
		l.kernel.disarm()
		ss.mu.Lock()
		l.establishedLocked()
		l.timer.Stop()
		ss.mu.Unlock()
		// The first SYN created the conntrack entry; if it or its answer is
		// lost, the retransmitted SYN is still NEW and needs the pinhole.
		select {
		case <-time.After(kernelPinholeGrace):
		case <-l.ctx.Done():
		}
	}
	l.kernel.Close()
	if seen {
		// The connection may come before the transfer command.
		select {
		case <-l.used:
		case <-l.ctx.Done():
		}
	}
	ss.mu.Lock()
	cmd := l.command
	ss.mu.Unlock()
	seenBy := "event"
	if !seen && cmd != "" && w != nil && !errors.Is(context.Cause(l.ctx), errTransferRefused) {
		// Detached from the link's context, which is done: the lookup
		// decides what the transfer line says.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(l.ctx), kernelLookupTimeout)
		found, err := w.Lookup(ctx)
		cancel()
		switch {
		case err != nil:
			ss.log.Warn("looking up a kernel-path data connection in the conntrack table", "link", l.id, "err", err)
		case found:
			seen, seenBy = true, "lookup"
			ss.log.Info("kernel-path data connection found in the conntrack table: its event came late or was lost",
				"link", l.id, "pinhole", l.kernel.pinhole.String())
		}
	}
	pinhole := l.kernel.pinhole.String()
	switch cause := context.Cause(l.ctx); {
	case seen:
		res := dataResult{outcome: "forwarded", attrs: []any{"pinhole", pinhole, "seen_by", seenBy}}
		l.kernelCounters(w, &res)
		l.finish(res)
		ss.srv.Metrics.dataConnection(ss.srv.Name, KernelPath, "forwarded", 0, 0)
	case cmd != "" && errors.Is(cause, errTransferRefused):
		l.finish(dataResult{outcome: "refused", attrs: []any{"pinhole", pinhole}})
	case cmd != "":
		l.finish(dataResult{outcome: "expired", attrs: []any{"pinhole", pinhole, "cause", cause}})
		ss.srv.Metrics.dataConnection(ss.srv.Name, KernelPath, "expired", 0, 0)
	default:
		ss.log.Debug("data connection unused", "link", l.id, "err", context.Cause(l.ctx))
	}
}

// kernelCounters puts in res the bytes of a forwarded kernel-path
// transfer, from conntrack's counters, once the transfer's final reply has
// come (the data connection has ended by then; its entry stays in the
// table a while), if the kernel keeps counters (nf_conntrack_acct). The
// counters are of IP packets; the payload is estimated by taking off each
// packet's IP and TCP headers (with timestamps, Linux's default: 52 bytes
// over IPv4, 72 over IPv6). An estimate, a little high: where GRO merged
// segments, one counted packet carried several headers (+0.08% to +0.27%
// for a 256 MiB transfer over veth).
func (l *dataLink) kernelCounters(w ExpectedConnection, res *dataResult) {
	ss := l.ss
	ss.mu.Lock()
	rec := l.transfer
	ss.mu.Unlock()
	if w == nil || rec == nil {
		return
	}
	select {
	case <-rec.answered:
	default:
		select {
		case <-rec.answered:
		case <-ss.ctx.Done():
			return // the session ended first: no final reply, no counters
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(l.ctx), kernelLookupTimeout)
	defer cancel()
	c, ok, err := w.Counters(ctx)
	switch {
	case err != nil:
		ss.log.Debug("reading a kernel-path transfer's counters", "link", l.id, "err", err)
		return
	case !ok:
		return
	}
	header := uint64(52)
	if !ss.clientPeer.Addr().Unmap().Is4() {
		header = 72
	}
	payload := func(bytes, packets uint64) int64 {
		return int64(bytes - min(bytes, packets*header))
	}
	orig, reply := payload(c.OrigBytes, c.OrigPackets), payload(c.ReplyBytes, c.ReplyPackets)
	// The side that connected sent the original direction: the client in
	// passive mode, the server in active mode.
	res.toServer, res.toClient = orig, reply
	if l.mode == "active" {
		res.toClient, res.toServer = orig, reply
	}
	res.attrs = append(res.attrs, "bytes_from", "conntrack")
}

// waitKernelEvent waits until w reports the link's connection (true) or the
// link ends (false). Without a watcher, or once watching failed (logged:
// an error is never taken for a connection), the pinholes stay until the
// link ends.
func (l *dataLink) waitKernelEvent(w ExpectedConnection) bool {
	if w == nil {
		<-l.ctx.Done()
		return false
	}
	select {
	case <-w.Done():
	case <-l.ctx.Done():
		// When both are ready select picks either: an event that came as
		// the link ended still counts.
		select {
		case <-w.Done():
		default:
			return false
		}
	}
	if err := w.Err(); err != nil {
		l.ss.log.Warn("watching conntrack failed: the kernel-path pinhole stays until the link ends", "link", l.id, "err", err)
		<-l.ctx.Done()
		return false
	}
	return true
}

// establish obtains both ends concurrently. If either fails, the other is
// abandoned and any connection already made is reset, so that the server
// reports the failed transfer instead of seeing a clean, empty one.
//
// ftpgate dials a client (its PORT or EPRT) only once a transfer command
// has used the link and the server's connection is there: nothing
// connects to the client for a negotiation that no transfer follows.
func (l *dataLink) establish() (cc, sc net.Conn, err error) {
	type result struct {
		c   net.Conn
		err error
	}
	serverc := make(chan result, 1)
	go func() {
		c, err := l.obtain(l.server, "server")
		if err == nil && l.ss.upTLSConfig != nil {
			var tc net.Conn
			if tc, err = l.serverDataTLS(c); err != nil {
				abort(c)
				c = nil
			} else {
				c = tc
			}
		}
		if err != nil {
			l.cancel(err)
		}
		serverc <- result{c, err}
	}()
	var cerr error
	var sr result
	if l.client.ln == nil {
		sr = <-serverc
		if sr.err == nil {
			select {
			case <-l.used:
				cc, cerr = l.obtain(l.client, "client")
				cc, cerr = l.secureClient(cc, cerr)
				l.clientOK.Store(cerr == nil)
				l.setClientReady()
			case <-l.ctx.Done():
				cerr = fmt.Errorf("before a transfer command: %w", context.Cause(l.ctx))
			}
		}
	} else {
		cc, cerr = l.obtain(l.client, "client") // in TLS already if PROT P: see obtain
		if cerr != nil {
			l.cancel(cerr)
		}
		l.clientOK.Store(cerr == nil)
		l.setClientReady()
		sr = <-serverc
	}
	sc = sr.c
	if cerr != nil || sr.err != nil {
		abort(cc)
		abort(sc)
		return nil, nil, errors.Join(cerr, sr.err)
	}
	return cc, sc, nil
}

// secureClient makes the client's end c a TLS connection if the link is
// PROT P (and obtaining it did not fail: err); on a failed handshake it
// resets c.
func (l *dataLink) secureClient(c net.Conn, err error) (net.Conn, error) {
	if err != nil || !l.clientTLS {
		return c, err
	}
	tc, err := l.clientDataTLS(c)
	if err != nil {
		abort(c)
		return nil, err
	}
	return tc, nil
}

// obtain accepts or dials one end of the link.
func (l *dataLink) obtain(e dataEnd, side string) (net.Conn, error) {
	if e.ln == nil {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(e.from, 0))}
		c, err := d.DialContext(l.ctx, "tcp", e.dialTo.String())
		if err != nil {
			if l.ctx.Err() != nil {
				err = context.Cause(l.ctx)
			}
			return nil, fmt.Errorf("dialing %s at %s: %w", side, e.dialTo, err)
		}
		return c, nil
	}
	stop := context.AfterFunc(l.ctx, e.ln.Close)
	defer stop()
	// One connection per negotiation: the listener closes once it is made.
	defer e.ln.Close()
	// Strangers are turned away one by one until the peer comes or the
	// link's time is up (data_timeout): a stranger cannot make the link
	// give up, and so cannot cancel the peer's transfer.
	for {
		c, err := e.ln.ln.AcceptTCP()
		if err != nil {
			if l.ctx.Err() != nil {
				err = context.Cause(l.ctx)
			}
			return nil, fmt.Errorf("accepting %s on %s: %w", side, e.ln.ln.Addr(), err)
		}
		from := addrPortOf(c.RemoteAddr())
		if l.ss.srv.sourceAllowed(from.Addr(), e.peer) {
			if side == "client" && l.clientTLS {
				// PROT P: the peer is who completes the handshake (and,
				// with ClientTLSReuse, resumes the control connection's
				// session); anyone else is one more stranger.
				tc, err := l.clientDataTLS(c)
				if err != nil {
					l.ss.log.Info("client data connection refused", "link", l.id, "from", from.String(), "err", err)
					abort(c)
					continue
				}
				e.ln.disarm()
				return tc, nil
			}
			e.ln.disarm()
			return c, nil
		}
		// SECURITY: a data connection from anyone but the expected peer is
		// closed and logged (port theft, docs/security.md).
		l.ss.reject("data connection refused", "theft", "link", l.id,
			"side", side, "from", from.String(), "expected", e.peer.String())
		abort(c)
	}
}

// sourceAllowed reports whether a data connection from from may stand for
// the expected peer, under the server's SourceCheck.
func (s *Server) sourceAllowed(from, peer netip.Addr) bool {
	switch {
	case from == peer, s.SourceCheck == SourceCheckOff:
		return true
	case s.SourceCheck == SourceCheckTrusted:
		for _, p := range s.TrustedSources {
			if p.Contains(from) {
				return true
			}
		}
	}
	return false
}

// relay copies between the client's and the server's data connections until
// both directions are done, then closes both and logs one transfer line.
func (l *dataLink) relay(cc, sc net.Conn) {
	ss := l.ss
	ss.transfers.Add(1)
	ss.srv.Metrics.transfers(ss.srv.Name, RelayPath, 1)
	defer func() {
		ss.srv.Metrics.transfers(ss.srv.Name, RelayPath, -1)
		ss.lastTransfer.Store(time.Now().UnixNano())
		ss.transfers.Add(-1)
		ss.mu.Lock()
		ss.endIfDrainedLocked()
		ss.mu.Unlock()
	}()
	stop := context.AfterFunc(l.ctx, func() { abort(cc); abort(sc) })
	defer stop()

	start := time.Now()
	idle := l.watchIdle(cc, sc)
	pace := ss.dataPacer()
	var toServer int64
	var upErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		toServer, upErr = l.copyData(sc, cc, ss.srv.Metrics.byteCounter(ss.srv.Name, "to_server"), pace)
		if upErr == nil {
			idle.halt()
		}
	}()
	toClient, downErr := l.copyData(cc, sc, ss.srv.Metrics.byteCounter(ss.srv.Name, "to_client"), pace)
	if downErr == nil {
		idle.halt()
	}
	<-done
	outcome := "ok"
	if err := errors.Join(downErr, upErr); err != nil {
		outcome = "aborted"
		if l.ctx.Err() != nil {
			err = context.Cause(l.ctx)
		}
		ss.log.Debug("data connection aborted", "link", l.id, "err", err)
	}
	if idle.end() {
		outcome = "idle"
	}
	cc.Close()
	sc.Close()
	l.finish(dataResult{clientData: cc.RemoteAddr().String(), serverData: sc.RemoteAddr().String(),
		toClient: toClient, toServer: toServer, outcome: outcome,
		attrs: []any{"data_seconds", time.Since(start).Seconds()}})
	ss.srv.Metrics.dataConnection(ss.srv.Name, RelayPath, outcome, toClient, toServer)
}

// progressChunk is how much a relayed direction copies between two
// additions to ftpgate_data_bytes_total, so that rate() is true while a
// long transfer runs, not only once it ends.
const progressChunk = 1 << 20

// copyData copies src to dst, and counts what it copied with count as it
// goes, paced by pace (rate_limit). io.Copy between two connections that are *net.TCPConn underneath
// splices on Linux, chunk by chunk too (the limit of an io.LimitedReader
// is passed to splice): the data never enters user space (a TLS
// connection, say, is copied through user space). On EOF it half-closes
// dst, and bounds how long the other direction may take to finish; on an
// error it resets both connections, so that neither peer mistakes an
// aborted transfer for a complete one.
func (l *dataLink) copyData(dst, src net.Conn, count func(int64), pace pacer) (int64, error) {
	var n int64
	var err error
	chunk := pace.chunk()
	for err == nil {
		var k int64
		k, err = io.CopyN(dst, src, chunk)
		n += k
		count(k)
		if perr := pace.pay(l.ctx, k); perr != nil && err == nil {
			err = fmt.Errorf("waiting for the rate limit: %w", perr)
		}
	}
	if err == io.EOF {
		err = nil // src ended before a chunk was full: the end of the data
	}
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The other direction ended cleanly and this one had nothing
			// more to say (a receiver that does not close).
			return n, nil
		}
		abort(dst)
		abort(src)
		return n, fmt.Errorf("copying %s to %s: %w", src.RemoteAddr(), dst.RemoteAddr(), err)
	}
	closeWrite(dst)
	// FTP data flows one way; the receiver closes once it sees EOF. Do not
	// wait for it forever.
	dst.SetReadDeadline(time.Now().Add(l.ss.srv.dataTimeout()))
	return n, nil
}

// abort resets c (RST instead of FIN) where it can, and closes it. c may
// be nil.
func abort(c net.Conn) {
	if c == nil {
		return
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
