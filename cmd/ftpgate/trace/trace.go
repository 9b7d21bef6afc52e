// Package trace explains, from a packet capture, what happened to the data
// connections of every FTP control session in it, and why: which data
// connection each PASV, EPSV, LPSV, PORT, EPRT or LPRT negotiated, to which
// address, whether its SYN got an answer, whether a NAT leaked a private
// address into a 227, whether the session switched to TLS so that no
// firewall ALG could read the ports.
//
// The control connections are reassembled with gopacket's reassembly and
// decoded with ftpgate's own control-channel codec (proxy/ftp) and address
// parsers (nat): the code the proxy runs. Every other TCP connection is
// followed only as far as its flags and sequence numbers, and only when it
// goes to an endpoint a session negotiated.
//
// An Analyzer takes packets in capture order and reports each session when
// it ends. Memory is bounded whatever the capture's size: sessions, data
// connections and reassembly buffers are capped (see Config), sessions and
// connections that end or go idle are reported and forgotten, and a long
// session keeps the details of a bounded number of data connections.
package trace

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/reassembly"
)

// Config bounds an Analyzer. Zero fields take the defaults below.
type Config struct {
	// Ports are the control-channel ports; default 21.
	Ports []uint16
	// MaxSessions is how many control sessions are followed at once;
	// further ones are counted and ignored. Default 10000.
	MaxSessions int
	// MaxFlows is how many other TCP connections are followed at once
	// (data connections, and SYNs waiting for a negotiation to match).
	// Default 65536.
	MaxFlows int
	// MaxLineBytes is the longest control line kept whole; longer ones
	// are cut. Default 2048.
	MaxLineBytes int
	// MaxBufferedPages caps the out-of-order control-channel data held per
	// connection, in reassembly pages of 1900 bytes. Default 32.
	MaxBufferedPages int
	// MaxBufferedPagesTotal caps it for all connections together. Default
	// 16384 (about 30 MiB).
	MaxBufferedPagesTotal int
	// SessionIdle is how long a session may go without a packet (its own
	// or its data connections') before it is reported. Default 15 minutes.
	SessionIdle time.Duration
	// FlowIdle is how long a data connection may go without a packet
	// before it is taken as over. Default 2 minutes.
	FlowIdle time.Duration
}

// Defaults for Config.
const (
	DefaultMaxSessions           = 10000
	DefaultMaxFlows              = 65536
	DefaultMaxLineBytes          = 2048
	DefaultMaxBufferedPages      = 32
	DefaultMaxBufferedPagesTotal = 16384
	DefaultSessionIdle           = 15 * time.Minute
	DefaultFlowIdle              = 2 * time.Minute
)

// Internal bounds and timings.
const (
	// maxKeptOK and maxKeptFailed bound the data connections a session
	// lists; further ones are counted by verdict.
	maxKeptOK     = 32
	maxKeptFailed = 64
	// maxConnsPerNegotiation bounds the connections listed per negotiation.
	maxConnsPerNegotiation = 8
	// maxPendingCommands bounds the commands waiting for their replies.
	maxPendingCommands = 64
	// maxFindings bounds the findings of one session.
	maxFindings = 64
	// orphanGrace is how long a SYN that matches no negotiation is kept,
	// in case the negotiation is decoded after it (reordered capture, a
	// reply held back by a gap in the control stream).
	orphanGrace = 10 * time.Second
	// closedGrace is how long a closed session waits for its data
	// connections to end before it is reported anyway.
	closedGrace = 30 * time.Second
	// gapWait is how long reassembly waits for a missing control segment
	// before it skips it.
	gapWait = 2 * time.Second
	// streamIdle is how long reassembly keeps a control connection that
	// sends nothing; its session lives on (SessionIdle), and a segment that
	// comes later starts a new stream for it.
	streamIdle = 2 * time.Minute
	// sweepEvery is the capture time between two sweeps for idle state.
	sweepEvery = time.Second
)

// flowKey names a TCP connection by its initiator and responder.
type flowKey struct {
	from, to netip.AddrPort
}

func (k flowKey) reverse() flowKey { return flowKey{k.to, k.from} }

