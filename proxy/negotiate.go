package proxy

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/ftpgate/ftpgate/nat"
	"github.com/ftpgate/ftpgate/proxy/ftp"
	"github.com/ftpgate/ftpgate/rules"
)

// clientSide is how the client asked for its data connection, and the
// path chosen for it.
type clientSide struct {
	verb    string         // PASV, EPSV, PORT or EPRT
	passive bool           // PASV/EPSV: ftpgate listens for the client
	target  netip.AddrPort // PORT/EPRT: where ftpgate connects, bounce-checked
	// path carries this data connection: chosen per negotiation (in
	// negotiate), from the listener's data path and PROT.
	path DataPath
	// protP: the client's data connection is a TLS one.
	protP bool
}

func (cs clientSide) extended() bool { return cs.verb == "EPSV" || cs.verb == "EPRT" }

// mode is "passive" or "active", for logs.
func (cs clientSide) mode() string {
	if cs.passive {
		return "passive"
	}
	return "active"
}

// negotiatePassive handles the client's PASV or EPSV.
func (ss *session) negotiatePassive(cmd ftp.Command) error {
	if cmd.Verb == "PASV" && !ss.clientAdvertise().Is4() {
		// A 227 reply can only carry an IPv4 address (RFC 2428 section 1).
		ss.replyLocal(425, "PASV needs IPv4, use EPSV.")
		return nil
	}
	if cmd.Verb == "EPSV" && cmd.Arg != "" {
		// "EPSV <net-prt>" asks for a network protocol (RFC 2428 section 3).
		want := "1"
		if !ss.clientLocal.Addr().Is4() {
			want = "2"
		}
		if cmd.Arg != want {
			ss.replyLocal(522, fmt.Sprintf("Network protocol not supported, use (%s).", want))
			return nil
		}
	}
	return ss.negotiate(clientSide{verb: cmd.Verb, passive: true})
}

// negotiateActive handles the client's PORT or EPRT.
func (ss *session) negotiateActive(cmd ftp.Command) error {
	parse := nat.ParsePORT
	if cmd.Verb == "EPRT" {
		parse = nat.ParseEPRT
	}
	req, err := parse(cmd.Arg)
	switch {
	case errors.Is(err, nat.ErrFamily):
		ss.reject("command refused", "family", "verb", cmd.Verb, "err", err)
		ss.replyLocal(522, "Network protocol not supported, use (1,2).")
		return nil
	case err != nil:
		ss.reject("command refused", "syntax", "verb", cmd.Verb, "err", err)
		ss.replyLocal(501, "Syntax error in parameters or arguments.")
		return nil
	}
	// SECURITY: ftpgate connects only to the client's own control address
	// and never to a port below 1024 (FTP bounce, docs/security.md). The
	// policy lives in nat.ActiveTarget.
	target, err := nat.ActiveTarget(ss.clientPeer.Addr(), req)
	switch {
	case errors.Is(err, nat.ErrLowPort):
		ss.reject("command refused", "low_port", "verb", cmd.Verb, "err", err)
		ss.replyLocal(504, "Command not implemented for that parameter: port below 1024.")
		return nil
	case err != nil:
		ss.reject("command refused", "bounce", "verb", cmd.Verb, "err", err)
		ss.replyLocal(501, "Illegal address: data connections go to your own address only.")
		return nil
	}
	if target.Addr() != req.Addr().Unmap() {
		ss.log.Info("client advertised a private address, using its control address",
			"verb", cmd.Verb, "advertised", req.String(), "using", target.String())
	}
	return ss.negotiate(clientSide{verb: cmd.Verb, target: target})
}

