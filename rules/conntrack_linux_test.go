package rules

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"testing"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
)

// newFlow is a flow as a NEW event reports it: proto from src:sport to dst.
func newFlow(proto uint8, src netip.Addr, sport uint16, dst netip.AddrPort) *conntrack.Flow {
	f := conntrack.NewFlow(proto, 0, src, dst.Addr(), sport, dst.Port(), 120, 0)
	return &f
}

func TestFlowKey(t *testing.T) {
	mapped := func(a netip.Addr) netip.Addr { return netip.AddrFrom16(a.As16()) }
	for _, tt := range []struct {
		name string
		f    *conntrack.Flow
		want expectKey
		ok   bool
	}{
		{"tcp4", newFlow(syscall.IPPROTO_TCP, ctClient4, 50000, ctDst4), expectKey{ctClient4, ctDst4}, true},
		{"tcp6", newFlow(syscall.IPPROTO_TCP, ctClient6, 50000, ctDst6), expectKey{ctClient6, ctDst6}, true},
		{"mapped", newFlow(syscall.IPPROTO_TCP, mapped(ctClient4), 1, netip.AddrPortFrom(mapped(ctDst4.Addr()), ctDst4.Port())),
			expectKey{ctClient4, ctDst4}, true},
		{"udp", newFlow(syscall.IPPROTO_UDP, ctClient4, 50000, ctDst4), expectKey{}, false},
		{"sctp", newFlow(syscall.IPPROTO_SCTP, ctClient4, 50000, ctDst4), expectKey{}, false},
		{"empty", &conntrack.Flow{}, expectKey{}, false},
	} {
		got, ok := flowKey(tt.f)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: flowKey = %v, %t, want %v, %t", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

// ctEvent builds the netlink message of a conntrack event as the kernel
// sends it (include/uapi/linux/netfilter/nfnetlink_conntrack.h): an
// nfgenmsg header, then CTA_TUPLE_ORIG { CTA_TUPLE_IP { src, dst },
// CTA_TUPLE_PROTO { CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT } }
// and CTA_TUPLE_REPLY likewise, with the reply tuple given.
func ctEvent(t *testing.T, create bool, proto uint8, src netip.AddrPort, dst netip.AddrPort, replySrc netip.AddrPort) netlink.Message {
	t.Helper()
	be16 := func(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
	tuple := func(typ uint16, s, d netip.AddrPort) netfilter.Attribute {
		srcType, dstType := uint16(1), uint16(2) // CTA_IP_V4_SRC, CTA_IP_V4_DST
		if s.Addr().Is6() {
			srcType, dstType = 3, 4 // CTA_IP_V6_SRC, CTA_IP_V6_DST
		}
		return netfilter.Attribute{Type: typ, Nested: true, Children: []netfilter.Attribute{
			{Type: 1, Nested: true, Children: []netfilter.Attribute{ // CTA_TUPLE_IP
				{Type: srcType, Data: s.Addr().AsSlice()},
				{Type: dstType, Data: d.Addr().AsSlice()},
			}},
			{Type: 2, Nested: true, Children: []netfilter.Attribute{ // CTA_TUPLE_PROTO
				{Type: 1, Data: []byte{proto}},  // CTA_PROTO_NUM
				{Type: 2, Data: be16(s.Port())}, // CTA_PROTO_SRC_PORT
				{Type: 3, Data: be16(d.Port())}, // CTA_PROTO_DST_PORT
			}},
		}}
	}
	family := netfilter.ProtoIPv4
	if src.Addr().Is6() {
		family = netfilter.ProtoIPv6
	}
	flags := netlink.HeaderFlags(0)
	if create {
		flags = netlink.Create | netlink.Excl // a NEW event; without them an UPDATE
	}
	m, err := netfilter.MarshalNetlink(netfilter.Header{
		SubsystemID: netfilter.NFSubsysCTNetlink,
		MessageType: 0, // IPCTNL_MSG_CT_NEW
		Family:      family,
		Flags:       flags,
	}, []netfilter.Attribute{
		tuple(1, src, dst), // CTA_TUPLE_ORIG
		tuple(2, replySrc, netip.AddrPortFrom(src.Addr(), src.Port())), // CTA_TUPLE_REPLY
		{Type: 3, Data: binary.BigEndian.AppendUint32(nil, 0x8)},       // CTA_STATUS: IPS_CONFIRMED
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestDecodeEvent decodes ctnetlink messages built byte for byte as the
// kernel sends them: only a NEW event of a TCP connection yields a
// connection, keyed by its original tuple.
func TestDecodeEvent(t *testing.T) {
	dnatTo := netip.MustParseAddrPort("198.19.7.5:30000")
	for _, tt := range []struct {
		name string
		m    netlink.Message
		want newConn
		ok   bool
		err  bool
	}{
		{"tcp4", ctEvent(t, true, syscall.IPPROTO_TCP, netip.AddrPortFrom(ctClient4, 50000), ctDst4, ctDst4),
			newConn{expectKey{ctClient4, ctDst4}, 50000, ctDst4, nil}, true, false},
		{"tcp6", ctEvent(t, true, syscall.IPPROTO_TCP, netip.AddrPortFrom(ctClient6, 50001), ctDst6, ctDst6),
			newConn{expectKey{ctClient6, ctDst6}, 50001, ctDst6, nil}, true, false},
		// DNAT: the reply tuple comes from the new destination, which is
		// the connection's reply; the key is the original one.
		{"dnat", ctEvent(t, true, syscall.IPPROTO_TCP, netip.AddrPortFrom(ctClient4, 50002), ctDst4, dnatTo),
			newConn{expectKey{ctClient4, ctDst4}, 50002, dnatTo, nil}, true, false},
		{"udp", ctEvent(t, true, syscall.IPPROTO_UDP, netip.AddrPortFrom(ctClient4, 50000), ctDst4, ctDst4), newConn{}, false, false},
		{"update", ctEvent(t, false, syscall.IPPROTO_TCP, netip.AddrPortFrom(ctClient4, 50000), ctDst4, ctDst4), newConn{}, false, false},
		{"garbage", netlink.Message{Data: []byte("not an nfnetlink message")}, newConn{}, false, true},
	} {
		got, ok, err := decodeEvent(tt.m)
		if (err != nil) != tt.err || ok != tt.ok || got != tt.want {
			t.Errorf("%s: decodeEvent = %v, %t, %v; want %v, %t, error %t", tt.name, got, ok, err, tt.want, tt.ok, tt.err)
		}
	}
}

func TestUnavailable(t *testing.T) {
	for _, tt := range []struct {
		err         error
		unsupported bool
	}{
		{syscall.EPROTONOSUPPORT, true},
		{fmt.Errorf("netfilter query: %w", &netlink.OpError{Op: "receive", Err: syscall.EINVAL}), true},
		{&netlink.OpError{Op: "receive", Err: syscall.EPERM}, false},
	} {
		err := unavailable("probing", tt.err)
		if errors.Is(err, errors.ErrUnsupported) != tt.unsupported || !errors.Is(err, tt.err) {
			t.Errorf("unavailable(%v) = %v", tt.err, err)
		}
	}
}
