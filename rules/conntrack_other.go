//go:build !linux

package rules

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// NewConntrack returns an error wrapping errors.ErrUnsupported: conntrack
// exists on Linux only. See the Linux version for the contract.
func NewConntrack(log *slog.Logger, reg prometheus.Registerer) (*Conntrack, error) {
	return nil, fmt.Errorf("watching conntrack events: %w", errors.ErrUnsupported)
}
