package trace

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/google/gopacket/pcapgo"
)

// relink rewrites an Ethernet pcap with another link type: each frame's
// 14-byte Ethernet header is replaced by what head returns for its
// EtherType. The file header is written by hand, since pcapgo cannot write
// link types above 255.
func relink(tb testing.TB, eth []byte, link uint32, head func(etherType []byte) []byte) []byte {
	tb.Helper()
	r, err := pcapgo.NewReader(bytes.NewReader(eth))
	if err != nil {
		tb.Fatal(err)
	}
	var out bytes.Buffer
	hdr := make([]byte, 24)
	binary.LittleEndian.PutUint32(hdr[0:], 0xa1b23c4d) // nanosecond timestamps
	binary.LittleEndian.PutUint16(hdr[4:], 2)
	binary.LittleEndian.PutUint16(hdr[6:], 4)
	binary.LittleEndian.PutUint32(hdr[16:], Snaplen)
	binary.LittleEndian.PutUint32(hdr[20:], link)
	out.Write(hdr)
	for {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		frame := append(head(data[12:14]), data[14:]...)
		rec := make([]byte, 16)
		binary.LittleEndian.PutUint32(rec[0:], uint32(ci.Timestamp.Unix()))
		binary.LittleEndian.PutUint32(rec[4:], uint32(ci.Timestamp.Nanosecond()))
		binary.LittleEndian.PutUint32(rec[8:], uint32(len(frame)))
		binary.LittleEndian.PutUint32(rec[12:], uint32(len(frame)))
		out.Write(rec)
		out.Write(frame)
	}
	return out.Bytes()
}

// TestLinkTypes reads the same capture as Ethernet, Linux cooked (SLL and
// SLL2, "tcpdump -i any"), raw IP and BSD loopback; a link type trace does
// not know is a warning.
func TestLinkTypes(t *testing.T) {
	var buf bytes.Buffer
	c := newCapture(t, &buf, false)
	f := c.ftp(client, server)
	f.login()
	f.cmd("PASV", "227 Entering Passive Mode (198,18,1,2,117,50).")
	c.syn(ap("198.19.0.2:50001"), ap("198.18.1.2:30002"), 777)
	f.quit()
	eth := buf.Bytes()

	for _, tt := range []struct {
		name string
		link uint32
		head func(et []byte) []byte
	}{
		{"ethernet", 1, func(et []byte) []byte { return append(make([]byte, 12), et...) }},
		{"linux sll", 113, func(et []byte) []byte { return append(make([]byte, 14), et...) }},
		{"linux sll2", 276, func(et []byte) []byte { return append(append([]byte(nil), et...), make([]byte, 18)...) }},
		{"raw", 101, func([]byte) []byte { return nil }},
		{"ipv4", 228, func([]byte) []byte { return nil }},
		{"bsd loopback", 0, func([]byte) []byte { return []byte{2, 0, 0, 0} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			col, err := analyze(t, relink(t, eth, tt.link, tt.head), Config{})
			if err != nil {
				t.Fatal(err)
			}
			_, d := one(t, col)
			if d.Verdict != SYNUnanswered || len(col.summary.Warnings) != 0 {
				t.Fatalf("verdict %s, warnings %q", d.Verdict, col.summary.Warnings)
			}
		})
	}

	col, err := analyze(t, relink(t, eth, 105, func([]byte) []byte { return make([]byte, 24) }), Config{})
	if err != nil {
		t.Fatal(err)
	}
	if len(col.sessions) != 0 || len(col.summary.Warnings) != 1 || !strings.Contains(col.summary.Warnings[0], "link type") {
		t.Fatalf("sessions %d, warnings %q", len(col.sessions), col.summary.Warnings)
	}
}
