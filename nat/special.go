package nat

import (
	"encoding/binary"
	"net/netip"
)

// specialBlock is one entry of IANA's special-purpose address registries
// (IPv4: RFC 6890 and its updates, iana.org/assignments/iana-ipv4-special-registry;
// IPv6: iana.org/assignments/iana-ipv6-special-registry), with what ftpgate
// makes of it.
type specialBlock struct {
	prefix netip.Prefix
	name   string
	// never: no session connects there, listed or not (the address names
	// the gateway itself, its link, or no single host).
	never bool
	// global: the registry marks the block globally reachable, so it is
	// judged as any public address.
	global bool
}

func block(prefix, name string, never, global bool) specialBlock {
	return specialBlock{netip.MustParsePrefix(prefix), name, never, global}
}

// specialBlocks are the registries' entries, and multicast (its own
// registry). Blocks that embed an IPv4 address (IPv4-mapped, IPv4-compatible,
// NAT64, 6to4) are not here: embeddedIPv4 judges them by what they embed.
var specialBlocks = []specialBlock{
	// IPv4
	block("0.0.0.0/8", `"this network"`, true, false),                                // RFC 791
	block("10.0.0.0/8", "private", false, false),                                     // RFC 1918
	block("100.64.0.0/10", "shared address space", false, false),                     // RFC 6598
	block("127.0.0.0/8", "loopback", true, false),                                    // RFC 1122
	block("169.254.0.0/16", "link-local", true, false),                               // RFC 3927
	block("172.16.0.0/12", "private", false, false),                                  // RFC 1918
	block("192.0.0.9/32", "port control protocol anycast", false, true),              // RFC 7723
	block("192.0.0.10/32", "traversal using relays around NAT anycast", false, true), // RFC 8155
	block("192.0.0.0/24", "IETF protocol assignments", false, false),                 // RFC 6890
	block("192.0.2.0/24", "documentation (TEST-NET-1)", false, false),                // RFC 5737
	block("192.31.196.0/24", "AS112-v4", false, true),                                // RFC 7535
	block("192.52.193.0/24", "AMT", false, true),                                     // RFC 7450
	block("192.88.99.0/24", "deprecated 6to4 relay anycast", false, false),           // RFC 7526
	block("192.168.0.0/16", "private", false, false),                                 // RFC 1918
	block("192.175.48.0/24", "direct delegation AS112 service", false, true),         // RFC 7534
	block("198.18.0.0/15", "benchmarking", false, false),                             // RFC 2544
	block("198.51.100.0/24", "documentation (TEST-NET-2)", false, false),             // RFC 5737
	block("203.0.113.0/24", "documentation (TEST-NET-3)", false, false),              // RFC 5737
	block("224.0.0.0/4", "multicast", true, false),                                   // RFC 5771
	block("255.255.255.255/32", "limited broadcast", true, false),                    // RFC 919
	block("240.0.0.0/4", "reserved", true, false),                                    // RFC 1112

	// IPv6
	block("::/128", "unspecified", true, false),                                         // RFC 4291
	block("::1/128", "loopback", true, false),                                           // RFC 4291
	block("64:ff9b:1::/48", "local-use IPv4/IPv6 translation", false, false),            // RFC 8215
	block("100::/64", "discard-only", true, false),                                      // RFC 6666
	block("100:0:0:1::/64", "dummy IPv6 prefix", true, false),                           // IANA registry, 2025
	block("2001:1::1/128", "port control protocol anycast", false, true),                // RFC 7723
	block("2001:1::2/128", "traversal using relays around NAT anycast", false, true),    // RFC 8155
	block("2001:1::3/128", "DNS-SD service registration protocol anycast", false, true), // IANA registry, 2024
	block("2001:3::/32", "AMT", false, true),                                            // RFC 7450
	block("2001:4:112::/48", "AS112-v6", false, true),                                   // RFC 7535
	block("2001:20::/28", "ORCHIDv2", false, true),                                      // RFC 7343
	block("2001:30::/28", "drone remote ID protocol entity tags", false, true),          // RFC 9374
	block("2001::/23", "IETF protocol assignments (Teredo among them)", false, false),   // RFC 2928, RFC 4380
	block("2001:db8::/32", "documentation", false, false),                               // RFC 3849
	block("2620:4f:8000::/48", "direct delegation AS112 service", false, true),          // RFC 7534
	block("3fff::/20", "documentation", false, false),                                   // RFC 9637
	block("5f00::/16", "segment routing (SRv6) SIDs", false, false),                     // RFC 9602
	block("fc00::/7", "unique-local", false, false),                                     // RFC 4193
	block("fe80::/10", "link-local", true, false),                                       // RFC 4291
	block("fec0::/10", "deprecated site-local", true, false),                            // RFC 3879
	block("ff00::/8", "multicast", true, false),                                         // RFC 4291
}

// specialBlockOf returns the most specific special-purpose block holding
// a, or false if a is an ordinary public address. The table lists each
// more specific block before the one that holds it.
func specialBlockOf(a netip.Addr) (specialBlock, bool) {
	for _, b := range specialBlocks {
		if b.prefix.Contains(a) {
			return b, true
		}
	}
	return specialBlock{}, false
}

// IPv6 blocks that embed an IPv4 address.
var (
	nat64WellKnown = netip.MustParsePrefix("64:ff9b::/96")   // RFC 6052
	nat64LocalUse  = netip.MustParsePrefix("64:ff9b:1::/48") // RFC 8215
	sixToFour      = netip.MustParsePrefix("2002::/16")      // RFC 3056
	ipv4Compatible = netip.MustParsePrefix("::/96")          // RFC 4291, deprecated
)

// embeddedIPv4 returns the IPv4 address that a reaches when it embeds one:
// the last 32 bits of a NAT64 address (the well-known 64:ff9b::/96, or the
// local-use 64:ff9b:1::/48 in RFC 6052's /96 format, which NAT64 gateways
// use by default) or of an IPv4-compatible address (::a.b.c.d, other than
// :: and ::1), and bits 16 to 47 of a 6to4 address. IPv4-mapped addresses
// are unmapped by the caller.
func embeddedIPv4(a netip.Addr) (netip.Addr, bool) {
	if !a.Is6() || a.Is4In6() {
		return netip.Addr{}, false
	}
	b := a.As16()
	switch {
	case nat64WellKnown.Contains(a), nat64LocalUse.Contains(a):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixToFour.Contains(a):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	case ipv4Compatible.Contains(a) && binary.BigEndian.Uint32(b[12:16]) > 1:
		return netip.AddrFrom4([4]byte(b[12:16])), true
	}
	return netip.Addr{}, false
}
