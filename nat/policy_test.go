package nat

import (
	"errors"
	"net/netip"
	"testing"
)

func TestActiveTarget(t *testing.T) {
	addr := netip.MustParseAddr
	tests := []struct {
		name      string
		control   netip.Addr
		requested netip.AddrPort
		want      netip.AddrPort
		err       error
	}{
		{"own address", addr("203.0.113.7"), ap("203.0.113.7:50001"), ap("203.0.113.7:50001"), nil},
		{"own IPv6 address", addr("2001:db8::7"), ap("[2001:db8::7]:50001"), ap("[2001:db8::7]:50001"), nil},
		{"port 1024", addr("203.0.113.7"), ap("203.0.113.7:1024"), ap("203.0.113.7:1024"), nil},
		{"RFC 1918 10/8", addr("203.0.113.7"), ap("10.0.0.5:40000"), ap("203.0.113.7:40000"), nil},
		{"RFC 1918 172.16/12", addr("203.0.113.7"), ap("172.31.255.1:40000"), ap("203.0.113.7:40000"), nil},
		{"RFC 1918 192.168/16", addr("203.0.113.7"), ap("192.168.1.2:40000"), ap("203.0.113.7:40000"), nil},
		{"shared 100.64/10", addr("203.0.113.7"), ap("100.127.0.1:40000"), ap("203.0.113.7:40000"), nil},
		{"loopback", addr("203.0.113.7"), ap("127.0.0.1:40000"), ap("203.0.113.7:40000"), nil},
		{"link-local", addr("203.0.113.7"), ap("169.254.1.1:40000"), ap("203.0.113.7:40000"), nil},
		{"unspecified", addr("203.0.113.7"), ap("0.0.0.0:40000"), ap("203.0.113.7:40000"), nil},
		{"ULA", addr("2001:db8::7"), ap("[fd00::5]:40000"), ap("[2001:db8::7]:40000"), nil},
		{"IPv6 loopback", addr("2001:db8::7"), ap("[::1]:40000"), ap("[2001:db8::7]:40000"), nil},
		{"IPv6 link-local", addr("fe80::7%eth0"), ap("[fe80::7]:40000"), ap("[fe80::7%eth0]:40000"), nil},
		{"IPv6 unspecified", addr("2001:db8::7"), ap("[::]:40000"), ap("[2001:db8::7]:40000"), nil},
		{"private, other family", addr("203.0.113.7"), ap("[fd00::5]:40000"), ap("203.0.113.7:40000"), nil},
		{"mapped control, IPv4 PORT", addr("::ffff:203.0.113.7"), ap("203.0.113.7:50001"), ap("203.0.113.7:50001"), nil},
		{"mapped control, private PORT", addr("::ffff:203.0.113.7"), ap("192.168.1.2:50001"), ap("203.0.113.7:50001"), nil},
		{"IPv4 control, mapped EPRT", addr("203.0.113.7"), ap("[::ffff:203.0.113.7]:50001"), ap("203.0.113.7:50001"), nil},
		{"mapped control, mapped private EPRT", addr("::ffff:203.0.113.7"), ap("[::ffff:10.0.0.1]:50001"), ap("203.0.113.7:50001"), nil},
		{"mapped control, third party", addr("::ffff:203.0.113.7"), ap("198.51.100.9:50001"), netip.AddrPort{}, ErrBounce},
		{"third party", addr("203.0.113.7"), ap("198.51.100.9:50001"), netip.AddrPort{}, ErrBounce},
		{"third party, same /24", addr("203.0.113.7"), ap("203.0.113.8:50001"), netip.AddrPort{}, ErrBounce},
		{"third party IPv6", addr("2001:db8::7"), ap("[2001:db8::8]:50001"), netip.AddrPort{}, ErrBounce},
		{"broadcast", addr("203.0.113.7"), ap("255.255.255.255:50001"), netip.AddrPort{}, ErrBounce},
		{"multicast", addr("203.0.113.7"), ap("224.0.0.1:50001"), netip.AddrPort{}, ErrBounce},
		{"no control address", netip.Addr{}, ap("0.0.0.0:50001"), netip.AddrPort{}, ErrBounce},
		{"low port", addr("203.0.113.7"), ap("203.0.113.7:1023"), netip.AddrPort{}, ErrLowPort},
		{"port 25 to third party", addr("203.0.113.7"), ap("198.51.100.9:25"), netip.AddrPort{}, ErrLowPort},
		{"port 0", addr("203.0.113.7"), ap("203.0.113.7:0"), netip.AddrPort{}, ErrLowPort},
		{"zero request", addr("203.0.113.7"), netip.AddrPort{}, netip.AddrPort{}, ErrLowPort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ActiveTarget(tt.control, tt.requested)
			if !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
				t.Fatalf("ActiveTarget(%v, %v) error = %v, want %v", tt.control, tt.requested, err, tt.err)
			}
			if got != tt.want {
				t.Fatalf("ActiveTarget(%v, %v) = %v, want %v", tt.control, tt.requested, got, tt.want)
			}
		})
	}
}

func TestActiveTargetErrorMessage(t *testing.T) {
	_, err := ActiveTarget(netip.MustParseAddr("203.0.113.7"), ap("198.51.100.9:50001"))
	want := "PORT/EPRT 198.51.100.9:50001 from client 203.0.113.7: address is not the control connection's peer"
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v, want %s", err, want)
	}
}

func TestPassiveTarget(t *testing.T) {
	addr := netip.MustParseAddr
	tests := []struct {
		name       string
		control    netip.Addr
		advertised netip.AddrPort
		want       netip.AddrPort
		differs    bool
	}{
		{"same", addr("198.51.100.1"), ap("198.51.100.1:50001"), ap("198.51.100.1:50001"), false},
		{"private", addr("198.51.100.1"), ap("10.0.0.2:50001"), ap("198.51.100.1:50001"), true},
		{"third party", addr("198.51.100.1"), ap("192.0.2.99:25"), ap("198.51.100.1:25"), true},
		{"unspecified", addr("198.51.100.1"), ap("0.0.0.0:50001"), ap("198.51.100.1:50001"), true},
		{"229, no address", addr("198.51.100.1"), port229(50001), ap("198.51.100.1:50001"), false},
		{"mapped control", addr("::ffff:198.51.100.1"), ap("198.51.100.1:50001"), ap("198.51.100.1:50001"), false},
		{"mapped control, private", addr("::ffff:198.51.100.1"), ap("192.168.0.1:50001"), ap("198.51.100.1:50001"), true},
		{"mapped advertised", addr("198.51.100.1"), ap("[::ffff:198.51.100.1]:50001"), ap("198.51.100.1:50001"), false},
		{"IPv6", addr("2001:db8::1"), ap("[2001:db8::1]:50001"), ap("[2001:db8::1]:50001"), false},
		{"IPv6 control, IPv4 advertised", addr("2001:db8::1"), ap("198.51.100.1:50001"), ap("[2001:db8::1]:50001"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, differs := PassiveTarget(tt.control, tt.advertised)
			if got != tt.want || differs != tt.differs {
				t.Fatalf("PassiveTarget(%v, %v) = %v, %v; want %v, %v", tt.control, tt.advertised, got, differs, tt.want, tt.differs)
			}
		})
	}
}
