package nat

import (
	"errors"
	"net/netip"
	"testing"
)

func TestCheckDestination(t *testing.T) {
	edge := []netip.Prefix{netip.MustParsePrefix("198.19.0.0/24"), netip.MustParsePrefix("10.1.0.0/16")}
	public := []netip.Prefix{netip.MustParsePrefix("93.184.216.0/24"), netip.MustParsePrefix("2606:2800:220::/48")}
	local64 := []netip.Prefix{netip.MustParsePrefix("64:ff9b:1::/96"), netip.MustParsePrefix("93.184.216.0/24")}
	for _, tc := range []struct {
		dst   string
		allow []netip.Prefix
		ok    bool
	}{
		{"93.184.216.34", nil, true},
		{"2606:2800:220:1::248", nil, true},
		{"::ffff:93.184.216.34", nil, true},
		{"93.184.216.34", public, true},
		{"93.184.217.1", public, false}, // public, but a list is given and misses it

		// Never, even listed.
		{"127.0.0.1", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, false},
		{"::1", nil, false},
		{"::", nil, false},
		{"0.0.0.0", nil, false},
		{"0.1.2.3", []netip.Prefix{netip.MustParsePrefix("0.0.0.0/8")}, false}, // "this network"
		{"169.254.1.1", nil, false},
		{"fe80::1", nil, false},
		{"fec0::1", nil, false}, // deprecated site-local
		{"224.0.0.1", nil, false},
		{"ff02::1", nil, false},
		{"255.255.255.255", nil, false},
		{"240.0.0.1", []netip.Prefix{netip.MustParsePrefix("240.0.0.0/4")}, false},
		{"100::1", nil, false}, // discard-only

		// Special-purpose, only when listed.
		{"10.1.2.3", nil, false},
		{"10.1.2.3", edge, true},
		{"10.2.0.1", edge, false}, // private, not in the listed /16
		{"192.168.1.1", nil, false},
		{"100.64.0.1", nil, false},
		{"fd00::1", nil, false},
		{"198.19.0.10", nil, false}, // benchmarking
		{"198.19.0.10", edge, true},
		{"198.19.1.10", edge, false},
		{"192.0.2.1", nil, false},                            // documentation
		{"203.0.113.7", nil, false},                          // documentation
		{"2001:db8::7", nil, false},                          // documentation
		{"3fff::1", nil, false},                              // documentation
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", nil, false}, // Teredo
		{"192.0.0.170", nil, false},                          // IETF protocol assignments
		{"192.0.0.9", nil, true},                             // ... but globally reachable
		{"192.88.99.1", nil, false},                          // deprecated 6to4 relay anycast

		// Embedded IPv4: judged by the address reached.
		{"64:ff9b::a00:5", nil, false},          // NAT64 to 10.0.0.5
		{"64:ff9b::a01:203", edge, true},        // NAT64 to 10.1.2.3, listed
		{"64:ff9b::5db8:d822", nil, true},       // NAT64 to 93.184.216.34
		{"64:ff9b::7f00:1", nil, false},         // NAT64 to loopback
		{"64:ff9b::5db8:d822", public, true},    // the IPv4 address is listed
		{"64:ff9b:1::5db8:d822", nil, false},    // local-use NAT64: must be listed
		{"64:ff9b:1::5db8:d822", local64, true}, // listed, and so is the IPv4 address
		{"64:ff9b:1::a00:5", local64, false},    // listed, but reaches 10.0.0.5
		{"2002:a00:5::1", nil, false},           // 6to4 to 10.0.0.5
		{"2002:5db8:d822::1", nil, true},        // 6to4 to 93.184.216.34
		{"2002:7f00:1::1", nil, false},          // 6to4 to loopback
		{"::a00:5", nil, false},                 // IPv4-compatible 10.0.0.5
		{"::5db8:d822", nil, true},              // IPv4-compatible 93.184.216.34
		{"::ffff:10.0.0.5", nil, false},         // IPv4-mapped
		{"::ffff:127.0.0.1", edge, false},       // IPv4-mapped loopback
	} {
		err := CheckDestination(netip.AddrPortFrom(netip.MustParseAddr(tc.dst), 21), tc.allow, nil)
		if (err == nil) != tc.ok {
			t.Errorf("CheckDestination(%s, %v) = %v, want ok=%v", tc.dst, tc.allow, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrDestination) {
			t.Errorf("CheckDestination(%s): %v does not wrap ErrDestination", tc.dst, err)
		}
	}
	if err := CheckDestination(netip.AddrPort{}, nil, nil); !errors.Is(err, ErrDestination) {
		t.Errorf("CheckDestination(invalid) = %v", err)
	}
}

// TestCheckDestinationPorts: port 21 only, unless ports widen it (an SMTP
// relay through "USER x@mail.example:25" is what this prevents).
func TestCheckDestinationPorts(t *testing.T) {
	addr := netip.MustParseAddr("93.184.216.34")
	wide := []PortRange{{First: 21, Last: 21}, {First: 2121, Last: 2130}}
	for _, tc := range []struct {
		port  uint16
		ports []PortRange
		ok    bool
	}{
		{21, nil, true},
		{25, nil, false},
		{990, nil, false},
		{2121, nil, false},
		{21, wide, true},
		{2125, wide, true},
		{25, wide, false},
	} {
		err := CheckDestination(netip.AddrPortFrom(addr, tc.port), nil, tc.ports)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrDestination)) {
			t.Errorf("CheckDestination(port %d, %v) = %v, want ok=%v", tc.port, tc.ports, err, tc.ok)
		}
	}
}

// TestSpecialBlocksOrder: a block listed after one that holds it would
// never be found.
func TestSpecialBlocksOrder(t *testing.T) {
	for i, b := range specialBlocks {
		for _, earlier := range specialBlocks[:i] {
			if earlier.prefix.Bits() < b.prefix.Bits() && earlier.prefix.Contains(b.prefix.Addr()) {
				t.Errorf("%s (%s) comes after %s (%s), which holds it", b.prefix, b.name, earlier.prefix, earlier.name)
			}
		}
	}
}

// FuzzCheckDestination: an address that embeds an IPv4 address is never
// allowed where that IPv4 address is refused.
func FuzzCheckDestination(f *testing.F) {
	for _, s := range []string{"64:ff9b::a00:5", "2002:a00:5::1", "::a00:5", "64:ff9b:1::a00:5", "2606:2800:220:1::248"} {
		f.Add(netip.MustParseAddr(s).AsSlice())
	}
	allow := []netip.Prefix{netip.MustParsePrefix("64:ff9b:1::/48")}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, ok := netip.AddrFromSlice(b)
		if !ok {
			return
		}
		v4, embeds := embeddedIPv4(a)
		if !embeds {
			return
		}
		for _, allow := range [][]netip.Prefix{nil, allow} {
			if CheckDestination(netip.AddrPortFrom(a, 21), allow, nil) == nil &&
				CheckDestination(netip.AddrPortFrom(v4, 21), allow, nil) != nil {
				t.Fatalf("%s allowed, but the IPv4 address it reaches, %s, is refused", a, v4)
			}
		}
	})
}
