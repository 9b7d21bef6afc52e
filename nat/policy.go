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

// SECURITY: a transparent or forward session connects where its client
// asked, so ftpgate must not become a way into places the client could not
// reach itself, nor a relay to other services (docs/security.md, "Open
// proxy"). CheckDestination decides whether such a session may connect to
// dst, judging its address by IANA's special-purpose address registries
// (specialBlocks):
//
//   - an address that embeds an IPv4 address (IPv4-mapped ::ffff:0:0/96,
//     IPv4-compatible ::/96, NAT64 64:ff9b::/96 and the local-use
//     64:ff9b:1::/48, 6to4 2002::/16) is judged by the IPv4 address it
//     reaches through the translator, as if the client had asked for that;
//     a local-use NAT64 address must be listed besides;
//   - blocks that name no single remote host (this network 0/8, loopback,
//     link-local, multicast, limited broadcast, reserved 240/4, ::,
//     discard-only, site-local): never, listed or not;
//   - the other special-purpose blocks that the registries do not mark
//     globally reachable (private, shared 100.64/10, documentation,
//     benchmarking, unique-local, IETF protocol assignments, ...): only when
//     a prefix of allow contains them;
//   - any other address: when allow is empty, or a prefix of allow
//     contains it.
//
// The port must be in ports, or be 21 when ports is empty. The gateway's
// own addresses are refused by the caller, which knows them. Errors wrap
// ErrDestination.
func CheckDestination(dst netip.AddrPort, allow []netip.Prefix, ports []PortRange) error {
	if err := checkPort(dst.Port(), ports); err != nil {
		return fmt.Errorf("destination %s: %w", dst, err)
	}
	return checkAddress(dst.Addr(), allow)
}

// DefaultDestinationPort is the one port a transparent or forward session
// may connect to when no allowed ports are configured.
const DefaultDestinationPort = 21

func checkPort(port uint16, ports []PortRange) error {
	if len(ports) == 0 {
		if port == DefaultDestinationPort {
			return nil
		}
		return fmt.Errorf("port %d is not %d, the only port allowed: %w", port, DefaultDestinationPort, ErrDestination)
	}
	for _, r := range ports {
		if r.Contains(port) {
			return nil
		}
	}
	return fmt.Errorf("port %d is not in allow_ports: %w", port, ErrDestination)
}

func checkAddress(dst netip.Addr, allow []netip.Prefix) error {
	dst = dst.Unmap().WithZone("")
	if !dst.IsValid() {
		return fmt.Errorf("no destination: %w", ErrDestination)
	}
	listed := false
	for _, p := range allow {
		if p.Contains(dst) {
			listed = true
			break
		}
	}
	if v4, ok := embeddedIPv4(dst); ok {
		if nat64LocalUse.Contains(dst) && !listed {
			return fmt.Errorf("destination %s is in the local-use NAT64 prefix %s, not in allow_destinations: %w", dst, nat64LocalUse, ErrDestination)
		}
		if err := checkAddress(v4, allow); err != nil {
			return fmt.Errorf("destination %s reaches the IPv4 address %s: %w", dst, v4, err)
		}
		return nil
	}
	b, special := specialBlockOf(dst)
	switch {
	case special && b.never:
		return fmt.Errorf("destination %s is %s (%s): %w", dst, b.name, b.prefix, ErrDestination)
	case special && !b.global && !listed:
		return fmt.Errorf("destination %s is %s (%s) and not in allow_destinations: %w", dst, b.name, b.prefix, ErrDestination)
	case len(allow) > 0 && !listed:
		return fmt.Errorf("destination %s is not in allow_destinations: %w", dst, ErrDestination)
	}
	return nil
}
