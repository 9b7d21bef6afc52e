//go:build !linux

package rules

import (
	"errors"
	"fmt"
	"log/slog"
)

// NewConntrack returns an error wrapping errors.ErrUnsupported: conntrack
// exists on Linux only. See the Linux version for the contract.
func NewConntrack(log *slog.Logger) (*Conntrack, error) {
	return nil, fmt.Errorf("watching conntrack events: %w", errors.ErrUnsupported)
}
