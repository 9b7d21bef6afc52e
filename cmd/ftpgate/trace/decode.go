package trace

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// packetKind is what decode found in a packet.
type packetKind uint8

const (
	kindOther packetKind = iota // nothing of interest (ARP, UDP, a fragment...)
	kindTCP                     // a TCP segment: decoder.tcp is valid
	kindICMP                    // an ICMP destination unreachable about a TCP packet
	kindLink                    // a link type decode does not know
)

// decoder decodes the layers trace needs, with gopacket's
// DecodingLayerParser: no allocation per packet, layers reused.
type decoder struct {
	eth   layers.Ethernet
	dot1q layers.Dot1Q
	sll   layers.LinuxSLL
	loop  layers.Loopback
	ip4   layers.IPv4
	ip6   layers.IPv6
	tcp   layers.TCP
	icmp4 layers.ICMPv4
	icmp6 layers.ICMPv6

	parsers map[gopacket.LayerType]*gopacket.DecodingLayerParser
	decoded []gopacket.LayerType

	// Filled by decode for kindTCP and kindICMP.
	src, dst netip.Addr
	netFlow  gopacket.Flow
	// payloadLen is the TCP payload length from the IP header, which can
	// exceed len(tcp.Payload) when the capture's snap length cut the packet.
	payloadLen int
	// icmpFrom, icmpTo are the endpoints of the TCP packet an ICMP error
	// is about (its source and destination); icmpText describes the error.
	icmpFrom, icmpTo netip.AddrPort
	icmpText         string
}

func newDecoder() *decoder {
	d := &decoder{parsers: map[gopacket.LayerType]*gopacket.DecodingLayerParser{}}
	for _, first := range []gopacket.LayerType{
		layers.LayerTypeEthernet, layers.LayerTypeLinuxSLL, layers.LayerTypeLoopback,
		layers.LayerTypeIPv4, layers.LayerTypeIPv6,
	} {
		p := gopacket.NewDecodingLayerParser(first,
			&d.eth, &d.dot1q, &d.sll, &d.loop, &d.ip4, &d.ip6, &d.tcp, &d.icmp4, &d.icmp6)
		p.IgnoreUnsupported = true
		d.parsers[first] = p
	}
	return d
}

// linkTypeLinuxSLL2 is the link type of "tcpdump -i any" since libpcap
// 1.10, 276, as gopacket v1.1.19 delivers it: its layers.LinkType is a
// uint8, so pcapgo hands over 276 & 0xff = 20, a value no other link type
// uses. The SLL2 header is 20 bytes, starting with the EtherType.
const linkTypeLinuxSLL2 layers.LinkType = 276 & 0xff

// firstLayer returns the layer a packet of the link type starts with and
// where it starts: for raw IP by its version nibble.
func firstLayer(link layers.LinkType, data []byte) (gopacket.LayerType, int, bool) {
	switch link {
	case layers.LinkTypeEthernet:
		return layers.LayerTypeEthernet, 0, true
	case layers.LinkTypeLinuxSLL:
		return layers.LayerTypeLinuxSLL, 0, true
	case linkTypeLinuxSLL2:
		if len(data) < 20 {
			return 0, 0, false
		}
		switch layers.EthernetType(binary.BigEndian.Uint16(data)) {
		case layers.EthernetTypeIPv4:
			return layers.LayerTypeIPv4, 20, true
		case layers.EthernetTypeIPv6:
			return layers.LayerTypeIPv6, 20, true
		}
		return 0, 0, false
	case layers.LinkTypeNull, layers.LinkTypeLoop:
		return layers.LayerTypeLoopback, 0, true
	case layers.LinkTypeRaw, layers.LinkTypeIPv4, layers.LinkTypeIPv6, 12, 14:
		// 12 and 14 are raw IP on some BSDs.
		if len(data) > 0 && data[0]>>4 == 6 {
			return layers.LayerTypeIPv6, 0, true
		}
		return layers.LayerTypeIPv4, 0, true
	}
	return 0, 0, false
}

// knownLink reports whether decode reads packets of the link type.
func knownLink(link layers.LinkType) bool {
	switch link {
	case layers.LinkTypeEthernet, layers.LinkTypeLinuxSLL, linkTypeLinuxSLL2, layers.LinkTypeNull, layers.LinkTypeLoop,
		layers.LinkTypeRaw, layers.LinkTypeIPv4, layers.LinkTypeIPv6, 12, 14:
		return true
	}
	return false
}

