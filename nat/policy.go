package nat

import (
	"fmt"
	"net/netip"
)

// sharedAddressSpace is 100.64.0.0/10, the carrier-grade NAT range
// (RFC 6598), which netip.Addr.IsPrivate does not cover.
var sharedAddressSpace = netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, 0, 0}), 10)

// SECURITY: FTP bounce (RFC 2577 section 3, CERT CA-1997-27). A PORT or EPRT
// names the address the data connection goes to; obeyed blindly, it makes
// ftpgate connect to any host and port the client likes, from ftpgate's own
// address and past the firewall it sits in. So ftpgate only ever connects
// back to the client it is talking to:
//
//   - a port below 1024 is refused (ErrLowPort), as OpenBSD ftp-proxy does
//     (MIN_PORT): no data connection to a privileged service;
//   - the control peer's own address is accepted;
//   - an address a client behind its own NAT (or a broken one) would send,
//     private (RFC 1918, ULA fc00::/7), shared 100.64.0.0/10 (RFC 6598),
//     loopback, link-local or unspecified, is replaced by the control peer's
//     address, keeping the port;
//   - any other address is a third party and refused (ErrBounce).
//
// Every target ActiveTarget returns therefore has the control peer's address.

// ActiveTarget returns the address ftpgate connects to for a client's PORT
// or EPRT: control is the client's control-connection address as ftpgate
// sees it, requested the address and port from the command. Addresses are
// compared after Unmap, and the returned address is control.Unmap(), so an
// IPv4 client seen on a dual-stack socket yields an IPv4 target. Refusals
// wrap ErrLowPort or ErrBounce; an invalid control address is refused with
// ErrBounce.
func ActiveTarget(control netip.Addr, requested netip.AddrPort) (netip.AddrPort, error) {
	peer := control.Unmap()
	addr := requested.Addr().Unmap()
	port := requested.Port()
	switch {
	case port < 1024:
		return netip.AddrPort{}, fmt.Errorf("PORT/EPRT %s from client %s: %w", requested, control, ErrLowPort)
	case !peer.IsValid():
		return netip.AddrPort{}, fmt.Errorf("PORT/EPRT %s from client with no address: %w", requested, ErrBounce)
	case addr.WithZone("") == peer.WithZone(""), behindNAT(addr):
		return netip.AddrPortFrom(peer, port), nil
	default:
		return netip.AddrPort{}, fmt.Errorf("PORT/EPRT %s from client %s: %w", requested, control, ErrBounce)
	}
}

// behindNAT reports whether a is an address that a client behind its own NAT
// would put in PORT or EPRT: one that means nothing outside its own network.
func behindNAT(a netip.Addr) bool {
	return a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast() ||
		a.IsUnspecified() || sharedAddressSpace.Contains(a)
}

// PassiveTarget returns the address ftpgate connects to for a server's 227 or
// 229 reply: always the server's control-connection address control (after
// Unmap) with the advertised port. The address in a 227, whether private,
// misconfigured or malicious, is never followed. differs reports whether the
// advertised address is valid and not the control address, for logging. For
// a 229, which carries no address, pass an AddrPort with an invalid Addr,
// e.g. netip.AddrPortFrom(netip.Addr{}, port).
func PassiveTarget(control netip.Addr, advertised netip.AddrPort) (target netip.AddrPort, differs bool) {
	peer := control.Unmap()
	addr := advertised.Addr().Unmap()
	differs = addr.IsValid() && addr.WithZone("") != peer.WithZone("")
	return netip.AddrPortFrom(peer, advertised.Port()), differs
}

// SECURITY: a transparent (or forward) session connects where its client
// asked, so ftpgate must not become a way into places the client could not
// reach itself (DESIGN.md section 5, item 7). CheckDestination decides
// whether such a session may connect to dst:
//
//   - loopback, link-local, multicast and unspecified addresses: never;
//   - private addresses (RFC 1918, ULA fc00::/7, shared 100.64.0.0/10):
//     only when a prefix of allow contains them;
//   - any other address: when allow is empty, or a prefix of allow
//     contains it.
//
// The gateway's own addresses are refused by the caller, which knows them.
// Errors wrap ErrDestination.
func CheckDestination(dst netip.Addr, allow []netip.Prefix) error {
	dst = dst.Unmap()
	switch {
	case !dst.IsValid():
		return fmt.Errorf("no destination: %w", ErrDestination)
	case dst.IsLoopback(), dst.IsLinkLocalUnicast(), dst.IsLinkLocalMulticast(),
		dst.IsInterfaceLocalMulticast(), dst.IsMulticast(), dst.IsUnspecified():
		return fmt.Errorf("destination %s is loopback, link-local, multicast or unspecified: %w", dst, ErrDestination)
	}
	listed := false
	for _, p := range allow {
		if p.Contains(dst) {
			listed = true
			break
		}
	}
	if behindNAT(dst) && !listed {
		return fmt.Errorf("private destination %s is not in allow_destinations: %w", dst, ErrDestination)
	}
	if len(allow) > 0 && !listed {
		return fmt.Errorf("destination %s is not in allow_destinations: %w", dst, ErrDestination)
	}
	return nil
}