// negotiate asks the server for a data connection, passive or active as
// ServerMode says, and queues the interception of its reply.
func (ss *session) negotiate(cs clientSide) error {
	cs.path = ss.srv.DataPath
	ss.mu.Lock()
	cs.protP = ss.protP
	if cs.protP || ss.upTLSConfig != nil {
		cs.path = RelayPath // TLS data is relayed: the kernel cannot decrypt
	}
	pending := ss.links + ss.negotiating
	if ss.plan != nil {
		pending-- // about to be replaced
	}
	if pending >= maxLinksPerSession {
		ss.mu.Unlock()
		ss.reject("command refused", "limit", "verb", cs.verb, "pending_data_connections", pending)
		ss.replyLocal(425, "Too many pending data connections.")
		return nil
	}
	// A new PASV/PORT makes the server forget the last one: give up the
	// unused plan now, ports included (closed below, without mu), so that
	// the new one may take them.
	replaced := ss.plan
	if replaced != nil {
		replaced.release(errReplaced)
		ss.plan = nil
	}
	closeReplaced := func() {
		if replaced != nil {
			replaced.closePorts()
		}
	}
	serverPassive := ss.srv.ServerMode == PassiveMode || (ss.srv.ServerMode == SameMode && cs.passive)
	// SECURITY: one data port of each range waiting for its connection per
	// session (docs/security.md, "Exhaustion"); decided now, in turn, not
	// when the server's reply comes.
	ss.portsMu.Lock()
	busy := cs.passive && ss.armed[ss.srv.ClientPorts] >= maxArmedPerPool ||
		!serverPassive && ss.armed[ss.srv.ServerPorts] >= maxArmedPerPool
	ss.portsMu.Unlock()
	if busy {
		ss.mu.Unlock()
		closeReplaced()
		ss.reject("data connection refused", "limit", "verb", cs.verb, "err", errArmedLimit)
		ss.replyLocal(425, "Can't open data connection: one still waits for its connection.")
		return nil
	}
	ss.negotiating++
	ss.mu.Unlock()
	closeReplaced()

	ext := cs.extended() || !ss.serverPeer.Addr().Is4()
	switch ss.srv.ServerCommands {
	case ClassicCommands:
		ext = !ss.serverPeer.Addr().Is4() // 227 and PORT carry IPv4 only
	case ExtendedCommands:
		ext = true
	}
	if cs.path == KernelPath && ss.clientPeer.Addr().Is4() != ss.serverPeer.Addr().Is4() {
		// NAT rules cannot turn an IPv6 connection into an IPv4 one.
		ss.mu.Lock()
		ss.negotiating--
		ss.mu.Unlock()
		ss.reject("command refused", "family", "verb", cs.verb,
			"err", "the kernel data path cannot translate between IPv4 and IPv6; use data.path relay")
		ss.replyLocal(425, "Can't open data connection across address families on this path.")
		return nil
	}
	if serverPassive {
		verb := "PASV"
		if ext {
			verb = "EPSV"
		}
		ss.srv.Metrics.rewrite(ss.srv.Name, verb)
		return ss.forward(ftp.AppendCommand(nil, verb, ""), expectation{
			verb:      verb,
			passive:   true,
			intercept: func(reply []byte, code int) []byte { return ss.onPassiveReply(cs, verb, reply, code) },
		})
	}

	sp, err := ss.openServerPort(cs)
	if err != nil {
		ss.mu.Lock()
		ss.negotiating--
		ss.mu.Unlock()
		ss.reject("data connection refused", dataPortRefusal(err), "err", fmt.Errorf("opening a data port for the server: %w", err))
		ss.replyLocal(425, "Can't open data connection.")
		return nil
	}
	// server <- "PORT <server_address>,<sp.port>": the server connects to
	// ftpgate's server-side port.
	adv := netip.AddrPortFrom(ss.serverAdvertise(), sp.port)
	verb, arg := "PORT", nat.FormatPORT(adv)
	if ext || !adv.Addr().Is4() {
		verb, arg = "EPRT", nat.FormatEPRT(adv)
	}
	ss.srv.Metrics.rewrite(ss.srv.Name, verb)
	return ss.forward(ftp.AppendCommand(nil, verb, arg), expectation{
		verb:      verb,
		intercept: func(reply []byte, code int) []byte { return ss.onActiveReply(cs, sp, reply, code) },
	})
}

