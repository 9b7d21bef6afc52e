package trace

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/ftpgate/ftpgate/proxy/ftp"
)

// negotiation is one PASV, EPSV, LPSV, PORT, EPRT or LPRT and its data
// connections.
type negotiation struct {
	s   *session
	rep DataConn
	// target is the address a PORT, EPRT or LPRT named, or targetErr why it
	// could not be parsed.
	target    netip.AddrPort
	targetErr error
	replied   bool  // the reply is in the capture
	refused   bool  // the reply was negative
	parseErr  error // the positive reply could not be parsed
	open      bool  // indexed in Analyzer.expect
	settled   bool  // its verdict is given: it takes no more connections
	flows     []*flow
}

// flow is a TCP connection to a negotiated endpoint (or, for a while, a
// SYN waiting for a negotiation to claim it).
type flow struct {
	key    flowKey
	neg    *negotiation // nil while an orphan, or once its session is reported
	orphan bool         // indexed in Analyzer.orphans
	ended  bool
	last   time.Time
	rep    Conn

	isn              uint32 // the initiator's initial sequence number
	haveISN          bool
	hiFwd, hiRev     uint32 // the highest sequence number of payload seen, by direction
	haveFwd, haveRev bool
	finFwd, finRev   bool
}

// open indexes n under the endpoints its data connection may go to, and
// claims the orphan SYNs that went there since its command.
func (a *Analyzer) open(n *negotiation) {
	if n.open || n.settled {
		return
	}
	n.open = true
	for _, ep := range [2]netip.AddrPort{n.rep.Endpoint, n.rep.Alternative} {
		if !ep.IsValid() {
			continue
		}
		a.expect[ep] = append(a.expect[ep], n)
		orphans := a.orphans[ep]
		for _, f := range orphans {
			if !f.rep.Start.Before(n.rep.Time) && !f.ended {
				f.orphan = false
				a.attach(n, f)
			}
		}
		orphans = slices.DeleteFunc(orphans, func(f *flow) bool { return !f.orphan })
		if len(orphans) == 0 {
			delete(a.orphans, ep)
		} else {
			a.orphans[ep] = orphans
		}
	}
}

// close removes n from the index of open negotiations.
func (a *Analyzer) close(n *negotiation) {
	if !n.open {
		return
	}
	n.open = false
	for _, ep := range [2]netip.AddrPort{n.rep.Endpoint, n.rep.Alternative} {
		if !ep.IsValid() {
			continue
		}
		list := slices.DeleteFunc(a.expect[ep], func(x *negotiation) bool { return x == n })
		if len(list) == 0 {
			delete(a.expect, ep)
		} else {
			a.expect[ep] = list
		}
	}
}

// attach makes f one of n's connections.
func (a *Analyzer) attach(n *negotiation, f *flow) {
	if len(n.flows) >= maxConnsPerNegotiation {
		n.rep.MoreConnections++
		delete(a.flows, f.key) // counted, not followed
		return
	}
	f.neg = n
	f.rep.ExpectedSource = !n.rep.ExpectedFrom.IsValid() || f.key.from.Addr().Unmap() == n.rep.ExpectedFrom.Unmap()
	n.flows = append(n.flows, f)
	n.s.activeFlows++
	n.s.lastData = f.last
}

// dropOrphan removes f from the orphan index.
func (a *Analyzer) dropOrphan(f *flow) {
	if !f.orphan {
		return
	}
	f.orphan = false
	to := f.key.to
	list := slices.DeleteFunc(a.orphans[to], func(x *flow) bool { return x == f })
	if len(list) == 0 {
		delete(a.orphans, to)
	} else {
		a.orphans[to] = list
	}
}

// endFlow takes f as over.
func (a *Analyzer) endFlow(f *flow, closed string) {
	if f.ended {
		return
	}
	f.ended = true
	if closed != "" {
		f.rep.Closed = closed
	}
	f.rep.End = f.last
	delete(a.flows, f.key)
	a.dropOrphan(f)
	if n := f.neg; n != nil {
		n.s.activeFlows--
	}
}

