package trace

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"
)

// Verdict says what happened to one negotiated data connection.
type Verdict string

// The verdicts. Failed reports which of them are failures.
const (
	// Transferred: the data connection was made; the transfer command's
	// final reply, if the capture has it, is a positive completion.
	Transferred Verdict = "transferred"
	// Aborted: the data connection was made, but the transfer command got
	// a negative final reply (426, 451, ...).
	Aborted Verdict = "aborted"
	// NoConnection: a transfer command was sent, but the capture holds no
	// connection attempt to the negotiated endpoint.
	NoConnection Verdict = "no_connection"
	// SYNUnanswered: SYNs to the endpoint got no answer: dropped, most
	// likely by a firewall without a pinhole for the port.
	SYNUnanswered Verdict = "syn_unanswered"
	// Refused: the SYN was answered with a RST or an ICMP unreachable.
	Refused Verdict = "refused"
	// UnexpectedSource: connections to the endpoint came only from an
	// address other than the one the control session implies (port theft,
	// or a NAT between the peers and the capture point).
	UnexpectedSource Verdict = "unexpected_source"
	// Unused: the negotiation was followed by neither a transfer command
	// nor a connection attempt. Not a failure.
	Unused Verdict = "unused"
)

// Failed reports whether v is a failure of the data connection.
func (v Verdict) Failed() bool {
	switch v {
	case Aborted, NoConnection, SYNUnanswered, Refused, UnexpectedSource:
		return true
	}
	return false
}

// Finding kinds: session-level observations.
const (
	// FindingNATAddress: a 227 (or PORT/EPRT/LPRT/228) named an address
	// other than the one the sender's packets come from.
	FindingNATAddress = "nat_address"
	// FindingAuthTLS: the session switched to TLS (AUTH TLS accepted).
	FindingAuthTLS = "auth_tls"
	// FindingFallback: EPSV/EPRT (or LPSV/LPRT) was refused by the server.
	FindingFallback = "fallback"
	// FindingRefused: a PASV or PORT was refused by the server.
	FindingRefused = "negotiation_refused"
	// FindingReply425 and FindingReply426: the server could not open, or
	// lost, a data connection.
	FindingReply425 = "reply_425"
	FindingReply426 = "reply_426"
	// FindingMidSession: the capture started after the session did.
	FindingMidSession = "mid_session"
)

// Session is the report on one FTP control session.
type Session struct {
	// Client and Server are the control connection's endpoints as the
	// capture saw them.
	Client netip.AddrPort `json:"client"`
	Server netip.AddrPort `json:"server"`
	// Start and End are the times of its first and last packets.
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// User is the USER argument; the password is never kept, Password
	// only says that one was sent.
	User     string `json:"user,omitempty"`
	Password bool   `json:"password_sent,omitempty"`
	// Closed is set when the end of the control connection (FIN both ways,
	// or a RST) is in the capture.
	Closed bool `json:"closed"`
	// Encrypted is set once AUTH TLS (or SSL) was accepted.
	Encrypted bool `json:"encrypted,omitempty"`
	// Data lists the data-connection negotiations the server accepted, in
	// order, each with its verdict. Past a bound, further ones are only
	// counted in Omitted.
	Data []*DataConn `json:"data_connections"`
	// Omitted counts, by verdict, negotiations not listed in Data.
	Omitted map[Verdict]int `json:"omitted,omitempty"`
	// Findings are session-level observations, in order.
	Findings []Finding `json:"findings"`
	// Failed is the number of failed data connections, listed or not, plus
	// 425 and 426 replies not explained by one of them.
	Failed int `json:"failed"`
}