// Analyzer follows the FTP sessions of one capture. It is not safe for
// concurrent use.
type Analyzer struct {
	cfg      Config
	ports    [65536 / 64]uint64 // bitmap of the control ports
	reporter Reporter
	err      error // first error from the reporter

	dec       *decoder
	assembler *reassembly.Assembler
	actx      assemblerContext
	creating  *session // the session a new reassembly stream belongs to

	sessions map[flowKey]*session // by client -> server
	flows    map[flowKey]*flow    // by initiator -> responder
	// expect indexes the open negotiations by the endpoint their data
	// connection goes to.
	expect map[netip.AddrPort][]*negotiation
	// orphans indexes SYN flows that matched no negotiation, by responder.
	orphans map[netip.AddrPort][]*flow

	now       time.Time // latest packet time
	lastSweep time.Time
	summary   Summary
	warned    map[string]bool // warnings given once
}

// New returns an Analyzer that reports each session to r as it ends.
func New(cfg Config, r Reporter) *Analyzer {
	if len(cfg.Ports) == 0 {
		cfg.Ports = []uint16{21}
	}
	cfg.MaxSessions = cmp.Or(max(cfg.MaxSessions, 0), DefaultMaxSessions)
	cfg.MaxFlows = cmp.Or(max(cfg.MaxFlows, 0), DefaultMaxFlows)
	cfg.MaxLineBytes = cmp.Or(max(cfg.MaxLineBytes, 0), DefaultMaxLineBytes)
	cfg.MaxBufferedPages = cmp.Or(max(cfg.MaxBufferedPages, 0), DefaultMaxBufferedPages)
	cfg.MaxBufferedPagesTotal = cmp.Or(max(cfg.MaxBufferedPagesTotal, 0), DefaultMaxBufferedPagesTotal)
	cfg.SessionIdle = cmp.Or(max(cfg.SessionIdle, 0), DefaultSessionIdle)
	cfg.FlowIdle = cmp.Or(max(cfg.FlowIdle, 0), DefaultFlowIdle)
	a := &Analyzer{
		cfg:      cfg,
		reporter: r,
		dec:      newDecoder(),
		sessions: map[flowKey]*session{},
		flows:    map[flowKey]*flow{},
		expect:   map[netip.AddrPort][]*negotiation{},
		orphans:  map[netip.AddrPort][]*flow{},
		warned:   map[string]bool{},
	}
	for _, p := range cfg.Ports {
		a.ports[p/64] |= 1 << (p % 64)
	}
	a.assembler = reassembly.NewAssembler(reassembly.NewStreamPool(streamFactory{a}))
	a.assembler.MaxBufferedPagesPerConnection = cfg.MaxBufferedPages
	a.assembler.MaxBufferedPagesTotal = cfg.MaxBufferedPagesTotal
	return a
}

func (a *Analyzer) isControlPort(p uint16) bool {
	return a.ports[p/64]&(1<<(p%64)) != 0
}

// Warn adds a warning about the capture to the summary, e.g. packets the
// kernel dropped during a live capture.
func (a *Analyzer) Warn(msg string) { a.warn("%s", msg) }

// warn adds a warning to the summary, once per text.
func (a *Analyzer) warn(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	if a.warned[s] || len(a.warned) >= 32 {
		return
	}
	a.warned[s] = true
	a.summary.Warnings = append(a.summary.Warnings, s)
}

// assemblerContext hands the capture info of the current packet to
// reassembly without allocating.
type assemblerContext struct{ ci gopacket.CaptureInfo }

func (c *assemblerContext) GetCaptureInfo() gopacket.CaptureInfo { return c.ci }

// Packet analyses one packet of the given link type. data is not kept after
// Packet returns. Packets must come in capture order; a timestamp older
// than one seen before is taken as that one.
func (a *Analyzer) Packet(data []byte, ci gopacket.CaptureInfo, link layers.LinkType) {
	a.summary.Packets++
	ts := ci.Timestamp
	if ts.Before(a.now) {
		ts = a.now
		ci.Timestamp = ts
	}
	if a.summary.Start.IsZero() {
		a.summary.Start = ts
		a.lastSweep = ts
	}
	a.now = ts
	a.summary.End = ts

	switch a.dec.decode(data, link) {
	case kindLink:
		a.warn("packets of link type %s (%d) skipped", link, int(link))
	case kindICMP:
		a.icmp()
	case kindTCP:
		a.summary.TCPPackets++
		a.tcpPacket(ci)
	}
	if ts.Sub(a.lastSweep) >= sweepEvery {
		a.lastSweep = ts
		a.sweep(false)
	}
}

// idle tells a that no packet came until now (wall-clock time, for a live
// capture, whose timestamps are wall-clock too): sessions that ended are
// reported without waiting for the next packet.
func (a *Analyzer) idle(now time.Time) {
	if a.summary.Start.IsZero() || !now.After(a.now) {
		return
	}
	a.now = now
	if now.Sub(a.lastSweep) >= sweepEvery {
		a.lastSweep = now
		a.sweep(false)
	}
}

