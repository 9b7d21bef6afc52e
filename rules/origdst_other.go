//go:build !linux

package rules

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// OriginalDestination returns an error wrapping errors.ErrUnsupported:
// SO_ORIGINAL_DST exists on Linux only. See the Linux version for the
// contract.
func OriginalDestination(c *net.TCPConn) (netip.AddrPort, error) {
	return netip.AddrPort{}, fmt.Errorf("reading original destination of %s -> %s: %w",
		c.RemoteAddr(), c.LocalAddr(), errors.ErrUnsupported)
}