// DataConn is one data-connection negotiation and what became of it.
type DataConn struct {
	// Command is the negotiating command: PASV, EPSV, LPSV, PORT, EPRT or
	// LPRT; Arg is its argument (for PORT, EPRT and LPRT).
	Command string    `json:"command"`
	Arg     string    `json:"argument,omitempty"`
	Time    time.Time `json:"time"`
	// Reply is the server's reply to it.
	Reply string `json:"reply"`
	// Endpoint is where the data connection was to go: the address and
	// port named in the reply (PASV, LPSV) or the command (PORT, EPRT,
	// LPRT), or the server's control address and the port of a 229.
	Endpoint netip.AddrPort `json:"endpoint,omitzero"`
	// Alternative is the other endpoint a connection may be seen at: the
	// control peer's address with the same port, when Endpoint names
	// another address (clients that ignore the 227 address connect there).
	Alternative netip.AddrPort `json:"alternative,omitzero"`
	// ExpectedFrom is the address the data connection should come from:
	// the client's for passive mode, the server's for active mode.
	ExpectedFrom netip.Addr `json:"expected_from,omitzero"`
	// Transfer is the transfer command that used the negotiation.
	Transfer *Transfer `json:"transfer,omitempty"`
	// Connections are the TCP connections to the endpoint seen after the
	// negotiation; MoreConnections counts those past a bound.
	Connections     []*Conn `json:"connections"`
	MoreConnections int     `json:"more_connections,omitempty"`
	Verdict         Verdict `json:"verdict"`
	Failed          bool    `json:"failed"`
	// Explanation says in words what happened and why.
	Explanation string `json:"explanation"`
}

// Transfer is a transfer command (RETR, STOR, STOU, APPE, LIST, NLST, MLSD)
// and the server's replies to it.
type Transfer struct {
	Command string    `json:"command"`
	Time    time.Time `json:"time"`
	// Replies are the preliminary (1xx) and final replies, first lines.
	Replies []string `json:"replies"`
	// FinalCode is the final reply's code, 0 if the capture lacks it.
	FinalCode int `json:"final_code,omitempty"`
}

// Conn is one TCP connection (attempt) to a negotiated endpoint.
type Conn struct {
	From  netip.AddrPort `json:"from"`
	To    netip.AddrPort `json:"to"`
	Start time.Time      `json:"start"`
	End   time.Time      `json:"end"`
	// ExpectedSource reports whether From has the expected address.
	ExpectedSource bool `json:"expected_source"`
	// SYNs counts the initiator's SYNs, retransmissions included.
	SYNs int `json:"syns"`
	// Answer is how the SYN was answered: "syn-ack", "rst", "icmp" or
	// "none". "handshake" means the answer is missing from the capture
	// but the initiator went on as if it had one.
	Answer string `json:"answer"`
	// ICMP describes an ICMP error about the connection, if one was seen.
	ICMP string `json:"icmp,omitempty"`
	// Established is set once the three-way handshake completed.
	Established bool `json:"established"`
	// Bytes counts payload bytes by direction (from the TCP sequence and
	// acknowledgement numbers, so retransmissions, a short snap length or
	// packets missing from the capture do not skew it).
	BytesFromInitiator uint64 `json:"bytes_from_initiator"`
	BytesFromResponder uint64 `json:"bytes_from_responder"`
	// Seconds is the time from the first SYN to the last packet seen.
	Seconds float64 `json:"seconds"`
	// Closed says how it ended: "fin", "rst", or "" if the capture ended
	// or the connection went idle first.
	Closed string `json:"closed,omitempty"`
}

// Bytes is the payload in both directions.
func (c *Conn) Bytes() uint64 { return c.BytesFromInitiator + c.BytesFromResponder }

// Finding is a session-level observation.
type Finding struct {
	Kind    string    `json:"kind"`
	Time    time.Time `json:"time"`
	Message string    `json:"message"`
	// Failure is set for findings that mean a data connection failed
	// (425 and 426 replies).
	Failure bool `json:"failure,omitempty"`
}

// Summary is the outcome of a whole capture.
type Summary struct {
	Source string `json:"source"`
	// Packets counts the packets read; TCPPackets those that held TCP.
	Packets    uint64 `json:"packets"`
	TCPPackets uint64 `json:"tcp_packets"`
	// Start and End are the first and last packet times.
	Start time.Time `json:"start,omitzero"`
	End   time.Time `json:"end,omitzero"`
	// Sessions counts the FTP control sessions reported.
	Sessions int `json:"sessions"`
	// Verdicts counts data connections by verdict.
	Verdicts map[Verdict]int `json:"verdicts"`
	// DataConnections and Failed count negotiated data connections and
	// failures (including 425/426 replies without a failed negotiation).
	DataConnections int `json:"data_connections"`
	Failed          int `json:"failed"`
	// Warnings are problems with the capture itself: truncation, skipped
	// link types, limits reached.
	Warnings []string `json:"warnings,omitempty"`
}