// openServerPort opens the port that the server connects to in active mode,
// announced in ftpgate's PORT/EPRT. S is the server, G:port the port:
//
//	relay:  ftpgate listens on G:port
//	        -A FTPGATE-INPUT -s S -d G -p tcp --dport port -m conntrack --ctstate NEW -j ACCEPT
//	kernel: the kernel delivers the connection to the client's PORT address C:r
//	        -t nat -A FTPGATE-PREROUTING -s S -d G -p tcp --dport port ... -j DNAT --to-destination C:r
//	        -A FTPGATE-FORWARD -s S -d C -p tcp --dport r ... -j ACCEPT
//	        -t nat -A FTPGATE-POSTROUTING ... -j SNAT --to-source V (V: the address the
//	        client believes its server has, unless the connection comes from it already)
func (ss *session) openServerPort(cs clientSide) (*dataPort, error) {
	local := ss.serverLocal.Addr()
	to := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(local, port) }
	if cs.path == KernelPath {
		return ss.openDataPort(ss.srv.ServerPorts, local, netip.Addr{}, func(port uint16) rules.Pinhole {
			p := rules.Pinhole{From: ss.serverPeer.Addr(), To: to(port), Deliver: rules.DNAT, DNATTo: cs.target}
			if v := ss.clientView(); v != p.From {
				p.SNATTo = v
			}
			return p
		})
	}
	return ss.openDataPort(ss.srv.ServerPorts, local, local, func(port uint16) rules.Pinhole {
		return rules.Pinhole{From: ss.serverPeer.Addr(), To: to(port), Deliver: rules.AcceptLocal}
	})
}

// openClientPort opens the port announced to the client in 227/229. C is
// the client, D:port where its connection arrives (the address it connected
// to, or in transparent mode the server's), target the server's passive
// address S:p:
//
//	relay:        ftpgate listens on port
//	              -A FTPGATE-INPUT -s C -d D -p tcp --dport port -m conntrack --ctstate NEW -j ACCEPT
//	relay, transparent (the client connects to "the server" S:port):
//	              -t nat -A FTPGATE-PREROUTING -s C -d S -p tcp --dport port ... -j REDIRECT --to-ports port
//	              -A FTPGATE-INPUT -s C -p tcp --dport port ... --ctorigdst S --ctorigdstport port -j ACCEPT
//	kernel:       -t nat -A FTPGATE-PREROUTING -s C -d D -p tcp --dport port ... -j DNAT --to-destination S:p
//	              -A FTPGATE-FORWARD -s C -d S -p tcp --dport p ... -j ACCEPT
//	              -t nat -A FTPGATE-POSTROUTING ... -j SNAT --to-source G (the server checks that
//	              data comes from its control peer, as vsftpd does by default)
func (ss *session) openClientPort(cs clientSide, target netip.AddrPort) (*dataPort, error) {
	c := ss.clientPeer.Addr()
	dst := ss.clientLocal.Addr()
	if ss.srv.transparent() {
		dst = ss.origDst.Addr()
	}
	switch {
	case cs.path == KernelPath:
		return ss.openDataPort(ss.srv.ClientPorts, dst, netip.Addr{}, func(port uint16) rules.Pinhole {
			return rules.Pinhole{From: c, To: netip.AddrPortFrom(dst, port), Deliver: rules.DNAT,
				DNATTo: target, SNATTo: ss.serverLocal.Addr()}
		})
	case ss.srv.transparent():
		// Listen on every address: REDIRECT delivers to the primary
		// address of the interface the connection came in on.
		wildcard := netip.IPv4Unspecified()
		if !c.Is4() {
			wildcard = netip.IPv6Unspecified()
		}
		return ss.openDataPort(ss.srv.ClientPorts, dst, wildcard, func(port uint16) rules.Pinhole {
			return rules.Pinhole{From: c, To: netip.AddrPortFrom(dst, port), Deliver: rules.Redirect, RedirectPort: port}
		})
	default:
		return ss.openDataPort(ss.srv.ClientPorts, dst, ss.clientLocal.Addr(), func(port uint16) rules.Pinhole {
			return rules.Pinhole{From: c, To: netip.AddrPortFrom(dst, port), Deliver: rules.AcceptLocal}
		})
	}
}

