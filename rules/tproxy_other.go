//go:build !linux

package rules

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

// TransparentListenConfig returns a net.ListenConfig whose Listen fails
// with an error wrapping errors.ErrUnsupported: IP_TRANSPARENT exists on
// Linux only. See the Linux version for the contract.
func TransparentListenConfig() net.ListenConfig {
	return net.ListenConfig{Control: func(network, address string, _ syscall.RawConn) error {
		return fmt.Errorf("setting transparent mode on %s listener %s: %w", network, address, errors.ErrUnsupported)
	}}
}