// tcpPacket routes a TCP segment to its control session or data flow.
func (a *Analyzer) tcpPacket(ci gopacket.CaptureInfo) {
	d := a.dec
	t := &d.tcp
	src := netip.AddrPortFrom(d.src, uint16(t.SrcPort))
	dst := netip.AddrPortFrom(d.dst, uint16(t.DstPort))
	if a.isControlPort(uint16(t.DstPort)) || a.isControlPort(uint16(t.SrcPort)) {
		a.controlPacket(ci, src, dst)
		return
	}
	a.dataPacket(ci.Timestamp, src, dst)
}

// controlPacket follows one segment of a control connection.
func (a *Analyzer) controlPacket(ci gopacket.CaptureInfo, src, dst netip.AddrPort) {
	t := &a.dec.tcp
	key := flowKey{src, dst}
	s := a.sessions[key]
	if s == nil {
		key = key.reverse()
		s = a.sessions[key]
	}
	if s == nil {
		// A new session starts with a SYN, or with data when the capture
		// began after the session did. Stray ACKs, FINs and RSTs of a
		// session already reported start nothing.
		if !(t.SYN && !t.ACK) && a.dec.payloadLen == 0 {
			return
		}
		if len(a.sessions) >= a.cfg.MaxSessions {
			a.warn("more than %d FTP sessions at once: further sessions were not analysed", a.cfg.MaxSessions)
			return
		}
		client, server := src, dst
		switch {
		case t.SYN && t.ACK:
			client, server = dst, src
		case t.SYN:
		case a.isControlPort(uint16(t.SrcPort)) && !a.isControlPort(uint16(t.DstPort)):
			client, server = dst, src
		}
		s = a.newSession(client, server, ci.Timestamp, !t.SYN)
		a.sessions[flowKey{client, server}] = s
	}
	s.last = ci.Timestamp
	if !s.closed {
		// After the end (both FINs, or a RST) only stray ACKs come; fed to
		// reassembly they would make it a new connection to remember.
		a.actx.ci = ci
		a.creating = s
		a.assembler.AssembleWithContext(a.dec.netFlow, t, &a.actx)
		a.creating = nil
	}
	s.flags(src == s.client, t, ci.Timestamp)
}

// icmp attaches an ICMP destination unreachable to the data flow it is
// about.
func (a *Analyzer) icmp() {
	d := a.dec
	f := a.flows[flowKey{d.icmpFrom, d.icmpTo}]
	if f == nil {
		return
	}
	f.icmp(d.icmpText, a.now)
}

// sweep reports sessions and ends flows that are over or idle; all of them
// if final.
func (a *Analyzer) sweep(final bool) {
	now := a.now
	// Control data first: what it still holds may name data connections.
	if final {
		a.assembler.FlushAll()
	} else {
		a.assembler.FlushWithOptions(reassembly.FlushOptions{T: now.Add(-gapWait), TC: now.Add(-streamIdle)})
	}
	for k, f := range a.flows {
		switch {
		case final, now.Sub(f.last) >= a.cfg.FlowIdle:
			a.endFlow(f, "")
		case f.neg == nil && now.Sub(f.rep.Start) >= orphanGrace:
			// A SYN no negotiation claimed: not an FTP data connection.
			delete(a.flows, k)
			a.dropOrphan(f)
		}
	}
	var done []*session
	for _, s := range a.sessions {
		switch {
		case final,
			now.Sub(s.lastActivity()) >= a.cfg.SessionIdle,
			s.closed && (s.activeFlows == 0 || now.Sub(s.closedAt) >= closedGrace):
			done = append(done, s)
		}
	}
	slices.SortFunc(done, func(x, y *session) int { return x.start.Compare(y.start) })
	for _, s := range done {
		a.finishSession(s)
	}
}

// finishSession settles a session's negotiations and reports it.
func (a *Analyzer) finishSession(s *session) {
	delete(a.sessions, flowKey{s.client, s.server})
	rep := s.finish()
	a.summary.add(rep)
	if a.err == nil {
		a.err = a.reporter.Session(rep)
	}
}

// Finish ends the analysis: every session still open is reported, then the
// summary, which it returns. The error is the reporter's first.
func (a *Analyzer) Finish(source string) (*Summary, error) {
	a.sweep(true)
	a.summary.Source = source
	if a.err == nil {
		a.err = a.reporter.Finish(&a.summary)
	}
	return &a.summary, a.err
}
