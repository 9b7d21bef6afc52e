package trace

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// capture builds a capture in a test: packets made with gopacket's layers,
// written with pcapgo as pcap or pcapng.
type capture struct {
	tb   testing.TB
	now  time.Time
	pw   *pcapgo.Writer
	nw   *pcapgo.NgWriter
	sbuf gopacket.SerializeBuffer
	n    int
	// snap, if positive, cuts each packet to that many bytes, as a capture
	// with a short snap length ("tcpdump -s 128") does.
	snap int
}

var (
	macA = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	macB = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
)

// newCapture writes a capture to w, as pcapng if ng.
func newCapture(tb testing.TB, w io.Writer, ng bool) *capture {
	c := &capture{tb: tb, now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC), sbuf: gopacket.NewSerializeBuffer()}
	var err error
	if ng {
		c.nw, err = pcapgo.NewNgWriter(w, layers.LinkTypeEthernet)
	} else {
		c.pw = pcapgo.NewWriterNanos(w)
		err = c.pw.WriteFileHeader(Snaplen, layers.LinkTypeEthernet)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// flush ends a pcapng capture's buffering.
func (c *capture) flush() {
	if c.nw != nil {
		if err := c.nw.Flush(); err != nil {
			c.tb.Fatal(err)
		}
	}
}

func (c *capture) tick(d time.Duration) { c.now = c.now.Add(d) }

func (c *capture) write(data []byte) {
	ci := gopacket.CaptureInfo{Timestamp: c.now, CaptureLength: len(data), Length: len(data)}
	if c.snap > 0 && len(data) > c.snap {
		data = data[:c.snap]
		ci.CaptureLength = c.snap
	}
	var err error
	if c.nw != nil {
		err = c.nw.WritePacket(ci, data)
	} else {
		err = c.pw.WritePacket(ci, data)
	}
	if err != nil {
		c.tb.Fatal(err)
	}
	c.n++
}

// tcpFlags are the flags of a segment.
type tcpFlags struct{ syn, ack, fin, rst bool }

// ipLayers returns the Ethernet and IP layers for src -> dst.
func ipLayers(src, dst netip.Addr, proto layers.IPProtocol) (*layers.Ethernet, gopacket.NetworkLayer, gopacket.SerializableLayer) {
	eth := &layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: layers.EthernetTypeIPv4}
	if src.Is4() {
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		return eth, ip, ip
	}
	eth.EthernetType = layers.EthernetTypeIPv6
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	return eth, ip, ip
}

// tcpBytes serializes one TCP segment, from the Ethernet header on.
func (c *capture) tcpBytes(src, dst netip.AddrPort, f tcpFlags, seq, ack uint32, payload []byte) []byte {
	eth, nl, ipl := ipLayers(src.Addr(), dst.Addr(), layers.IPProtocolTCP)
	t := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()),
		Seq: seq, Ack: ack, SYN: f.syn, ACK: f.ack, FIN: f.fin, RST: f.rst, PSH: len(payload) > 0, Window: 64240}
	if err := t.SetNetworkLayerForChecksum(nl); err != nil {
		c.tb.Fatal(err)
	}
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(c.sbuf, opts, eth, ipl, t, gopacket.Payload(payload)); err != nil {
		c.tb.Fatal(err)
	}
	return c.sbuf.Bytes()
}

// tcp writes one TCP segment.
func (c *capture) tcp(src, dst netip.AddrPort, f tcpFlags, seq, ack uint32, payload []byte) {
	c.write(c.tcpBytes(src, dst, f, seq, ack, payload))
}

// syn writes a lone SYN (a connection attempt) with the given ISN.
func (c *capture) syn(src, dst netip.AddrPort, isn uint32) {
	c.tcp(src, dst, tcpFlags{syn: true}, isn, 0, nil)
}

// unreachable writes an ICMP port unreachable from router about the SYN
// src -> dst with the given ISN.
func (c *capture) unreachable(router netip.Addr, src, dst netip.AddrPort, isn uint32) {
	orig := c.tcpBytes(src, dst, tcpFlags{syn: true}, isn, 0, nil)
	quoted := append([]byte(nil), orig[14:14+20+8]...) // IPv4 header and 8 bytes of TCP
	eth, _, ipl := ipLayers(router, src.Addr(), layers.IPProtocolICMPv4)
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort)}
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(c.sbuf, opts, eth, ipl, icmp, gopacket.Payload(quoted)); err != nil {
		c.tb.Fatal(err)
	}
	c.write(c.sbuf.Bytes())
}

// conn is a TCP connection in a capture; it tracks both sides' sequence
// numbers.
type conn struct {
	c          *capture
	cli, srv   netip.AddrPort
	cseq, sseq uint32 // next sequence number of each side
}

// dial writes a three-way handshake.
func (c *capture) dial(cli, srv netip.AddrPort) *conn {
	k := &conn{c: c, cli: cli, srv: srv, cseq: 1000, sseq: 5000}
	c.syn(cli, srv, k.cseq)
	c.tick(100 * time.Microsecond)
	c.tcp(srv, cli, tcpFlags{syn: true, ack: true}, k.sseq, k.cseq+1, nil)
	k.cseq++
	k.sseq++
	c.tick(100 * time.Microsecond)
	c.tcp(cli, srv, tcpFlags{ack: true}, k.cseq, k.sseq, nil)
	c.tick(time.Millisecond)
	return k
}

