package rules

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"unsafe"
)

// Socket options of netfilter's conntrack (linux/netfilter_ipv4.h and
// linux/netfilter_ipv6/ip6_tables.h). Both are 80, at different levels.
const (
	soOriginalDst     = 80 // SO_ORIGINAL_DST, level SOL_IP
	ip6tSoOriginalDst = 80 // IP6T_SO_ORIGINAL_DST, level SOL_IPV6
)

// Sizes of struct sockaddr_in and struct sockaddr_in6.
const (
	sizeofSockaddrInet4 = 16
	sizeofSockaddrInet6 = 28
)

// OriginalDestination returns the destination a connection had before the firewall redirected it
// (iptables REDIRECT or DNAT): getsockopt SO_ORIGINAL_DST (SOL_IP, 80) for IPv4, IP6T_SO_ORIGINAL_DST (SOL_IPV6, 80) for IPv6.
// It returns ErrNotExist (wrapped) when the connection was not redirected (ENOENT from the kernel) and an error for other failures.
//
// Not redirected covers two cases. If conntrack does not track the
// connection (no conntrack-using rule in the namespace, or NOTRACK), the
// kernel says ENOENT, and the error wraps syscall.ENOENT too. If conntrack
// tracks it but no NAT changed its destination, the kernel answers with the
// connection's own local address; OriginalDestination reports that as
// ErrNotExist as well, so that a transparent proxy never mistakes a client
// that connected to it directly for one bound elsewhere (and dials itself).
// A connection diverted by TPROXY was not NATed either: its LocalAddr is the
// original destination (see TransparentListenConfig).
//
// The family of the lookup follows c's local address: an IPv4 address, or
// an IPv4-mapped one on a dual-stack socket, is looked up with
// SO_ORIGINAL_DST, anything else with IP6T_SO_ORIGINAL_DST. The returned
// address is unmapped; a link-local IPv6 destination carries its scope as a
// numeric zone ("fe80::1%2"), which net.Dial understands. c stays open and
// owned by the caller.
func OriginalDestination(c *net.TCPConn) (netip.AddrPort, error) {
	local, remote := addrPortOf(c.LocalAddr()), addrPortOf(c.RemoteAddr())
	level, opt, size := syscall.SOL_IPV6, ip6tSoOriginalDst, sizeofSockaddrInet6
	if a := local.Addr(); a.Is4() || a.Is4In6() {
		level, opt, size = syscall.SOL_IP, soOriginalDst, sizeofSockaddrInet4
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("reading original destination of %s -> %s: %w", remote, local, err)
	}
	var (
		buf   [sizeofSockaddrInet6]byte
		n     int
		errno syscall.Errno
	)
	cerr := raw.Control(func(fd uintptr) {
		n, errno = getsockopt(fd, level, opt, buf[:size])
	})
	if cerr != nil {
		return netip.AddrPort{}, fmt.Errorf("reading original destination of %s -> %s: %w", remote, local, cerr)
	}
	switch {
	case errno == syscall.ENOENT:
		return netip.AddrPort{}, fmt.Errorf("reading original destination of %s -> %s: conntrack does not track the connection (%w), so no NAT rule redirected it (%w)",
			remote, local, errno, ErrNotExist)
	case errno != 0:
		return netip.AddrPort{}, fmt.Errorf("reading original destination of %s -> %s: getsockopt: %w",
			remote, local, errno)
	}
	dst, err := decodeSockaddr(buf[:n])
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("reading original destination of %s -> %s: %w", remote, local, err)
	}
	if sameAddrPort(dst, local) {
		return netip.AddrPort{}, fmt.Errorf("reading original destination of %s -> %s: no NAT rule redirected the connection (%w)",
			remote, local, ErrNotExist)
	}
	return dst, nil
}

// getsockopt calls getsockopt(2) on fd into b and returns how many bytes
// the kernel wrote, or the errno.
func getsockopt(fd uintptr, level, opt int, b []byte) (int, syscall.Errno) {
	n := uint32(len(b))
	_, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&n)), 0)
	if errno != 0 {
		return 0, errno
	}
	return min(int(n), len(b)), 0
}

// decodeSockaddr decodes a struct sockaddr_in or sockaddr_in6 as the kernel
// writes it: the family in host byte order, the port in network byte order.
// The address is unmapped; a non-zero IPv6 scope ID becomes a numeric zone.
func decodeSockaddr(b []byte) (netip.AddrPort, error) {
	if len(b) < 2 {
		return netip.AddrPort{}, fmt.Errorf("decoding sockaddr: %d bytes, too short for the family", len(b))
	}
	switch fam := binary.NativeEndian.Uint16(b); fam {
	case syscall.AF_INET:
		// struct sockaddr_in { sa_family_t sin_family; in_port_t sin_port;
		//     struct in_addr sin_addr; unsigned char sin_zero[8]; }
		if len(b) < 8 {
			return netip.AddrPort{}, fmt.Errorf("decoding sockaddr_in: %d bytes, want at least 8", len(b))
		}
		port := binary.BigEndian.Uint16(b[2:4])
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port), nil
	case syscall.AF_INET6:
		// struct sockaddr_in6 { sa_family_t sin6_family; in_port_t sin6_port;
		//     uint32_t sin6_flowinfo; struct in6_addr sin6_addr; uint32_t sin6_scope_id; }
		if len(b) < sizeofSockaddrInet6 {
			return netip.AddrPort{}, fmt.Errorf("decoding sockaddr_in6: %d bytes, want %d", len(b), sizeofSockaddrInet6)
		}
		port := binary.BigEndian.Uint16(b[2:4])
		addr := netip.AddrFrom16([16]byte(b[8:24])).Unmap()
		if scope := binary.NativeEndian.Uint32(b[24:28]); scope != 0 && addr.Is6() {
			addr = addr.WithZone(strconv.FormatUint(uint64(scope), 10))
		}
		return netip.AddrPortFrom(addr, port), nil
	default:
		return netip.AddrPort{}, fmt.Errorf("decoding sockaddr: unknown address family %d", fam)
	}
}

// addrPortOf returns a's address and port, unmapped, or the zero value if
// a is not a *net.TCPAddr.
func addrPortOf(a net.Addr) netip.AddrPort {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// sameAddrPort reports whether a and b are the same address and port,
// ignoring zones and IPv4 mapping.
func sameAddrPort(a, b netip.AddrPort) bool {
	return a.Port() == b.Port() && a.Addr().Unmap().WithZone("") == b.Addr().Unmap().WithZone("")
}