// OK reports whether no data connection failed.
func (s *Summary) OK() bool { return s.Failed == 0 }

// add counts a finished session into s.
func (s *Summary) add(r *Session) {
	s.Sessions++
	if s.Verdicts == nil {
		s.Verdicts = map[Verdict]int{}
	}
	for _, d := range r.Data {
		s.Verdicts[d.Verdict]++
		if d.Verdict != Unused {
			s.DataConnections++
		}
	}
	for v, n := range r.Omitted {
		s.Verdicts[v] += n
		if v != Unused {
			s.DataConnections += n
		}
	}
	s.Failed += r.Failed
}

// Reporter receives the sessions as they end, then the summary.
type Reporter interface {
	// Session reports one finished session.
	Session(r *Session) error
	// Finish reports the summary and ends the report.
	Finish(s *Summary) error
}

// JSONReporter writes one JSON document,
// {"sessions":[...],"summary":{...}}, streaming each session as it ends.
type JSONReporter struct {
	w     io.Writer
	count int
}

// NewJSONReporter returns a JSONReporter writing to w.
func NewJSONReporter(w io.Writer) *JSONReporter {
	return &JSONReporter{w: w}
}

// Session writes r as the next element of "sessions".
func (j *JSONReporter) Session(r *Session) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding session %s: %w", r.Client, err)
	}
	prefix := ",\n"
	if j.count == 0 {
		prefix = `{"sessions":[` + "\n"
	}
	j.count++
	if _, err := io.WriteString(j.w, prefix); err != nil {
		return fmt.Errorf("writing report: %w", err)
	}
	if _, err := j.w.Write(b); err != nil {
		return fmt.Errorf("writing report: %w", err)
	}
	return nil
}

// Finish writes the summary and closes the document.
func (j *JSONReporter) Finish(s *Summary) error {
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encoding summary: %w", err)
	}
	head := "\n],"
	if j.count == 0 {
		head = `{"sessions":[],`
	}
	if _, err := fmt.Fprintf(j.w, "%s\n\"summary\":%s}\n", head, b); err != nil {
		return fmt.Errorf("writing report: %w", err)
	}
	return nil
}

// TextReporter writes a report for people, one block per session.
type TextReporter struct {
	w io.Writer
	// Location is the time zone of the times printed; nil means UTC.
	Location *time.Location
}

// NewTextReporter returns a TextReporter writing to w.
func NewTextReporter(w io.Writer) *TextReporter {
	return &TextReporter{w: w}
}

func (t *TextReporter) clock(ts time.Time) string {
	loc := t.Location
	if loc == nil {
		loc = time.UTC
	}
	return ts.In(loc).Format("15:04:05.000")
}

