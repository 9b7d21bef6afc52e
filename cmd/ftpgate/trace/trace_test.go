package trace

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Each test writes a capture of one scenario and checks the verdict or the
// finding that scenario must produce.

func TestTransferredPASV(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	f := c.ftp(client, gateway)
	f.login()
	f.cmd("PASV", "227 Entering Passive Mode (198,19,0,1,156,65).")
	data := ap("198.19.0.1:40001")
	f.cmd("RETR pub/big.bin", "150 Opening BINARY mode data connection for pub/big.bin (100000 bytes).")
	c.transfer(ap("198.19.0.2:50000"), data, 100000, false)
	f.send(false, "226 Transfer complete.\r\n")
	f.quit()

	col, err := analyze(t, buf.Bytes(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	s, d := one(t, col)
	if s.Client != client || s.Server != gateway || s.User != "anonymous" || !s.Password || !s.Closed {
		t.Errorf("session = %+v", s)
	}
	if d.Verdict != Transferred || d.Failed || d.Endpoint != data || d.Alternative.IsValid() {
		t.Fatalf("data connection = %+v", d)
	}
	if len(d.Connections) != 1 || d.Connections[0].BytesFromResponder != 100000 || d.Connections[0].Closed != "fin" {
		t.Errorf("connections = %+v", d.Connections[0])
	}
	if d.Transfer == nil || d.Transfer.Command != "RETR pub/big.bin" || d.Transfer.FinalCode != 226 || len(d.Transfer.Replies) != 2 {
		t.Errorf("transfer = %+v", d.Transfer)
	}
	if !strings.Contains(d.Explanation, "transferred 100000 bytes") {
		t.Errorf("explanation %q", d.Explanation)
	}
	if len(s.Findings) != 0 || s.Failed != 0 || !col.summary.OK() || col.summary.Verdicts[Transferred] != 1 {
		t.Errorf("findings %+v, failed %d, summary %+v", s.Findings, s.Failed, col.summary)
	}
	// The password is never kept.
	var out bytes.Buffer
	for _, rep := range []Reporter{NewJSONReporter(&out), NewTextReporter(&out)} {
		if err := rep.Session(s); err != nil {
			t.Fatal(err)
		}
	}
	if strings.Contains(out.String(), "s3cret") {
		t.Errorf("the report shows the password:\n%s", out.String())
	}
}

// TestSYNUnansweredNAT is the home router without ALG: the server behind a
// plain DNAT advertises its private address, the client connects there,
// and the firewall drops the SYNs.
func TestSYNUnansweredNAT(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	f := c.ftp(client, server)
	f.login()
	f.cmd("PASV", "227 Entering Passive Mode (198,18,1,2,117,50).")
	for _, wait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 0} {
		c.syn(ap("198.19.0.2:50001"), ap("198.18.1.2:30002"), 777)
		c.tick(wait)
	}
	f.quit()

	col, err := analyze(t, buf.Bytes(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	s, d := one(t, col)
	if d.Verdict != SYNUnanswered || !d.Failed || d.Endpoint != ap("198.18.1.2:30002") || d.Alternative != ap("198.19.0.10:30002") {
		t.Fatalf("data connection = %+v", d)
	}
	if c := d.Connections[0]; c.SYNs != 4 || c.Answer != "none" || c.Established {
		t.Errorf("connection = %+v", c)
	}
	for _, want := range []string{"SYN without answer", "4 SYNs over 7.0 s", "firewall without a pinhole", "198.18.1.2 is the address written in the reply"} {
		if !strings.Contains(d.Explanation, want) {
			t.Errorf("explanation %q lacks %q", d.Explanation, want)
		}
	}
	nat := findingOf(s, FindingNATAddress)
	if nat == nil || !strings.Contains(nat.Message, "wrote 198.18.1.2 in its 227 reply") || !strings.Contains(nat.Message, "come from 198.19.0.10") {
		t.Fatalf("findings %+v", s.Findings)
	}
	if s.Failed != 1 || col.summary.OK() {
		t.Errorf("failed %d, summary %+v", s.Failed, col.summary)
	}
}

func TestRefusedRST(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	f := c.ftp(client, server)
	f.login()
	f.cmd("EPSV", "229 Entering Extended Passive Mode (|||30003|)")
	from, to := ap("198.19.0.2:50002"), ap("198.19.0.10:30003")
	c.syn(from, to, 100)
	c.tcp(to, from, tcpFlags{rst: true, ack: true}, 0, 101, nil)
	f.quit()

	col, _ := analyze(t, buf.Bytes(), Config{})
	s, d := one(t, col)
	if d.Verdict != Refused || !d.Failed || d.Endpoint != to || !strings.Contains(d.Explanation, "answered with a RST") {
		t.Fatalf("data connection = %+v", d)
	}
	if len(s.Findings) != 0 {
		t.Errorf("findings %+v: a 229 names no address", s.Findings)
	}
}

func TestRefusedICMP(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	f := c.ftp(client, server)
	f.login()
	f.cmd("EPSV", "229 Entering Extended Passive Mode (|||30004|)")
	from, to := ap("198.19.0.2:50003"), ap("198.19.0.10:30004")
	c.syn(from, to, 100)
	c.unreachable(netip.MustParseAddr("198.19.0.1"), from, to, 100)
	f.quit()

	col, _ := analyze(t, buf.Bytes(), Config{})
	_, d := one(t, col)
	if d.Verdict != Refused || d.Connections[0].Answer != "icmp" || !strings.Contains(d.Explanation, "from 198.19.0.1") {
		t.Fatalf("data connection = %+v, connection %+v", d, d.Connections[0])
	}
}

func TestNoConnection(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	f := c.ftp(client, server)
	f.login()
	f.cmd("PORT 198,19,0,2,195,80", "200 PORT command successful. Consider using PASV.")
	f.cmd("LIST", "425 Failed to establish connection.")
	f.quit()

	col, _ := analyze(t, buf.Bytes(), Config{})
	s, d := one(t, col)
	if d.Verdict != NoConnection || !d.Failed || d.Endpoint != ap("198.19.0.2:50000") || d.ExpectedFrom != server.Addr() {
		t.Fatalf("data connection = %+v", d)
	}
	f425 := findingOf(s, FindingReply425)
	if f425 == nil || !f425.Failure || !strings.Contains(f425.Message, `LIST got "425 Failed to establish connection."`) {
		t.Fatalf("findings %+v", s.Findings)
	}
	// The 425 explains the failed data connection: one failure, not two.
	if s.Failed != 1 {
		t.Errorf("failed = %d, want 1", s.Failed)
	}
}

func TestUnexpectedSource(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	f := c.ftp(client, gateway)
	f.login()
	f.cmd("PASV", "227 Entering Passive Mode (198,19,0,1,156,66).")
	c.transfer(ap("198.19.1.2:6666"), ap("198.19.0.1:40002"), 10, true) // the thief
	f.cmd("LIST", "425 Failed to establish connection.")
	f.quit()

	col, _ := analyze(t, buf.Bytes(), Config{})
	_, d := one(t, col)
	if d.Verdict != UnexpectedSource || !d.Failed || !strings.Contains(d.Explanation, "expected from 198.19.0.2") {
		t.Fatalf("data connection = %+v", d)
	}
}

func TestTheftAttemptBesideTransfer(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	f := c.ftp(client, gateway)
	f.login()
	f.cmd("PASV", "227 Entering Passive Mode (198,19,0,1,156,66).")
	c.syn(ap("198.19.1.2:6666"), ap("198.19.0.1:40002"), 1)
	f.cmd("LIST", "150 Here comes the directory listing.")
	c.transfer(ap("198.19.0.2:50000"), ap("198.19.0.1:40002"), 300, false)
	f.send(false, "226 Directory send OK.\r\n")
	f.quit()

	col, _ := analyze(t, buf.Bytes(), Config{})
	_, d := one(t, col)
	if d.Verdict != Transferred || d.Failed || len(d.Connections) != 2 || !strings.Contains(d.Explanation, "port theft attempt") {
		t.Fatalf("data connection = %+v", d)
	}
}

func TestAborted(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	f := c.ftp(client, gateway)
	f.login()
	f.cmd("EPSV", "229 Entering Extended Passive Mode (|||40003|)")
	f.cmd("RETR pub/big.bin", "150 Opening BINARY mode data connection.")
	k := c.dial(ap("198.19.0.2:50004"), ap("198.19.0.1:40003"))
	k.send(false, strings.Repeat("y", 1000))
	c.tcp(k.srv, k.cli, tcpFlags{rst: true, ack: true}, k.sseq, k.cseq, nil)
	f.send(false, "426 Failure writing network stream.\r\n")
	f.quit()

	col, _ := analyze(t, buf.Bytes(), Config{})
	s, d := one(t, col)
	if d.Verdict != Aborted || !d.Failed || d.Connections[0].Closed != "rst" || d.Connections[0].BytesFromResponder != 1000 {
		t.Fatalf("data connection = %+v %+v", d, d.Connections[0])
	}
	if findingOf(s, FindingReply426) == nil || s.Failed != 1 {
		t.Errorf("findings %+v, failed %d", s.Findings, s.Failed)
	}
}

func TestUnused(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	f := c.ftp(client, gateway)
	f.login()
	f.cmd("PASV", "227 Entering Passive Mode (198,19,0,1,156,67).")
	f.quit()

	col, _ := analyze(t, buf.Bytes(), Config{})
	s, d := one(t, col)
	if d.Verdict != Unused || d.Failed || s.Failed != 0 || !col.summary.OK() || col.summary.DataConnections != 0 {
		t.Fatalf("data connection = %+v, summary %+v", d, col.summary)
	}
}

func TestAuthTLS(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	f := c.ftp(client, server)
	f.cmd("AUTH TLS", "234 Proceed with negotiation.")
	// From here the bytes are TLS; whatever they look like, they are not
	// read as commands.
	f.send(true, "\x16\x03\x01\x02\x00PASV\r\n")
	f.send(false, "\x16\x03\x03\x00\x7a227 Entering Passive Mode (198,18,1,2,117,50).\r\n")
	f.close()

	col, _ := analyze(t, buf.Bytes(), Config{})
	if len(col.sessions) != 1 {
		t.Fatalf("%d sessions", len(col.sessions))
	}
	s := col.sessions[0]
	tls := findingOf(s, FindingAuthTLS)
	if !s.Encrypted || tls == nil || len(s.Data) != 0 || !strings.Contains(tls.Message, "terminate TLS in ftpgate") {
		t.Fatalf("session %+v", s)
	}
}

func TestFallback(t *testing.T) {
	for _, tt := range []struct {
		ext, extReply, plain, plainReply string
		from, to                         string
	}{
		{"EPSV", "500 Unknown command.", "PASV", "227 Entering Passive Mode (198,19,0,1,156,68).", "198.19.0.2:50005", "198.19.0.1:40004"},
		{"EPRT |1|198.19.0.2|50006|", "522 Network protocol not supported.", "PORT 198,19,0,2,195,86", "200 PORT command successful.",
			"198.19.0.1:20", "198.19.0.2:50006"},
	} {
		t.Run(tt.ext[:4], func(t *testing.T) {
			var buf bytes.Buffer
			c := newCapture(t, &buf, false)
			f := c.ftp(client, gateway)
			f.login()
			f.cmd(tt.ext, tt.extReply)
			f.cmd(tt.plain, tt.plainReply)
			f.cmd("LIST", "150 Here comes the directory listing.")
			c.transfer(ap(tt.from), ap(tt.to), 300, false)
			f.send(false, "226 Directory send OK.\r\n")
			f.quit()

			col, _ := analyze(t, buf.Bytes(), Config{})
			s, d := one(t, col)
			if d.Verdict != Transferred || d.Command != tt.plain[:4] {
				t.Fatalf("data connection = %+v", d)
			}
			fb := findingOf(s, FindingFallback)
			want := fmt.Sprintf("%s refused by the server (%s); the client fell back to %s", tt.ext[:4], tt.extReply, tt.plain[:4])
			if fb == nil || fb.Message != want {
				t.Fatalf("findings %+v, want %q", s.Findings, want)
			}
		})
	}
}

func TestRefusedNegotiation(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	f := c.ftp(client, gateway)
	f.login()
	f.cmd("PORT 198,19,0,99,195,86", "501 Illegal address: 198.19.0.99.")
	f.cmd("EPSV", "522 Use PASV.")
	f.quit()

	col, _ := analyze(t, buf.Bytes(), Config{})
	s := col.sessions[0]
	if len(s.Data) != 0 || findingOf(s, FindingRefused) == nil {
		t.Fatalf("session %+v", s)
	}
	fb := findingOf(s, FindingFallback)
	if fb == nil || !strings.Contains(fb.Message, "no other negotiation followed") {
		t.Fatalf("findings %+v", s.Findings)
	}
}

// TestActiveBehindNAT is a client behind its own NAT: its PORT names its
// private address, the server connects there and gets no answer.
func TestActiveBehindNAT(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	f := c.ftp(client, serverPriv)
	f.login()
	f.cmd("PORT 192,168,1,5,195,80", "200 PORT command successful. Consider using PASV.")
	f.cmd("LIST", "")
	c.syn(ap("198.18.1.2:20"), ap("192.168.1.5:50000"), 9)
	c.tick(3 * time.Second)
	c.syn(ap("198.18.1.2:20"), ap("192.168.1.5:50000"), 9)
	f.send(false, "425 Failed to establish connection.\r\n")
	f.quit()

	col, _ := analyze(t, buf.Bytes(), Config{})
	s, d := one(t, col)
	if d.Verdict != SYNUnanswered || d.ExpectedFrom != serverPriv.Addr() || d.Alternative != ap("198.19.0.2:50000") {
		t.Fatalf("data connection = %+v", d)
	}
	nat := findingOf(s, FindingNATAddress)
	if nat == nil || !strings.Contains(nat.Message, "client wrote 192.168.1.5 (a private address) in its PORT command") {
		t.Fatalf("findings %+v", s.Findings)
	}
}

func TestActiveTransferred(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	f := c.ftp(client, serverPriv)
	f.login()
	f.cmd("EPRT |1|198.19.0.2|50010|", "200 EPRT command successful. Consider using EPSV.")
	f.cmd("STOR upload/x", "150 Ok to send data.")
	c.transfer(ap("198.18.1.2:20"), ap("198.19.0.2:50010"), 5000, false)
	f.send(false, "226 Transfer complete.\r\n")
	f.quit()

	col, _ := analyze(t, buf.Bytes(), Config{})
	_, d := one(t, col)
	if d.Verdict != Transferred || d.Arg != "|1|198.19.0.2|50010|" || d.Connections[0].Bytes() != 5000 {
		t.Fatalf("data connection = %+v", d)
	}
}

func TestIPv6EPSV(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, true)
	cli, srv := ap("[2001:db8:19::2]:41000"), ap("[2001:db8:19::1]:21")
	f := c.ftp(cli, srv)
	f.login()
	f.cmd("EPSV 2", "229 Entering Extended Passive Mode (|||40005|)")
	f.cmd("NLST", "150 Here comes the directory listing.")
	c.transfer(ap("[2001:db8:19::2]:50000"), ap("[2001:db8:19::1]:40005"), 2000, false)
	f.send(false, "226 Directory send OK.\r\n")
	f.quit()
	c.flush()

	col, _ := analyze(t, buf.Bytes(), Config{})
	_, d := one(t, col)
	if d.Verdict != Transferred || d.Endpoint != ap("[2001:db8:19::1]:40005") || d.Connections[0].Bytes() != 2000 {
		t.Fatalf("data connection = %+v", d)
	}
}

func TestLongPassive(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	f := c.ftp(client, server)
	f.login()
	f.cmd("LPSV", "228 Entering Long Passive Mode (4,4,198,18,1,2,2,117,51)")
	c.syn(ap("198.19.0.2:50007"), ap("198.18.1.2:30003"), 1)
	f.cmd("LPRT 4,4,198,19,0,2,2,195,88", "200 LPRT command successful.")
	f.cmd("LIST", "150 Here comes the directory listing.")
	c.transfer(ap("198.19.0.10:20"), ap("198.19.0.2:50008"), 100, false)
	f.send(false, "226 Directory send OK.\r\n")
	f.quit()

	col, _ := analyze(t, buf.Bytes(), Config{})
	s := col.sessions[0]
	if len(s.Data) != 2 || s.Data[0].Verdict != SYNUnanswered || s.Data[1].Verdict != Transferred {
		t.Fatalf("data %+v", s.Data)
	}
	if nat := findingOf(s, FindingNATAddress); nat == nil || !strings.Contains(nat.Message, "in its 228 reply") {
		t.Fatalf("findings %+v", s.Findings)
	}
}

// TestMidSession is a capture that starts after the login, with a 227 whose
// PASV is not in it.
func TestMidSession(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	k := &conn{c: c, cli: client, srv: server, cseq: 70000, sseq: 90000}
	k.send(false, "227 Entering Passive Mode (198,18,1,2,117,52).\r\n")
	c.syn(ap("198.19.0.2:50009"), ap("198.19.0.10:30004"), 1)
	ftpConn{k}.quit()

	col, _ := analyze(t, buf.Bytes(), Config{})
	s, d := one(t, col)
	if findingOf(s, FindingMidSession) == nil || d.Command != "PASV" || d.Verdict != SYNUnanswered {
		t.Fatalf("session %+v, data %+v", s, d)
	}
	if s.Client != client || s.Server != server {
		t.Errorf("client %v server %v: the side with port 21 is the server", s.Client, s.Server)
	}
}

// TestReorderedControl writes the control channel with a command split
// across segments, segments out of order and retransmitted: the commands
// and replies still decode.
func TestReorderedControl(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	f := c.ftp(client, gateway)
	f.login()
	// "PASV\r\n" in three segments: the last first, then a retransmission
	// of it, then the first two.
	f.segment(true, 4, "\r\n")
	f.segment(true, 4, "\r\n")
	f.segment(true, 0, "PA")
	f.segment(true, 2, "SV")
	f.segment(true, 0, "PA") // a retransmission of data already delivered
	f.skip(true, 6)
	// The reply in two segments, reordered.
	reply := "227 Entering Passive Mode (198,19,0,1,156,69).\r\n"
	f.segment(false, 20, reply[20:])
	f.segment(false, 0, reply[:20])
	f.skip(false, len(reply))
	f.send(true, "LIS") // one command in two segments
	f.cmd("T", "150 Here comes the directory listing.")
	c.transfer(ap("198.19.0.2:50011"), ap("198.19.0.1:40005"), 700, false)
	f.send(false, "226 Directory send OK.\r\n")
	f.quit()

	col, _ := analyze(t, buf.Bytes(), Config{})
	_, d := one(t, col)
	if d.Verdict != Transferred || d.Endpoint != ap("198.19.0.1:40005") || d.Transfer == nil || d.Transfer.Command != "LIST" {
		t.Fatalf("data connection = %+v, transfer %+v", d, d.Transfer)
	}
}

func TestRetransmittedData(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	f := c.ftp(client, gateway)
	f.login()
	f.cmd("EPSV", "229 Entering Extended Passive Mode (|||40006|)")
	f.cmd("RETR x", "150 Opening BINARY mode data connection.")
	k := c.dial(ap("198.19.0.2:50012"), ap("198.19.0.1:40006"))
	k.segment(false, 1000, strings.Repeat("b", 1000)) // out of order
	k.segment(false, 0, strings.Repeat("a", 1000))
	k.segment(false, 0, strings.Repeat("a", 1000)) // retransmitted
	k.skip(false, 2000)
	k.close()
	f.send(false, "226 Transfer complete.\r\n")
	f.quit()

	col, _ := analyze(t, buf.Bytes(), Config{})
	_, d := one(t, col)
	if d.Verdict != Transferred || d.Connections[0].BytesFromResponder != 2000 {
		t.Fatalf("data connection = %+v, %+v", d, d.Connections[0])
	}
}

// TestLateNegotiation: the 227 is held back by a missing control segment
// that arrives after the client's SYN; the SYN is still matched.
func TestLateNegotiation(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	f := c.ftp(client, server)
	f.login()
	f.cmd("PASV", "")
	reply := "227 Entering Passive Mode (198,18,1,2,117,53).\r\n"
	f.segment(false, 10, reply[10:])
	c.syn(ap("198.19.0.2:50013"), ap("198.18.1.2:30005"), 5)
	f.segment(false, 0, reply[:10])
	f.skip(false, len(reply))
	c.tick(3 * time.Second)
	c.syn(ap("198.19.0.2:50013"), ap("198.18.1.2:30005"), 5)
	f.quit()

	col, _ := analyze(t, buf.Bytes(), Config{})
	_, d := one(t, col)
	if d.Verdict != SYNUnanswered || d.Connections[0].SYNs != 2 {
		t.Fatalf("data connection = %+v", d)
	}
}

func TestTruncatedFile(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	f := c.ftp(client, server)
	f.login()
	f.cmd("PASV", "227 Entering Passive Mode (198,18,1,2,117,50).")
	c.syn(ap("198.19.0.2:50001"), ap("198.18.1.2:30002"), 777)
	f.cmd("NOOP", "200 NOOP ok.")
	data := buf.Bytes()[:buf.Len()-10] // the last packet is cut short

	col, err := analyze(t, data, Config{})
	if err != nil {
		t.Fatalf("Run: %v; a truncated capture is a warning", err)
	}
	_, d := one(t, col)
	if d.Verdict != SYNUnanswered {
		t.Errorf("verdict %s", d.Verdict)
	}
	if len(col.summary.Warnings) != 1 || !strings.Contains(col.summary.Warnings[0], "truncated") {
		t.Errorf("warnings %q", col.summary.Warnings)
	}
	if col.sessions[0].Closed {
		t.Error("the session is closed, but its end is not in the capture")
	}
}

func TestBadFiles(t *testing.T) {
	var good bytes.Buffer
	newCapture(t, &good, false)
	for name, data := range map[string][]byte{
		"empty":        nil,
		"short header": good.Bytes()[:10],
		"text":         []byte("220 (vsFTPd 3.0.3)\r\nUSER anonymous\r\n"),
		"pcapng bad":   {0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0, 1, 2, 3, 4},
	} {
		if _, err := OpenFile(bytes.NewReader(data)); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: OpenFile error %v, want ErrFormat", name, err)
		}
	}
}

// TestCorruptRecord is a pcap record longer than the snap length: the
// packets before it are analysed, then Run fails.
func TestCorruptRecord(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	f := c.ftp(client, server)
	f.login()
	var rec [16]byte
	binary.LittleEndian.PutUint32(rec[8:], 1<<30)
	binary.LittleEndian.PutUint32(rec[12:], 1<<30)
	buf.Write(rec[:])
	col, err := analyze(t, buf.Bytes(), Config{})
	if err == nil || len(col.sessions) != 1 || col.sessions[0].User != "anonymous" {
		t.Fatalf("err %v, sessions %+v", err, col.sessions)
	}
}

// TestPcapngUnknownBlock puts a block of an unknown type in a pcapng file:
// it is skipped.
func TestPcapngUnknownBlock(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, true)
	f := c.ftp(client, gateway)
	c.flush()
	var blk [20]byte
	binary.LittleEndian.PutUint32(blk[0:], 0x40000bad) // a local-use block type
	binary.LittleEndian.PutUint32(blk[4:], 20)
	copy(blk[8:], "junk")
	binary.LittleEndian.PutUint32(blk[16:], 20)
	buf.Write(blk[:])
	f.login()
	f.cmd("EPSV", "229 Entering Extended Passive Mode (|||40007|)")
	f.cmd("LIST", "150 Here comes the directory listing.")
	c.transfer(ap("198.19.0.2:50014"), ap("198.19.0.1:40007"), 10, false)
	f.send(false, "226 Directory send OK.\r\n")
	f.quit()
	c.flush()

	col, err := analyze(t, buf.Bytes(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	_, d := one(t, col)
	if d.Verdict != Transferred {
		t.Fatalf("data connection %+v", d)
	}
}

// TestLimits checks the bounds: sessions beyond MaxSessions are counted
// and skipped, and a long session lists a bounded number of data
// connections.
func TestLimits(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	var fs []ftpConn
	for i := range 3 {
		fs = append(fs, c.ftp(ap(fmt.Sprintf("198.19.0.2:%d", 42000+i)), gateway))
	}
	f := fs[0]
	f.login()
	for i := range maxKeptOK + 10 {
		port := 40100 + i
		f.cmd("PASV", fmt.Sprintf("227 Entering Passive Mode (198,19,0,1,%d,%d).", port>>8, port&0xff))
		f.cmd("LIST", "150 Here comes the directory listing.")
		c.transfer(ap(fmt.Sprintf("198.19.0.2:%d", 50100+i)), ap(fmt.Sprintf("198.19.0.1:%d", port)), 10, false)
		f.send(false, "226 Directory send OK.\r\n")
	}
	for _, f := range fs {
		f.quit()
	}
	col, _ := analyze(t, buf.Bytes(), Config{MaxSessions: 2})
	if len(col.sessions) != 2 || len(col.summary.Warnings) != 1 || !strings.Contains(col.summary.Warnings[0], "more than 2 FTP sessions") {
		t.Fatalf("%d sessions, warnings %q", len(col.sessions), col.summary.Warnings)
	}
	s := col.sessions[0]
	if len(s.Data) != maxKeptOK || s.Omitted[Transferred] != 10 || col.summary.DataConnections != maxKeptOK+10 {
		t.Fatalf("%d listed, omitted %v, summary %+v", len(s.Data), s.Omitted, col.summary)
	}
}

// TestIdleFlush: sessions and connections that go quiet are reported and
// forgotten while the capture goes on.
func TestIdleFlush(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	f := c.ftp(client, server)
	f.login()
	f.cmd("PASV", "227 Entering Passive Mode (198,18,1,2,117,50).")
	c.syn(ap("198.19.0.2:50001"), ap("198.18.1.2:30002"), 777)
	c.tick(DefaultSessionIdle + time.Minute)
	g := c.ftp(ap("198.19.0.2:41001"), server)
	g.quit()

	src, err := OpenFile(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	col := &collector{}
	a := New(Config{}, col)
	if err := Run(t.Context(), src, a, RunOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(col.sessions) != 1 || len(a.flows) != 0 || len(a.sessions) != 1 || len(a.expect) != 0 {
		t.Fatalf("before the end: %d reported, %d flows, %d sessions, %d expectations",
			len(col.sessions), len(a.flows), len(a.sessions), len(a.expect))
	}
	if _, err := a.Finish("test"); err != nil {
		t.Fatal(err)
	}
	if len(col.sessions) != 2 || len(a.sessions) != 0 || len(a.orphans) != 0 {
		t.Fatalf("after the end: %d reported, %d sessions", len(col.sessions), len(a.sessions))
	}
}

func TestJSONReport(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	f := c.ftp(client, server)
	f.login()
	f.cmd("PASV", "227 Entering Passive Mode (198,18,1,2,117,50).")
	c.syn(ap("198.19.0.2:50001"), ap("198.18.1.2:30002"), 777)
	f.quit()
	src, err := OpenFile(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	a := New(Config{}, NewJSONReporter(&out))
	if err := Run(t.Context(), src, a, RunOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Finish("x.pcap"); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Sessions []struct {
			Client string `json:"client"`
			Data   []struct {
				Verdict  string `json:"verdict"`
				Failed   bool   `json:"failed"`
				Endpoint string `json:"endpoint"`
			} `json:"data_connections"`
			Findings []struct{ Kind string } `json:"findings"`
		} `json:"sessions"`
		Summary struct {
			Source string         `json:"source"`
			Failed int            `json:"failed"`
			Verd   map[string]int `json:"verdicts"`
		} `json:"summary"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(doc.Sessions) != 1 || doc.Sessions[0].Client != "198.19.0.2:41000" || doc.Sessions[0].Data[0].Verdict != "syn_unanswered" ||
		doc.Sessions[0].Data[0].Endpoint != "198.18.1.2:30002" || doc.Sessions[0].Findings[0].Kind != FindingNATAddress ||
		doc.Summary.Failed != 1 || doc.Summary.Source != "x.pcap" || doc.Summary.Verd["syn_unanswered"] != 1 {
		t.Fatalf("%+v\n%s", doc, out.String())
	}

	// An empty capture is a valid document too.
	out.Reset()
	a = New(Config{}, NewJSONReporter(&out))
	if _, err := a.Finish("empty"); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil || len(doc.Sessions) != 0 {
		t.Fatalf("%v: %s", err, out.String())
	}
}

func TestTextReport(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	f := c.ftp(client, server)
	f.login()
	f.cmd("PASV", "227 Entering Passive Mode (198,18,1,2,117,50).")
	c.syn(ap("198.19.0.2:50001"), ap("198.18.1.2:30002"), 777)
	f.cmd("LIST", "425 Failed to establish connection.")
	f.quit()
	src, err := OpenFile(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	a := New(Config{}, NewTextReporter(&out))
	if err := Run(t.Context(), src, a, RunOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Finish("x.pcap"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"session 198.19.0.2:41000 -> 198.19.0.10:21, 12:00:00.000 to 12:00:00.",
		"user anonymous, password ****\n",
		"  PASV at 12:00:00.",
		"-> 227 Entering Passive Mode (198,18,1,2,117,50).\n",
		"      data connection to 198.18.1.2:30002 (or 198.19.0.10:30002) from 198.19.0.2\n",
		"    FAILED SYN without answer: 198.19.0.2:50001 -> 198.18.1.2:30002, 1 SYN over 0.0 s",
		"      LIST: 425 Failed to establish connection.\n",
		"  !    12:00:00.",
		"NAT without ALG: the server wrote 198.18.1.2 in its 227 reply",
		"x.pcap: 18 packets (18 TCP), 1 FTP session, 1 data connection (1 syn_unanswered)\n",
		"result: FAILED, 1 failure\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestPrintable(t *testing.T) {
	if got := printable("ok\x1b[2Jbad\xff"); got != "ok?[2Jbad?" {
		t.Errorf("printable = %q", got)
	}
}

// TestPipelinedNegotiations sends two PASV before the first reply: each
// reply goes with its command, and nothing stays indexed after the end.
func TestPipelinedNegotiations(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	f := c.ftp(client, gateway)
	f.login()
	f.send(true, "PASV\r\nPASV\r\n")
	f.send(false, "227 Entering Passive Mode (198,19,0,1,156,70).\r\n227 Entering Passive Mode (198,19,0,1,156,71).\r\n")
	f.cmd("LIST", "150 Here comes the directory listing.")
	c.transfer(ap("198.19.0.2:50015"), ap("198.19.0.1:40007"), 70, false)
	f.send(false, "226 Directory send OK.\r\n")
	f.quit()

	src, err := OpenFile(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	col := &collector{}
	a := New(Config{}, col)
	if err := Run(t.Context(), src, a, RunOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Finish("test"); err != nil {
		t.Fatal(err)
	}
	s := col.sessions[0]
	if len(s.Data) != 2 || s.Data[0].Endpoint != ap("198.19.0.1:40006") || s.Data[0].Verdict != Unused ||
		s.Data[1].Endpoint != ap("198.19.0.1:40007") || s.Data[1].Verdict != Transferred {
		t.Fatalf("data %+v %+v", s.Data[0], s.Data[len(s.Data)-1])
	}
	if len(a.expect) != 0 || len(a.flows) != 0 || len(a.orphans) != 0 || len(a.sessions) != 0 {
		t.Fatalf("left: %d expectations, %d flows, %d orphans, %d sessions", len(a.expect), len(a.flows), len(a.orphans), len(a.sessions))
	}
}
