package rules

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// rawBytes returns the memory of a syscall.RawSockaddr* value: the layout
// the kernel writes.
func rawBytes[T any](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}

// setPort stores port in network byte order, as the kernel does.
func setPort(p *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(p))
	b[0], b[1] = byte(port>>8), byte(port)
}

func TestDecodeSockaddr(t *testing.T) {
	var in4 syscall.RawSockaddrInet4
	in4.Family = syscall.AF_INET
	setPort(&in4.Port, 21)
	in4.Addr = [4]byte{198, 18, 0, 9}
	if len(rawBytes(&in4)) != sizeofSockaddrInet4 {
		t.Fatalf("sockaddr_in is %d bytes, want %d", len(rawBytes(&in4)), sizeofSockaddrInet4)
	}

	var in6 syscall.RawSockaddrInet6
	in6.Family = syscall.AF_INET6
	setPort(&in6.Port, 0xabcd)
	in6.Flowinfo = 0x12345
	in6.Addr = netip.MustParseAddr("2001:db8::9").As16()
	if len(rawBytes(&in6)) != sizeofSockaddrInet6 {
		t.Fatalf("sockaddr_in6 is %d bytes, want %d", len(rawBytes(&in6)), sizeofSockaddrInet6)
	}

	var ll6 syscall.RawSockaddrInet6 // link-local, with a scope
	ll6.Family = syscall.AF_INET6
	setPort(&ll6.Port, 2121)
	ll6.Addr = netip.MustParseAddr("fe80::9").As16()
	ll6.Scope_id = 3

	var mapped syscall.RawSockaddrInet6 // ::ffff:198.18.0.9
	mapped.Family = syscall.AF_INET6
	setPort(&mapped.Port, 21)
	mapped.Addr = netip.AddrFrom16(netip.MustParseAddr("198.18.0.9").As16()).As16()

	var unknown syscall.RawSockaddrUnix
	unknown.Family = syscall.AF_UNIX

	for _, tt := range []struct {
		name string
		b    []byte
		want string // an AddrPort, or "error: substring"
	}{
		{"sockaddr_in", rawBytes(&in4), "198.18.0.9:21"},
		{"sockaddr_in6", rawBytes(&in6), "[2001:db8::9]:43981"},
		{"link-local", rawBytes(&ll6), "[fe80::9%3]:2121"},
		{"v4-mapped", rawBytes(&mapped), "198.18.0.9:21"},
		{"short sockaddr_in6", rawBytes(&in6)[:24], "error: want 28"},
		{"short sockaddr_in", rawBytes(&in4)[:6], "error: want at least 8"},
		{"no family", []byte{2}, "error: too short"},
		{"AF_UNIX", rawBytes(&unknown)[:28], "error: unknown address family 1"},
	} {
		got, err := decodeSockaddr(tt.b)
		if want, ok := strings.CutPrefix(tt.want, "error: "); ok {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: decodeSockaddr = %v, %v; want an error containing %q", tt.name, got, err, want)
			}
			continue
		}
		if err != nil || got.String() != tt.want {
			t.Errorf("%s: decodeSockaddr = %v, %v; want %s", tt.name, got, err, tt.want)
		}
	}
}

func TestSameAddrPort(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, tt := range []struct {
		a, b netip.AddrPort
		want bool
	}{
		{ap("198.18.0.1:21"), ap("198.18.0.1:21"), true},
		{ap("198.18.0.1:21"), ap("[::ffff:198.18.0.1]:21"), true},
		{ap("[fe80::1%3]:21"), ap("[fe80::1]:21"), true},
		{ap("198.18.0.1:21"), ap("198.18.0.1:2121"), false},
		{ap("198.18.0.1:21"), ap("198.18.0.9:21"), false},
	} {
		if got := sameAddrPort(tt.a, tt.b); got != tt.want {
			t.Errorf("sameAddrPort(%s, %s) = %t", tt.a, tt.b, got)
		}
	}
}

// TestOriginalDestinationNotRedirected asks about a plain loopback
// connection. It reads a socket option of its own socket and changes
// nothing, so it runs anywhere: wherever conntrack tracks the connection
// the kernel answers with the local address, elsewhere ENOENT; both mean
// "not redirected".
func TestOriginalDestinationNotRedirected(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		addr := "127.0.0.1:0"
		if network == "tcp6" {
			addr = "[::1]:0"
		}
		ln, err := net.Listen(network, addr)
		if err != nil {
			t.Logf("%s: no loopback listener (%v); skipping this family", network, err)
			continue
		}
		defer ln.Close()
		c, err := net.Dial(network, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		dst, err := OriginalDestination(s.(*net.TCPConn))
		if !errors.Is(err, ErrNotExist) {
			t.Errorf("%s: OriginalDestination = %v, %v; want ErrNotExist", network, dst, err)
		}
	}
}
