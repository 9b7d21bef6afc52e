package trace

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/reassembly"

	"github.com/ftpgate/ftpgate/nat"
	"github.com/ftpgate/ftpgate/proxy/ftp"
)

// Bounds on text kept from the control channel.
const (
	maxUserBytes  = 64
	maxArgBytes   = 128
	maxReplyBytes = 200  // a reply line as reported
	maxParseBytes = 1024 // a whole (multi-line) reply as parsed
	maxReplies    = 4    // replies kept per transfer command
)

// errNeedMore is what a feeder returns when the segment it was handed is
// used up: the line readers keep the partial line and continue with the
// next segment.
var errNeedMore = errors.New("trace: end of segment")

// feeder is the io.Reader under a session's line readers: reassembly
// pushes segments, the codec's readers pull lines.
type feeder struct{ b []byte }

func (f *feeder) Read(p []byte) (int, error) {
	if len(f.b) == 0 {
		return 0, errNeedMore
	}
	n := copy(p, f.b)
	f.b = f.b[n:]
	return n, nil
}

// commandKind classifies the commands a session keeps track of.
type commandKind uint8

const (
	cmdOther     commandKind = iota
	cmdNegotiate             // PASV, EPSV, LPSV, PORT, EPRT, LPRT
	cmdTransfer              // a transfer command that uses a negotiation
	cmdAuth                  // AUTH
)

// command is a command waiting for its final reply.
type command struct {
	verb string
	arg  string // kept for AUTH only
	kind commandKind
	neg  *negotiation
}

// session follows one control connection.
type session struct {
	a              *Analyzer
	client, server netip.AddrPort
	start, last    time.Time
	lastData       time.Time // last packet of one of its data connections
	rep            Session

	cmdFeed, rplFeed feeder
	cmds             *ftp.LineReader
	replies          *ftp.ReplyReader
	// The reply being read: its code, its first line (for the report)
	// and its whole text (for the parsers), both bounded.
	rplCode  int
	rplFirst string
	rplText  []byte

	pending []*command     // commands waiting for their final replies
	negs    []*negotiation // negotiations not yet settled, oldest first
	current *negotiation   // the one the next transfer command uses
	refused *negotiation   // a refused EPSV/EPRT/LPSV/LPRT awaiting its fallback

	encrypted            bool
	finClient, finServer bool
	closed               bool
	closedAt             time.Time
	activeFlows          int
	keptOK, keptFailed   int
	unexplained          int // 425/426 replies to commands without a negotiation
}

func (a *Analyzer) newSession(client, server netip.AddrPort, ts time.Time, midstream bool) *session {
	s := &session{
		a: a, client: client, server: server, start: ts, last: ts,
		rep: Session{Client: client, Server: server, Start: ts, Data: []*DataConn{}, Findings: []Finding{}},
	}
	s.cmds = ftp.NewLineReader(&s.cmdFeed, a.cfg.MaxLineBytes)
	s.replies = ftp.NewReplyReader(&s.rplFeed, a.cfg.MaxLineBytes)
	if midstream {
		s.finding(FindingMidSession, ts, false,
			"the capture started after this session did: its login and earlier commands are not in it")
	}
	return s
}

// lastActivity is the time of the session's latest packet, its data
// connections' included.
func (s *session) lastActivity() time.Time {
	if s.lastData.After(s.last) {
		return s.lastData
	}
	return s.last
}

// flags notes the end of the control connection.
func (s *session) flags(fromClient bool, t *layers.TCP, ts time.Time) {
	switch {
	case t.RST:
		s.closed = true
	case t.FIN && fromClient:
		s.finClient = true
	case t.FIN:
		s.finServer = true
	}
	if s.finClient && s.finServer {
		s.closed = true
	}
	if s.closed && s.closedAt.IsZero() {
		s.closedAt = ts
	}
}

// finding records a session-level observation, once per message.
func (s *session) finding(kind string, ts time.Time, failure bool, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	for _, f := range s.rep.Findings {
		if f.Kind == kind && f.Message == msg {
			return
		}
	}
	if len(s.rep.Findings) >= maxFindings {
		return
	}
	s.rep.Findings = append(s.rep.Findings, Finding{Kind: kind, Time: ts, Message: msg, Failure: failure})
}

