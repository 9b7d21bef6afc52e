//go:build !linux

package trace

import (
	"errors"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Live is a live capture; it is only implemented on Linux.
type Live struct{}

// OpenLive fails: live capture needs Linux's AF_PACKET sockets.
func OpenLive(name string) (*Live, error) {
	return nil, errors.New("capturing on " + name + ": live capture is only supported on Linux")
}

// ReadPacket implements Source.
func (*Live) ReadPacket() ([]byte, gopacket.CaptureInfo, layers.LinkType, error) {
	return nil, gopacket.CaptureInfo{}, 0, errors.New("live capture is only supported on Linux")
}

// Dropped returns 0.
func (*Live) Dropped() uint64 { return 0 }

// Close does nothing.
func (*Live) Close() error { return nil }