// dataPacket follows a TCP segment that is not on a control connection.
func (a *Analyzer) dataPacket(ts time.Time, src, dst netip.AddrPort) {
	t := &a.dec.tcp
	key := flowKey{src, dst}
	fromInitiator := true
	f := a.flows[key]
	if f == nil {
		if f = a.flows[key.reverse()]; f != nil {
			fromInitiator = false
		}
	}
	isSYN := t.SYN && !t.ACK
	if f != nil && isSYN && fromInitiator && f.haveISN && t.Seq != f.isn {
		// The same endpoints again: a new connection.
		a.endFlow(f, "")
		f = nil
	}
	if f == nil {
		if !isSYN {
			return // not a connection this trace follows
		}
		if len(a.flows) >= a.cfg.MaxFlows {
			a.warn("more than %d TCP connections at once: further connections were not followed", a.cfg.MaxFlows)
			return
		}
		f = &flow{key: key, last: ts, rep: Conn{From: src, To: dst, Start: ts, Answer: "none"}}
		a.flows[key] = f
		if n := a.match(dst, ts); n != nil {
			a.attach(n, f)
		} else {
			f.orphan = true
			a.orphans[dst] = append(a.orphans[dst], f)
		}
		if a.flows[key] == nil {
			return // attach found the negotiation full
		}
	}
	f.packet(fromInitiator, t, a.dec.payloadLen, ts)
	if n := f.neg; n != nil {
		n.s.lastData = ts
	}
	if f.rep.Closed != "" {
		a.endFlow(f, "")
	}
}

// match returns the latest open negotiation whose data connection goes to
// dst and that was made before ts.
func (a *Analyzer) match(dst netip.AddrPort, ts time.Time) *negotiation {
	list := a.expect[dst]
	for i := len(list) - 1; i >= 0; i-- {
		if !list[i].rep.Time.After(ts) {
			return list[i]
		}
	}
	return nil
}

// packet follows one segment of f.
func (f *flow) packet(fromInitiator bool, t *layers.TCP, payload int, ts time.Time) {
	f.last = ts
	c := &f.rep
	if fromInitiator {
		switch {
		case t.SYN && !t.ACK:
			c.SYNs++
			if !f.haveISN {
				f.isn, f.haveISN = t.Seq, true
				f.hiFwd, f.haveFwd = t.Seq+1, true
			}
		case t.RST:
			c.Closed = "rst"
		case t.ACK && !c.Established:
			// The initiator acknowledges an answer: the handshake completed
			// even if the capture lacks the SYN-ACK (asymmetric routing).
			c.Established = true
			if c.Answer == "none" || c.Answer == "icmp" {
				c.Answer = "handshake"
			}
		}
		if payload > 0 || t.FIN {
			advance(&f.hiFwd, &f.haveFwd, t.Seq, payload, &c.BytesFromInitiator)
		}
		if t.ACK && f.haveRev && !f.finRev {
			// What the initiator acknowledges was sent, even if the capture
			// missed the segments.
			advance(&f.hiRev, &f.haveRev, t.Ack, 0, &c.BytesFromResponder)
		}
		f.finFwd = f.finFwd || t.FIN
	} else {
		switch {
		case t.SYN && t.ACK:
			c.Answer, c.Established = "syn-ack", true
			if !f.haveRev {
				f.hiRev, f.haveRev = t.Seq+1, true
			}
		case t.RST:
			if !c.Established {
				c.Answer = "rst"
			}
			c.Closed = "rst"
		}
		if payload > 0 || t.FIN {
			advance(&f.hiRev, &f.haveRev, t.Seq, payload, &c.BytesFromResponder)
		}
		if t.ACK && f.haveFwd && !f.finFwd {
			advance(&f.hiFwd, &f.haveFwd, t.Ack, 0, &c.BytesFromInitiator)
		}
		f.finRev = f.finRev || t.FIN
	}
	if f.finFwd && f.finRev && c.Closed == "" {
		c.Closed = "fin"
	}
}

// icmp notes an ICMP destination unreachable about f.
func (f *flow) icmp(text string, ts time.Time) {
	f.last = ts
	f.rep.ICMP = text
	if !f.rep.Established {
		f.rep.Answer = "icmp"
	}
}

// advance counts the payload of a segment [seq, seq+n) past the highest
// sequence number seen, so that retransmitted and reordered bytes count
// once, and segments missing from the capture count when a later one (or
// an acknowledgement, or the FIN) shows they were sent. Sequence numbers
// are compared modulo 2^32.
func advance(hi *uint32, have *bool, seq uint32, n int, total *uint64) {
	end := seq + uint32(n)
	if !*have {
		*hi, *have = seq, true
	}
	if d := int32(end - *hi); d > 0 {
		*total += uint64(d)
		*hi = end
	}
}