// feed handles reassembled control-channel bytes. gap says bytes were
// lost before data: the line in progress is dropped.
func (s *session) feed(fromClient bool, data []byte, gap bool, ts time.Time) {
	if s.encrypted {
		return
	}
	if fromClient {
		if gap {
			s.cmds.Reset(&s.cmdFeed)
		}
		s.cmdFeed.b = data
		for !s.encrypted {
			line, err := s.cmds.ReadLine()
			if err != nil && !errors.Is(err, ftp.ErrLineTooLong) {
				break // the segment is used up
			}
			s.command(line, ts)
		}
		s.cmdFeed.b = nil
		return
	}
	if gap {
		s.replies.Reset(&s.rplFeed)
		s.rplCode = 0
	}
	s.rplFeed.b = data
	for !s.encrypted {
		rl, err := s.replies.Next()
		if errors.Is(err, ftp.ErrBadReply) || errors.Is(err, ftp.ErrLineTooLong) {
			continue // not a reply line; the reader resynchronises
		}
		if err != nil {
			break
		}
		s.replyLine(rl, ts)
	}
	s.rplFeed.b = nil
}

// command handles one command line from the client.
func (s *session) command(line []byte, ts time.Time) {
	// As a liberal server splits it: the trace explains what the server
	// may have done.
	c := ftp.SplitCommand(line)
	if c.Verb == "" {
		return
	}
	cmd := &command{verb: c.Verb}
	switch c.Verb {
	case "USER":
		s.rep.User = clip(strings.TrimSpace(c.Arg), maxUserBytes)
	case "PASS":
		s.rep.Password = true // the password itself is never kept
	case "AUTH":
		cmd.kind, cmd.arg = cmdAuth, clip(strings.TrimSpace(c.Arg), maxArgBytes)
	case "EPSV":
		if strings.EqualFold(strings.TrimSpace(c.Arg), "ALL") {
			break
		}
		fallthrough
	case "PASV", "LPSV", "PORT", "EPRT", "LPRT":
		cmd.kind, cmd.neg = cmdNegotiate, s.negotiate(c.Verb, c.Arg, ts)
	default:
		if ftp.IsTransferCommand(c.Verb) && s.current != nil && s.current.rep.Transfer == nil {
			text := c.Verb
			if arg := strings.TrimSpace(c.Arg); arg != "" {
				text += " " + arg
			}
			s.current.rep.Transfer = &Transfer{Command: clip(text, maxArgBytes), Time: ts, Replies: []string{}}
			cmd.kind, cmd.neg = cmdTransfer, s.current
		}
	}
	if len(s.pending) >= maxPendingCommands {
		s.pending = s.pending[1:]
	}
	s.pending = append(s.pending, cmd)
}

// negotiate starts a negotiation: earlier ones are settled (a new PASV or
// PORT replaces them), and a refused extended command before it is
// reported with this one as its fallback.
func (s *session) negotiate(verb, arg string, ts time.Time) *negotiation {
	s.settle(false)
	if r := s.refused; r != nil {
		s.refused = nil
		s.finding(FindingFallback, r.rep.Time, false, "%s refused by the server (%s); the client fell back to %s",
			r.rep.Command, r.rep.Reply, verb)
	}
	n := &negotiation{s: s, rep: DataConn{Command: verb, Time: ts, Connections: []*Conn{}}}
	arg = strings.TrimSpace(arg)
	switch verb {
	case "PORT":
		n.target, n.targetErr = nat.ParsePORT(arg)
	case "EPRT":
		n.target, n.targetErr = nat.ParseEPRT(arg)
	case "LPRT":
		n.target, n.targetErr = nat.ParseLPRT(arg)
	default:
		arg = "" // EPSV's protocol number is of no interest
	}
	n.rep.Arg = clip(arg, maxArgBytes)
	s.current = n
	s.negs = append(s.negs, n)
	return n
}

// replyLine collects the lines of a reply and handles it on its last line.
func (s *session) replyLine(rl ftp.ReplyLine, ts time.Time) {
	body := strings.TrimRight(string(rl.Raw), "\r\n")
	if s.rplCode == 0 {
		s.rplCode = rl.Code
		s.rplFirst = clip(body, maxReplyBytes)
		s.rplText = append(s.rplText[:0], body...)
	} else if len(s.rplText) < maxParseBytes {
		s.rplText = append(s.rplText, '\n')
		s.rplText = append(s.rplText, body...)
	}
	if len(s.rplText) > maxParseBytes {
		s.rplText = s.rplText[:maxParseBytes]
	}
	if !rl.Last {
		return
	}
	code := s.rplCode
	s.rplCode = 0
	s.reply(code, s.rplFirst, string(s.rplText), ts)
}