// send writes data as one segment from one side.
func (k *conn) send(fromClient bool, data string) {
	if fromClient {
		k.c.tcp(k.cli, k.srv, tcpFlags{ack: true}, k.cseq, k.sseq, []byte(data))
		k.cseq += uint32(len(data))
	} else {
		k.c.tcp(k.srv, k.cli, tcpFlags{ack: true}, k.sseq, k.cseq, []byte(data))
		k.sseq += uint32(len(data))
	}
	k.c.tick(time.Millisecond)
}

// segment writes data at offset off from the side's next sequence number,
// without advancing it: for reordered and retransmitted segments.
func (k *conn) segment(fromClient bool, off int, data string) {
	if fromClient {
		k.c.tcp(k.cli, k.srv, tcpFlags{ack: true}, k.cseq+uint32(off), k.sseq, []byte(data))
	} else {
		k.c.tcp(k.srv, k.cli, tcpFlags{ack: true}, k.sseq+uint32(off), k.cseq, []byte(data))
	}
	k.c.tick(time.Millisecond)
}

// skip advances a side's sequence number by n, as after segments written
// with segment.
func (k *conn) skip(fromClient bool, n int) {
	if fromClient {
		k.cseq += uint32(n)
	} else {
		k.sseq += uint32(n)
	}
}

// close writes FIN from the client, FIN from the server, and the last ACK.
func (k *conn) close() {
	k.c.tcp(k.cli, k.srv, tcpFlags{fin: true, ack: true}, k.cseq, k.sseq, nil)
	k.cseq++
	k.c.tick(100 * time.Microsecond)
	k.c.tcp(k.srv, k.cli, tcpFlags{fin: true, ack: true}, k.sseq, k.cseq, nil)
	k.sseq++
	k.c.tick(100 * time.Microsecond)
	k.c.tcp(k.cli, k.srv, tcpFlags{ack: true}, k.cseq, k.sseq, nil)
	k.c.tick(time.Millisecond)
}

// transfer writes a whole data connection: handshake, n bytes from the
// responder (or the initiator if up) in segments of 1448, close.
func (c *capture) transfer(from, to netip.AddrPort, n int, up bool) {
	k := c.dial(from, to)
	chunk := string(bytes.Repeat([]byte{'x'}, 1448))
	for n > 0 {
		m := min(n, len(chunk))
		k.send(up, chunk[:m])
		n -= m
	}
	k.close()
}

// ftpConn is an FTP control connection in a capture.
type ftpConn struct{ *conn }

// ftp dials a control connection and writes the server's greeting.
func (c *capture) ftp(cli, srv netip.AddrPort) ftpConn {
	f := ftpConn{c.dial(cli, srv)}
	f.send(false, "220 (vsFTPd 3.0.3)\r\n")
	return f
}

// cmd writes a command and, unless reply is empty, the server's reply.
func (f ftpConn) cmd(line, reply string) {
	f.send(true, line+"\r\n")
	if reply != "" {
		f.send(false, reply+"\r\n")
	}
}

// login writes an anonymous login with a password.
func (f ftpConn) login() {
	f.cmd("USER anonymous", "331 Please specify the password.")
	f.cmd("PASS s3cret-Pw", "230 Login successful.")
}

// quit writes QUIT, its reply and the connection's close.
func (f ftpConn) quit() {
	f.cmd("QUIT", "221 Goodbye.")
	f.close()
}

// collector is a Reporter that keeps what it is given.
type collector struct {
	sessions []*Session
	summary  *Summary
}

func (c *collector) Session(r *Session) error { c.sessions = append(c.sessions, r); return nil }
func (c *collector) Finish(s *Summary) error  { c.summary = s; return nil }

// analyze runs an Analyzer with cfg over a capture and returns what it
// reported and Run's error.
func analyze(tb testing.TB, data []byte, cfg Config) (*collector, error) {
	tb.Helper()
	src, err := OpenFile(bytes.NewReader(data))
	if err != nil {
		tb.Fatalf("OpenFile: %v", err)
	}
	col := &collector{}
	a := New(cfg, col)
	runErr := Run(context.Background(), src, a, RunOptions{})
	if _, err := a.Finish("test"); err != nil {
		tb.Fatalf("Finish: %v", err)
	}
	return col, runErr
}

// one returns the only session reported, with exactly one data
// connection listed.
func one(tb testing.TB, col *collector) (*Session, *DataConn) {
	tb.Helper()
	if len(col.sessions) != 1 {
		tb.Fatalf("%d sessions reported, want 1: %+v", len(col.sessions), col.sessions)
	}
	s := col.sessions[0]
	if len(s.Data) != 1 {
		tb.Fatalf("%d data connections, want 1: %+v", len(s.Data), s.Data)
	}
	return s, s.Data[0]
}

// findingOf returns the session's first finding of kind, or nil.
func findingOf(s *Session, kind string) *Finding {
	for i := range s.Findings {
		if s.Findings[i].Kind == kind {
			return &s.Findings[i]
		}
	}
	return nil
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// Addresses of the home-router network of the end-to-end tests.
var (
	client     = ap("198.19.0.2:41000")
	server     = ap("198.19.0.10:21") // the router's public address, DNAT to the server
	serverPriv = ap("198.18.1.2:21")
	gateway    = ap("198.19.0.1:21") // ftpgate
)
