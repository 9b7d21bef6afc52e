package proxy

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/ftpgate/ftpgate/nat"
	"github.com/ftpgate/ftpgate/proxy/ftp"
)

// clientSide is how the client asked for its data connection.
type clientSide struct {
	verb    string         // PASV, EPSV, PORT or EPRT
	passive bool           // PASV/EPSV: ftpgate listens for the client
	target  netip.AddrPort // PORT/EPRT: where ftpgate connects, bounce-checked
}

func (cs clientSide) extended() bool { return cs.verb == "EPSV" || cs.verb == "EPRT" }

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
		ss.log.Warn("command refused", "reason", "family", "verb", cmd.Verb, "err", err)
		ss.replyLocal(522, "Network protocol not supported, use (1,2).")
		return nil
	case err != nil:
		ss.log.Warn("command refused", "reason", "syntax", "verb", cmd.Verb, "err", err)
		ss.replyLocal(501, "Syntax error in parameters or arguments.")
		return nil
	}
	// SECURITY: ftpgate connects only to the client's own control address
	// and never to a port below 1024 (FTP bounce, DESIGN.md section 5,
	// item 2). The policy lives in nat.ActiveTarget.
	target, err := nat.ActiveTarget(ss.clientPeer.Addr(), req)
	switch {
	case errors.Is(err, nat.ErrLowPort):
		ss.log.Warn("command refused", "reason", "low_port", "verb", cmd.Verb, "err", err)
		ss.replyLocal(504, "Command not implemented for that parameter: port below 1024.")
		return nil
	case err != nil:
		ss.log.Warn("command refused", "reason", "bounce", "verb", cmd.Verb, "err", err)
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
	ss.mu.Lock()
	pending := ss.links + ss.negotiating
	if ss.plan != nil {
		pending-- // about to be replaced
	}
	if pending >= maxLinksPerSession {
		ss.mu.Unlock()
		ss.log.Warn("command refused", "reason", "limit", "verb", cs.verb, "pending_data_connections", pending)
		ss.replyLocal(425, "Too many pending data connections.")
		return nil
	}
	// A new PASV/PORT makes the server forget the last one: give up the
	// unused plan now, ports included, so that the new one may take them.
	if ss.plan != nil {
		ss.plan.cancel(errReplaced)
		ss.plan.client.close()
		ss.plan.server.close()
		ss.plan = nil
	}
	ss.negotiating++
	ss.mu.Unlock()

	serverPassive := ss.srv.ServerMode == PassiveMode || (ss.srv.ServerMode == SameMode && cs.passive)
	ext := cs.extended() || !ss.serverPeer.Addr().Is4()
	if serverPassive {
		verb := "PASV"
		if ext {
			verb = "EPSV"
		}
		return ss.forward(ftp.AppendCommand(nil, verb, ""), expectation{
			verb:      verb,
			intercept: func(reply []byte, code int) []byte { return ss.onPassiveReply(cs, verb, reply, code) },
		})
	}

	dl, err := ss.listenData(ss.serverLocal.Addr(), ss.srv.ServerPorts, ss.serverPeer.Addr())
	if err != nil {
		ss.mu.Lock()
		ss.negotiating--
		ss.mu.Unlock()
		ss.log.Error("opening data listener for the server", "err", err)
		ss.replyLocal(425, "Can't open data connection.")
		return nil
	}
	// server <- "PORT <server_address>,<dl.port>": the server connects to
	// ftpgate's server-side listener.
	adv := netip.AddrPortFrom(ss.serverAdvertise(), dl.port)
	verb, arg := "PORT", nat.FormatPORT(adv)
	if ext || !adv.Addr().Is4() {
		verb, arg = "EPRT", nat.FormatEPRT(adv)
	}
	return ss.forward(ftp.AppendCommand(nil, verb, arg), expectation{
		verb:      verb,
		intercept: func(reply []byte, code int) []byte { return ss.onActiveReply(cs, dl, reply, code) },
	})
}