// passiveVerb is the negotiation a passive-mode reply code answers.
func passiveVerb(code int) string {
	switch code {
	case 227:
		return "PASV"
	case 228:
		return "LPSV"
	case 229:
		return "EPSV"
	}
	return ""
}

// reply handles one complete reply: first is its first line, text all of
// it.
func (s *session) reply(code int, first, text string, ts time.Time) {
	var cmd *command
	if len(s.pending) > 0 {
		cmd = s.pending[0]
	}
	if ftp.IsPreliminary(code) {
		if cmd != nil && cmd.kind == cmdTransfer && len(cmd.neg.rep.Transfer.Replies) < maxReplies {
			cmd.neg.rep.Transfer.Replies = append(cmd.neg.rep.Transfer.Replies, first)
		}
		return
	}
	if cmd != nil {
		s.pending = s.pending[1:]
	}
	// A passive-mode reply to something else: the command is not in the
	// capture (it started mid-session, or lost a segment). Take the reply
	// as its own negotiation.
	if v := passiveVerb(code); v != "" && (cmd == nil || cmd.kind != cmdNegotiate) {
		if cmd != nil {
			s.pending = append([]*command{cmd}, s.pending...) // its reply is still to come
		}
		cmd = &command{verb: v, kind: cmdNegotiate, neg: s.negotiate(v, "", ts)}
	}
	verb := "the greeting"
	if cmd != nil {
		verb = cmd.verb
		switch cmd.kind {
		case cmdNegotiate:
			s.negotiated(cmd.neg, code, first, text, ts)
		case cmdTransfer:
			t := cmd.neg.rep.Transfer
			if len(t.Replies) < maxReplies {
				t.Replies = append(t.Replies, first)
			}
			t.FinalCode = code
		case cmdAuth:
			if code == 234 {
				s.encrypted, s.rep.Encrypted = true, true
				s.finding(FindingAuthTLS, ts, false,
					"AUTH %s accepted (%s): the control channel is encrypted from here on, so no ALG on the path "+
						"(nor this trace) can read the data ports; terminate TLS in ftpgate so that it can open them",
					cmd.arg, first)
			}
		}
	}
	if code == 425 || code == 426 {
		kind := FindingReply425
		what := "the server could not open the data connection"
		if code == 426 {
			kind, what = FindingReply426, "the data connection broke during the transfer"
		}
		s.finding(kind, ts, true, "%s got %q: %s", verb, first, what)
		if cmd == nil || cmd.neg == nil {
			s.unexplained++
		}
	}
}

// negotiated handles the reply to a negotiation.
func (s *session) negotiated(n *negotiation, code int, first, text string, ts time.Time) {
	n.rep.Reply = first
	n.replied = true
	if !ftp.IsPositiveCompletion(code) {
		n.refused = true
		switch n.rep.Command {
		case "EPSV", "EPRT", "LPSV", "LPRT":
			s.refused = n
		default:
			s.finding(FindingRefused, ts, false, "%s refused by the server (%s)", n.rep.Command, first)
		}
		return
	}
	passive := true
	var ap netip.AddrPort
	var err error
	switch n.rep.Command {
	case "PASV":
		ap, err = nat.Parse227(text)
	case "LPSV":
		ap, err = nat.Parse228(text)
	case "EPSV":
		var port uint16
		port, err = nat.Parse229(text)
		ap = netip.AddrPortFrom(s.server.Addr(), port)
	default:
		passive = false
		ap, err = n.target, n.targetErr
	}
	if err != nil {
		n.parseErr = err
		return
	}
	control, sender, other, written := s.server, "server", "client", fmt.Sprintf("its %d reply", code)
	n.rep.ExpectedFrom = s.client.Addr()
	if !passive {
		control, sender, other, written = s.client, "client", "server", "its "+n.rep.Command+" command"
		n.rep.ExpectedFrom = s.server.Addr()
	}
	n.rep.Endpoint = ap
	if adv := ap.Addr().Unmap(); adv != control.Addr().Unmap() {
		n.rep.Alternative = netip.AddrPortFrom(control.Addr(), ap.Port())
		s.finding(FindingNATAddress, ts, false,
			"NAT without ALG: the %s wrote %s%s in %s, but its packets come from %s: a NAT translated the "+
				"control connection but not the address inside it (an FTP ALG such as ftpgate rewrites it), "+
				"so the %s is sent to an address it may not reach",
			sender, adv, describe(adv), written, control.Addr(), other)
	}
	s.a.open(n)
}

