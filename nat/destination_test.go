package nat

import (
	"errors"
	"net/netip"
	"testing"
)

func TestCheckDestination(t *testing.T) {
	edge := []netip.Prefix{netip.MustParsePrefix("198.19.0.0/24"), netip.MustParsePrefix("10.1.0.0/16")}
	for _, tc := range []struct {
		dst   string
		allow []netip.Prefix
		ok    bool
	}{
		{"203.0.113.7", nil, true},
		{"2001:db8::7", nil, true},
		{"::ffff:203.0.113.7", nil, true},
		{"127.0.0.1", nil, false},
		{"127.0.0.1", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, false}, // never, even listed
		{"::1", nil, false},
		{"169.254.1.1", nil, false},
		{"fe80::1", nil, false},
		{"224.0.0.1", nil, false},
		{"ff02::1", nil, false},
		{"0.0.0.0", nil, false},
		{"10.1.2.3", nil, false},  // private, not listed
		{"10.1.2.3", edge, true},  // private, listed
		{"10.2.0.1", edge, false}, // private, not in the listed /16
		{"192.168.1.1", nil, false},
		{"100.64.0.1", nil, false},
		{"fd00::1", nil, false},
		{"198.19.0.10", edge, true},
		{"198.19.1.10", edge, false}, // public, but a list is given and misses it
		{"203.0.113.7", edge, false},
	} {
		err := CheckDestination(netip.MustParseAddr(tc.dst), tc.allow)
		if (err == nil) != tc.ok {
			t.Errorf("CheckDestination(%s, %v) = %v, want ok=%v", tc.dst, tc.allow, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrDestination) {
			t.Errorf("CheckDestination(%s): %v does not wrap ErrDestination", tc.dst, err)
		}
	}
	if err := CheckDestination(netip.Addr{}, nil); !errors.Is(err, ErrDestination) {
		t.Errorf("CheckDestination(invalid) = %v", err)
	}
}