// onPassiveReply intercepts the server's answer to ftpgate's PASV or EPSV.
// It runs with mu held.
func (ss *session) onPassiveReply(cs clientSide, verb string, reply []byte, code int) []byte {
	ss.negotiating--
	if code/100 != 2 {
		ss.useNext = ""
		return reply // the server's own words, e.g. "500 EPSV not understood"
	}
	var target netip.AddrPort
	if verb == "PASV" {
		ap, err := nat.Parse227(string(reply))
		if err != nil {
			return ss.failNegotiationLocked("parsing the server's 227 reply", err)
		}
		// SECURITY: a 227 naming another address than the server's control
		// address (private, misconfigured or hostile) is never followed
		// (DESIGN.md section 5, item 3).
		t, differs := nat.PassiveTarget(ss.serverPeer.Addr(), ap)
		if differs {
			ss.log.Info("server advertised another address, using its control address",
				"advertised", ap.String(), "using", t.String())
		}
		target = t
	} else {
		port, err := nat.Parse229(string(reply))
		if err != nil {
			return ss.failNegotiationLocked("parsing the server's 229 reply", err)
		}
		target = netip.AddrPortFrom(ss.serverPeer.Addr(), port)
	}
	return ss.completeLinkLocked(cs, dataEnd{dialTo: target, from: ss.serverLocal.Addr()})
}

// onActiveReply intercepts the server's answer to ftpgate's PORT or EPRT.
// It runs with mu held.
func (ss *session) onActiveReply(cs clientSide, dl *dataListener, reply []byte, code int) []byte {
	ss.negotiating--
	if code/100 != 2 {
		dl.Close()
		ss.useNext = ""
		return reply
	}
	return ss.completeLinkLocked(cs, dataEnd{ln: dl, peer: ss.serverPeer.Addr()})
}

// completeLinkLocked prepares the client's end of a data connection whose
// server end se is ready, starts the link, and returns the reply for the
// client. It runs with mu held.
func (ss *session) completeLinkLocked(cs clientSide, se dataEnd) []byte {
	var ce dataEnd
	var reply []byte
	if cs.passive {
		dl, err := ss.listenData(ss.clientLocal.Addr(), ss.srv.ClientPorts, ss.clientPeer.Addr())
		if err != nil {
			se.close()
			return ss.failNegotiationLocked("opening data listener for the client", err)
		}
		// client <- "227 (<client_address>,<dl.port>)": the client connects
		// to ftpgate's client-side listener.
		ce = dataEnd{ln: dl, peer: ss.clientPeer.Addr()}
		adv := netip.AddrPortFrom(ss.clientAdvertise(), dl.port)
		if cs.verb == "PASV" {
			reply = append([]byte(nat.Format227(adv)), '\r', '\n')
		} else {
			reply = append([]byte(nat.Format229(dl.port)), '\r', '\n')
		}
	} else {
		ce = dataEnd{dialTo: cs.target, from: ss.clientLocal.Addr()}
		reply = ftp.AppendReply(nil, 200, cs.verb+" command successful.")
	}
	if ss.plan != nil {
		ss.plan.cancel(errReplaced)
		ss.plan = nil
	}
	l := ss.startLinkLocked(ce, se)
	if ss.useNext != "" {
		l.useLocked(ss.useNext, ss.srv.dataTimeout())
		ss.useNext = ""
	} else {
		ss.plan = l
	}
	ss.log.Debug("data connection negotiated", "link", l.id, "client_end", ce.String(), "server_end", se.String())
	return reply
}

func (ss *session) failNegotiationLocked(what string, err error) []byte {
	ss.useNext = ""
	ss.log.Warn("data connection refused", "reason", "bad_reply", "err", fmt.Errorf("%s: %w", what, err))
	return ftp.AppendReply(nil, 425, "Can't open data connection.")
}

// useLink binds a transfer command to the negotiated data connection. It
// reports false if there is none, and the command must not reach the server.
func (ss *session) useLink(cmd ftp.Command) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	what := cmd.Verb
	if cmd.Arg != "" {
		what += " " + cmd.Arg
	}
	if ss.negotiating > 0 {
		ss.useNext = what // pipelined: the reply being awaited creates the link
		return true
	}
	l := ss.plan
	if l == nil || l.ctx.Err() != nil {
		ss.plan = nil
		return false
	}
	ss.plan = nil
	l.useLocked(what, ss.srv.dataTimeout())
	return true
}

// dropPlan cancels a negotiated data connection that no command used.
func (ss *session) dropPlan(cause error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.plan != nil {
		ss.plan.cancel(cause)
		ss.plan = nil
	}
	ss.useNext = ""
}

// clientAdvertise is the address written in 227 replies to the client.
func (ss *session) clientAdvertise() netip.Addr {
	if ss.srv.ClientAddress.IsValid() {
		return ss.srv.ClientAddress.Unmap()
	}
	return ss.clientLocal.Addr()
}

// serverAdvertise is the address written in PORT/EPRT to the server.
func (ss *session) serverAdvertise() netip.Addr {
	if ss.srv.ServerAddress.IsValid() {
		return ss.srv.ServerAddress.Unmap()
	}
	return ss.serverLocal.Addr()
}