// settle gives n its verdict and returns its report. Its connections are
// copied into the report as they are now and detached from n.
func (n *negotiation) settle() *DataConn {
	n.settled = true
	d := &n.rep
	d.Connections = d.Connections[:0]
	var best, other *flow
	for _, f := range n.flows {
		c := f.rep
		c.End = f.last
		c.Seconds = f.duration()
		d.Connections = append(d.Connections, &c)
		if !c.ExpectedSource {
			if other == nil || rank(f) > rank(other) {
				other = f
			}
		} else if best == nil || rank(f) > rank(best) {
			best = f
		}
		if !f.ended {
			f.neg = nil // the session is done with it; the sweep forgets it
			n.s.activeFlows--
		}
	}
	n.flows = nil

	var why strings.Builder
	if n.parseErr != nil {
		fmt.Fprintf(&why, "the reply could not be parsed (%v), so no endpoint is known; ", n.parseErr)
	} else if n.targetErr != nil {
		fmt.Fprintf(&why, "the %s argument could not be parsed (%v); ", d.Command, n.targetErr)
	} else if !n.replied {
		why.WriteString("the reply is not in the capture; ")
	}
	tr := d.Transfer
	switch {
	case best != nil && best.rep.Established:
		c := &best.rep
		if tr != nil && tr.FinalCode != 0 && !ftp.IsPositiveCompletion(tr.FinalCode) {
			d.Verdict = Aborted
			fmt.Fprintf(&why, "connected (%s -> %s), but the transfer failed with %d after %d bytes in %.2f s",
				c.From, c.To, tr.FinalCode, c.Bytes(), best.duration())
		} else {
			d.Verdict = Transferred
			fmt.Fprintf(&why, "transferred %d bytes in %.2f s (%s -> %s)", c.Bytes(), best.duration(), c.From, c.To)
			if c.Answer == "handshake" {
				why.WriteString("; the SYN-ACK is not in the capture (asymmetric capture?)")
			}
		}
	case best != nil && best.rep.Answer == "rst":
		d.Verdict = Refused
		fmt.Fprintf(&why, "refused: the SYN %s -> %s was answered with a RST (nothing listens on the port, "+
			"or a firewall rejects the connection)", best.rep.From, best.rep.To)
	case best != nil && best.rep.Answer == "icmp":
		d.Verdict = Refused
		fmt.Fprintf(&why, "refused: the SYN %s -> %s was answered with %s (a firewall rejects the connection, "+
			"or no route)", best.rep.From, best.rep.To, best.rep.ICMP)
	case best != nil:
		d.Verdict = SYNUnanswered
		c := &best.rep
		fmt.Fprintf(&why, "SYN without answer: %s -> %s, %d SYN", c.From, c.To, c.SYNs)
		if c.SYNs != 1 {
			why.WriteString("s")
		}
		fmt.Fprintf(&why, " over %.1f s and no reply (dropped: a firewall without a pinhole?)", best.duration())
		if d.Alternative.IsValid() && c.To == d.Endpoint {
			fmt.Fprintf(&why, "; %s is the address written in the reply, which a NAT did not translate", d.Endpoint.Addr())
		}
	case other != nil:
		d.Verdict = UnexpectedSource
		c := &other.rep
		fmt.Fprintf(&why, "connected from an unexpected address: %s -> %s, expected from %s "+
			"(port theft, or a NAT between the peers and this capture point)", c.From, c.To, d.ExpectedFrom)
		if !c.Established {
			fmt.Fprintf(&why, "; that connection got answer %q", c.Answer)
		}
	case tr != nil:
		d.Verdict = NoConnection
		fmt.Fprintf(&why, "no connection attempt seen")
		if d.Endpoint.IsValid() {
			fmt.Fprintf(&why, " to %s", d.Endpoint)
			if d.Alternative.IsValid() {
				fmt.Fprintf(&why, " or %s", d.Alternative)
			}
		}
		fmt.Fprintf(&why, " for %s", tr.Command)
		if ftp.IsPositiveCompletion(tr.FinalCode) {
			why.WriteString("; the server reported success, so the data connection took a path this capture does not see")
		}
	default:
		d.Verdict = Unused
		why.WriteString("not used: neither a transfer command nor a connection attempt followed")
	}
	if best != nil && other != nil {
		fmt.Fprintf(&why, "; also a connection from an unexpected address, %s (port theft attempt?)", other.rep.From)
	}
	d.Explanation = why.String()
	d.Failed = d.Verdict.Failed()
	if d.Verdict == NoConnection && ftp.IsPositiveCompletion(tr.FinalCode) {
		d.Failed = false
	}
	return d
}

// rank orders a negotiation's connections: established ones explain the
// most, then refused ones, then unanswered SYNs.
func rank(f *flow) int {
	switch {
	case f.rep.Established:
		return 3
	case f.rep.Answer == "rst", f.rep.Answer == "icmp":
		return 2
	}
	return 1
}

// duration is how long f lasted in the capture, in seconds.
func (f *flow) duration() float64 {
	return f.last.Sub(f.rep.Start).Seconds()
}