// onPassiveReply intercepts the server's answer to ftpgate's PASV or EPSV.
// It runs without mu: opening a data port is network and firewall I/O;
// the session's state changes under mu, with the decrement of negotiating,
// so that a pipelined transfer command finds the link.
func (ss *session) onPassiveReply(cs clientSide, verb string, reply []byte, code int) []byte {
	if code/100 != 2 {
		ss.mu.Lock()
		defer ss.mu.Unlock()
		ss.negotiating--
		ss.dropUseNextLocked()
		return reply // the server's own words, e.g. "500 EPSV not understood"
	}
	var target netip.AddrPort
	if verb == "PASV" {
		ap, err := nat.Parse227(string(reply))
		if err != nil {
			return ss.failNegotiation("parsing the server's 227 reply", err)
		}
		// SECURITY: a 227 naming another address than the server's control
		// address (private, misconfigured or hostile) is never followed
		// (docs/security.md).
		t, differs := nat.PassiveTarget(ss.serverPeer.Addr(), ap)
		if differs {
			ss.log.Info("server advertised another address, using its control address",
				"advertised", ap.String(), "using", t.String())
		}
		target = t
	} else {
		port, err := nat.Parse229(string(reply))
		if err != nil {
			return ss.failNegotiation("parsing the server's 229 reply", err)
		}
		target = netip.AddrPortFrom(ss.serverPeer.Addr(), port)
	}
	if cs.path == KernelPath {
		cp, err := ss.openClientPort(cs, target)
		if err != nil {
			return ss.failNegotiation("opening a data port for the client", err)
		}
		ss.mu.Lock()
		defer ss.mu.Unlock()
		ss.negotiating--
		ss.adoptLinkLocked(ss.startKernelLinkLocked(cp, cs.mode()))
		return ss.passiveReply(cs, cp.port)
	}
	return ss.completeLink(cs, target, dataEnd{dialTo: target, from: ss.serverLocal.Addr()})
}

// onActiveReply intercepts the server's answer to ftpgate's PORT or EPRT.
// It runs without mu, as onPassiveReply.
func (ss *session) onActiveReply(cs clientSide, sp *dataPort, reply []byte, code int) []byte {
	if code/100 != 2 {
		sp.Close()
		ss.mu.Lock()
		defer ss.mu.Unlock()
		ss.negotiating--
		ss.dropUseNextLocked()
		return reply
	}
	if cs.path == KernelPath {
		ss.mu.Lock()
		defer ss.mu.Unlock()
		ss.negotiating--
		ss.adoptLinkLocked(ss.startKernelLinkLocked(sp, cs.mode()))
		return ftp.AppendReply(nil, 200, cs.verb+" command successful.")
	}
	return ss.completeLink(cs, netip.AddrPort{}, dataEnd{ln: sp, peer: ss.serverPeer.Addr()})
}

// completeLink prepares the client's end of a relayed data connection
// whose server end se is ready (opening a data port, without mu), then
// starts the link under mu, and returns the reply for the client.
func (ss *session) completeLink(cs clientSide, target netip.AddrPort, se dataEnd) []byte {
	var ce dataEnd
	var reply []byte
	if cs.passive {
		cp, err := ss.openClientPort(cs, target)
		if err != nil {
			se.close()
			return ss.failNegotiation("opening a data port for the client", err)
		}
		// client <- "227 (<client_address>,<cp.port>)": the client connects
		// to ftpgate's client-side port.
		ce = dataEnd{ln: cp, peer: ss.clientPeer.Addr()}
		reply = ss.passiveReply(cs, cp.port)
	} else {
		ce = dataEnd{dialTo: cs.target, from: ss.clientLocal.Addr()}
		reply = ftp.AppendReply(nil, 200, cs.verb+" command successful.")
	}
	ss.mu.Lock()
	ss.negotiating--
	l := ss.startLinkLocked(ce, se, cs)
	ss.adoptLinkLocked(l)
	ss.mu.Unlock()
	ss.log.Debug("data connection negotiated", "link", l.id, "client_end", ce.String(), "server_end", se.String())
	return reply
}

// adoptLinkLocked makes l the session's negotiated data connection, or
// hands it to a transfer command that was sent before the reply arrived.
// It runs with mu held.
func (ss *session) adoptLinkLocked(l *dataLink) {
	if ss.plan != nil {
		ss.plan.release(errReplaced)
		ss.plan = nil
	}
	if ss.useNext != nil {
		l.useLocked(ss.useNext, ss.srv.dataTimeout())
		ss.useNext = nil
		return
	}
	ss.plan = l
}