// describe names the kind of an address that should not cross a NAT.
func describe(a netip.Addr) string {
	switch {
	case a.IsUnspecified():
		return " (the unspecified address)"
	case a.IsLoopback():
		return " (a loopback address)"
	case a.IsPrivate():
		return " (a private address)"
	case a.IsLinkLocalUnicast():
		return " (a link-local address)"
	case a.Is4() && a.As4()[0] == 100 && a.As4()[1]&0xc0 == 64:
		return " (a carrier-grade NAT address)"
	}
	return ""
}

// maxUnreplied bounds the negotiations kept waiting for their replies.
const maxUnreplied = 8

// settle gives the unsettled negotiations their verdicts and files them in
// the report, listed or counted: all of them if all is set, else those
// whose reply is in (a pipelined PASV may still wait for its 227).
func (s *session) settle(all bool) {
	keep := s.negs[:0]
	for i, n := range s.negs {
		if !all && !n.replied && len(s.negs)-i <= maxUnreplied {
			keep = append(keep, n)
			continue
		}
		s.a.close(n)
		if n.refused {
			continue // not a data connection; reported as a finding
		}
		d := n.settle()
		if d.Failed {
			s.rep.Failed++
		}
		switch {
		case d.Failed && s.keptFailed < maxKeptFailed:
			s.keptFailed++
		case !d.Failed && s.keptOK < maxKeptOK:
			s.keptOK++
		default:
			if s.rep.Omitted == nil {
				s.rep.Omitted = map[Verdict]int{}
			}
			s.rep.Omitted[d.Verdict]++
			continue
		}
		s.rep.Data = append(s.rep.Data, d)
	}
	clear(s.negs[len(keep):])
	s.negs = keep
	s.current = nil
}

// finish settles the session and returns its report.
func (s *session) finish() *Session {
	s.settle(true)
	if r := s.refused; r != nil {
		s.refused = nil
		s.finding(FindingFallback, r.rep.Time, false, "%s refused by the server (%s); no other negotiation followed",
			r.rep.Command, r.rep.Reply)
	}
	s.rep.End = s.lastActivity()
	s.rep.Closed = s.closed
	s.rep.Failed += s.unexplained
	return &s.rep
}

// clip cuts s to at most n bytes.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// streamFactory makes the reassembly streams of control connections.
type streamFactory struct{ a *Analyzer }

// New implements reassembly.StreamFactory. It is called from
// Analyzer.controlPacket, which has set a.creating.
func (f streamFactory) New(_, _ gopacket.Flow, t *layers.TCP, _ reassembly.AssemblerContext) reassembly.Stream {
	s := f.a.creating
	return &ctrlStream{
		a:               f.a,
		key:             flowKey{s.client, s.server},
		firstFromClient: uint16(t.SrcPort) == s.client.Port() && f.a.dec.src == s.client.Addr(),
	}
}

// ctrlStream receives one control connection's reassembled bytes. It looks
// its session up on each delivery, so a session reported early (idle) and
// started again gets fresh readers.
type ctrlStream struct {
	a               *Analyzer
	key             flowKey
	firstFromClient bool // reassembly's "client to server" is the client's side
}

// Accept implements reassembly.Stream: every segment is taken, and a
// stream whose SYN is not in the capture starts at its first segment.
func (c *ctrlStream) Accept(t *layers.TCP, _ gopacket.CaptureInfo, _ reassembly.TCPFlowDirection,
	nextSeq reassembly.Sequence, start *bool, _ reassembly.AssemblerContext) bool {
	if nextSeq == reassembly.Sequence(-1) && !t.SYN {
		*start = true
	}
	return true
}

// ReassembledSG implements reassembly.Stream.
func (c *ctrlStream) ReassembledSG(sg reassembly.ScatterGather, ac reassembly.AssemblerContext) {
	s := c.a.sessions[c.key]
	if s == nil {
		return
	}
	dir, _, _, skip := sg.Info()
	n, _ := sg.Lengths()
	if n == 0 {
		return
	}
	ts := c.a.now
	if ac != nil {
		ts = ac.GetCaptureInfo().Timestamp
	}
	fromClient := (dir == reassembly.TCPDirClientToServer) == c.firstFromClient
	s.feed(fromClient, sg.Fetch(n), skip > 0, ts)
}

// ReassemblyComplete implements reassembly.Stream: the connection is
// forgotten; the session notes its end from the TCP flags itself.
func (c *ctrlStream) ReassemblyComplete(reassembly.AssemblerContext) bool {
	return true
}