// decode decodes one packet of the given link type.
func (d *decoder) decode(data []byte, link layers.LinkType) packetKind {
	first, off, ok := firstLayer(link, data)
	if !ok {
		if !knownLink(link) {
			return kindLink
		}
		return kindOther
	}
	data = data[off:]
	// Errors (truncated or malformed layers) leave d.decoded with the
	// layers that did decode; those are judged below.
	_ = d.parsers[first].DecodeLayers(data, &d.decoded)
	var ip, transport gopacket.LayerType
	for _, t := range d.decoded {
		switch t {
		case layers.LayerTypeIPv4, layers.LayerTypeIPv6:
			if ip == 0 { // an outer header; tunnels are not followed
				ip = t
			}
		case layers.LayerTypeTCP, layers.LayerTypeICMPv4, layers.LayerTypeICMPv6:
			transport = t
		}
	}
	if ip == 0 || transport == 0 {
		return kindOther
	}
	hdrLen := 0
	if ip == layers.LayerTypeIPv4 {
		if d.ip4.Flags&layers.IPv4MoreFragments != 0 || d.ip4.FragOffset != 0 {
			return kindOther
		}
		d.src = netip.AddrFrom4([4]byte(d.ip4.SrcIP.To4()))
		d.dst = netip.AddrFrom4([4]byte(d.ip4.DstIP.To4()))
		d.netFlow = d.ip4.NetworkFlow()
		d.payloadLen = int(d.ip4.Length) - int(d.ip4.IHL)*4
	} else {
		d.src = netip.AddrFrom16([16]byte(d.ip6.SrcIP.To16()))
		d.dst = netip.AddrFrom16([16]byte(d.ip6.DstIP.To16()))
		d.netFlow = d.ip6.NetworkFlow()
		d.payloadLen = int(d.ip6.Length)
	}
	switch transport {
	case layers.LayerTypeTCP:
		hdrLen = int(d.tcp.DataOffset) * 4
		d.payloadLen -= hdrLen
		// A length field of 0 (TSO super-packets) or shorter than what was
		// captured: trust the capture.
		if d.payloadLen < len(d.tcp.Payload) {
			d.payloadLen = len(d.tcp.Payload)
		}
		return kindTCP
	case layers.LayerTypeICMPv4:
		if d.icmp4.TypeCode.Type() != layers.ICMPv4TypeDestinationUnreachable {
			return kindOther
		}
		return d.icmpAbout(d.icmp4.Payload, false, d.icmp4.TypeCode.String())
	default:
		if d.icmp6.TypeCode.Type() != layers.ICMPv6TypeDestinationUnreachable || len(d.icmp6.Payload) < 4 {
			return kindOther
		}
		// The payload starts with 4 unused bytes.
		return d.icmpAbout(d.icmp6.Payload[4:], true, d.icmp6.TypeCode.String())
	}
}

// icmpAbout reads the IP and TCP headers quoted in an ICMP error: the
// packet the error is about.
func (d *decoder) icmpAbout(b []byte, v6 bool, what string) packetKind {
	var from, to netip.Addr
	var rest []byte
	if !v6 {
		if len(b) < 20 || b[0]>>4 != 4 || b[9] != byte(layers.IPProtocolTCP) {
			return kindOther
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl+4 {
			return kindOther
		}
		from = netip.AddrFrom4([4]byte(b[12:16]))
		to = netip.AddrFrom4([4]byte(b[16:20]))
		rest = b[ihl:]
	} else {
		if len(b) < 40+4 || b[0]>>4 != 6 || b[6] != byte(layers.IPProtocolTCP) {
			return kindOther
		}
		from = netip.AddrFrom16([16]byte(b[8:24]))
		to = netip.AddrFrom16([16]byte(b[24:40]))
		rest = b[40:]
	}
	d.icmpFrom = netip.AddrPortFrom(from, binary.BigEndian.Uint16(rest[0:2]))
	d.icmpTo = netip.AddrPortFrom(to, binary.BigEndian.Uint16(rest[2:4]))
	d.icmpText = fmt.Sprintf("ICMP %s from %s", what, d.src)
	return kindICMP
}