// passiveReply is the 227 or 229 reply that announces port to the client.
func (ss *session) passiveReply(cs clientSide, port uint16) []byte {
	if r := ss.srv.AdvertisePorts; r.Len() > 0 {
		// The load balancer in front maps r port for port to ClientPorts.
		port = r.First + (port - ss.srv.ClientPorts.Range().First)
	}
	if cs.verb == "PASV" {
		ss.srv.Metrics.rewrite(ss.srv.Name, "227")
		return append([]byte(nat.Format227(netip.AddrPortFrom(ss.clientAdvertise(), port))), '\r', '\n')
	}
	ss.srv.Metrics.rewrite(ss.srv.Name, "229")
	return append([]byte(nat.Format229(port)), '\r', '\n')
}

// failNegotiation ends a negotiation whose server reply came but gave no
// link; it takes mu.
func (ss *session) failNegotiation(what string, err error) []byte {
	ss.mu.Lock()
	ss.negotiating--
	ss.dropUseNextLocked()
	ss.mu.Unlock()
	ss.reject("data connection refused", dataPortRefusal(err), "err", fmt.Errorf("%s: %w", what, err))
	return ftp.AppendReply(nil, 425, "Can't open data connection.")
}

// dataPortRefusal is the rejection reason for a negotiation that failed
// with err.
func dataPortRefusal(err error) string {
	switch {
	case errors.Is(err, errArmedLimit):
		return "limit"
	case errors.Is(err, nat.ErrOwnerShare):
		return "client_share"
	case errors.Is(err, nat.ErrPoolExhausted):
		return "pool_exhausted"
	case errors.Is(err, rules.ErrConflict):
		return "pinhole_conflict"
	case errors.Is(err, nat.ErrSyntax), errors.Is(err, nat.ErrRange), errors.Is(err, nat.ErrFamily):
		return "bad_reply"
	}
	return "data_port"
}

// useLink binds a transfer command, with its audit record, to the
// negotiated data connection. It reports false if there is none, and the
// command must not reach the server.
//
// It also returns the link, if it exists yet (a pipelined command's link
// comes with the reply being awaited).
func (ss *session) useLink(cmd ftp.Command, rec *transferRecord) (*dataLink, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.negotiating > 0 {
		ss.dropUseNextLocked()
		ss.useNext = rec // pipelined: the reply being awaited creates the link
		return nil, true
	}
	l := ss.plan
	if l == nil || l.ctx.Err() != nil {
		ss.plan = nil
		return nil, false
	}
	ss.plan = nil
	l.useLocked(rec, ss.srv.dataTimeout())
	return l, true
}

// dropUseNextLocked gives up the pipelined transfer command waiting for a
// link that will not come: its record says it never had a data connection.
// It runs with mu held.
func (ss *session) dropUseNextLocked() {
	if ss.useNext != nil {
		ss.useNext.dataDone(dataResult{path: ss.srv.DataPath, outcome: "failed"})
		ss.useNext = nil
	}
}

// dropPlan cancels a negotiated data connection that no command used.
func (ss *session) dropPlan(cause error) {
	ss.mu.Lock()
	l := ss.plan
	if l != nil {
		l.release(cause)
		ss.plan = nil
	}
	ss.dropUseNextLocked()
	ss.mu.Unlock()
	if l != nil {
		l.closePorts()
	}
}

// clientAdvertise is the address written in 227 replies to the client.
func (ss *session) clientAdvertise() netip.Addr {
	if ss.srv.ClientAddress.IsValid() {
		return ss.srv.ClientAddress.Unmap()
	}
	if a := ss.srv.ClientAddressHost.Addr(); a.IsValid() {
		return a
	}
	return ss.clientView()
}

// clientView is the address the client believes its server has: in
// transparent mode the server's own, else the address it connected to.
func (ss *session) clientView() netip.Addr {
	if ss.srv.transparent() {
		return ss.origDst.Addr()
	}
	return ss.clientDst.Addr()
}

// serverAdvertise is the address written in PORT/EPRT to the server.
func (ss *session) serverAdvertise() netip.Addr {
	if ss.srv.ServerAddress.IsValid() {
		return ss.srv.ServerAddress.Unmap()
	}
	return ss.serverLocal.Addr()
}