// Session writes the block of one session.
func (t *TextReporter) Session(r *Session) error {
	var b strings.Builder
	fmt.Fprintf(&b, "session %s -> %s, %s to %s", r.Client, r.Server, t.clock(r.Start), t.clock(r.End))
	if r.User != "" {
		fmt.Fprintf(&b, ", user %s", printable(r.User))
	}
	if r.Password {
		b.WriteString(", password ****")
	}
	if !r.Closed {
		b.WriteString(" (still open at the end of the capture)")
	}
	b.WriteString("\n")
	if len(r.Data) == 0 && len(r.Omitted) == 0 {
		b.WriteString("  no data connection negotiated\n")
	}
	for _, d := range r.Data {
		fmt.Fprintf(&b, "  %s", d.Command)
		if d.Arg != "" {
			fmt.Fprintf(&b, " %s", printable(d.Arg))
		}
		fmt.Fprintf(&b, " at %s -> %s\n", t.clock(d.Time), printable(d.Reply))
		if d.Endpoint.IsValid() {
			fmt.Fprintf(&b, "      data connection to %s", d.Endpoint)
			if d.Alternative.IsValid() {
				fmt.Fprintf(&b, " (or %s)", d.Alternative)
			}
			if d.ExpectedFrom.IsValid() {
				fmt.Fprintf(&b, " from %s", d.ExpectedFrom)
			}
			b.WriteString("\n")
		}
		mark := "ok    "
		switch {
		case d.Failed:
			mark = "FAILED"
		case d.Verdict == Unused:
			mark = "-     "
		}
		fmt.Fprintf(&b, "    %s %s\n", mark, d.Explanation)
		if d.Transfer != nil {
			fmt.Fprintf(&b, "      %s", printable(d.Transfer.Command))
			if len(d.Transfer.Replies) == 0 {
				b.WriteString(": no reply in the capture")
			}
			for i, rp := range d.Transfer.Replies {
				sep := ", "
				if i == 0 {
					sep = ": "
				}
				fmt.Fprintf(&b, "%s%s", sep, printable(rp))
			}
			b.WriteString("\n")
		}
	}
	if len(r.Omitted) > 0 {
		text := verdictCounts(r.Omitted)
		if n := r.Omitted[Unused]; n > 0 {
			if text != "" {
				text += ", "
			}
			text += fmt.Sprintf("%d unused", n)
		}
		fmt.Fprintf(&b, "  and %s not listed\n", text)
	}
	for _, f := range r.Findings {
		mark := "note"
		if f.Failure || f.Kind == FindingNATAddress || f.Kind == FindingAuthTLS {
			mark = "!"
		}
		fmt.Fprintf(&b, "  %-4s %s %s\n", mark, t.clock(f.Time), f.Message)
	}
	b.WriteString("\n")
	if _, err := io.WriteString(t.w, b.String()); err != nil {
		return fmt.Errorf("writing report: %w", err)
	}
	return nil
}

// Finish writes the summary lines.
func (t *TextReporter) Finish(s *Summary) error {
	var b strings.Builder
	for _, w := range s.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	fmt.Fprintf(&b, "%s: %d packets (%d TCP), %d FTP session", s.Source, s.Packets, s.TCPPackets, s.Sessions)
	if s.Sessions != 1 {
		b.WriteString("s")
	}
	fmt.Fprintf(&b, ", %d data connection", s.DataConnections)
	if s.DataConnections != 1 {
		b.WriteString("s")
	}
	if s.DataConnections > 0 {
		fmt.Fprintf(&b, " (%s)", verdictCounts(s.Verdicts))
	}
	if n := s.Verdicts[Unused]; n > 0 {
		fmt.Fprintf(&b, ", %d negotiation", n)
		if n != 1 {
			b.WriteString("s")
		}
		b.WriteString(" not used")
	}
	b.WriteString("\n")
	switch {
	case s.Sessions == 0:
		b.WriteString("result: no FTP control session in the capture (control ports: see --ports)\n")
	case s.Failed == 0:
		b.WriteString("result: OK, every data connection succeeded\n")
	default:
		fmt.Fprintf(&b, "result: FAILED, %d failure", s.Failed)
		if s.Failed != 1 {
			b.WriteString("s")
		}
		b.WriteString("\n")
	}
	if _, err := io.WriteString(t.w, b.String()); err != nil {
		return fmt.Errorf("writing report: %w", err)
	}
	return nil
}

// verdictCounts writes counts as "2 transferred, 1 syn_unanswered", in a
// fixed order.
func verdictCounts(m map[Verdict]int) string {
	var parts []string
	for _, v := range [...]Verdict{Transferred, Aborted, NoConnection, SYNUnanswered, Refused, UnexpectedSource} {
		if n := m[v]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, v))
		}
	}
	return strings.Join(parts, ", ")
}

// printable replaces control bytes and invalid UTF-8 in s, so that text
// taken from the capture cannot mess up a terminal.
func printable(s string) string {
	clean := true
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			b.WriteByte('?')
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
