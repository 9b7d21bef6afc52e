//go:build linux

package trace

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
	"golang.org/x/sys/unix"
)

// pollInterval bounds how long a live read waits before Run checks for
// cancellation.
const pollInterval = 200 * time.Millisecond

// rcvBuf is the receive buffer asked for the capture socket.
const rcvBuf = 32 << 20

// Live captures packets from one network interface with pcapgo's
// EthernetHandle: an AF_PACKET socket, no libpcap, no cgo. It needs
// CAP_NET_RAW.
type Live struct {
	h       *pcapgo.EthernetHandle
	fd      int
	ifindex int
	link    layers.LinkType
	dropped uint64
}

// OpenLive starts capturing on the interface called name.
func OpenLive(name string) (*Live, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("capturing on %s: %w", name, err)
	}
	h, err := pcapgo.NewEthernetHandle(name)
	if err != nil {
		return nil, fmt.Errorf("capturing on %s: %w", name, err)
	}
	fd, err := handleFD(h)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("capturing on %s: %w", name, err)
	}
	// A large receive buffer rides out bursts (a fast transfer on a veth
	// brings hundreds of megabytes a second); past the system's limit only
	// CAP_NET_ADMIN may go, so the plain option is the fallback.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBuf)
	}
	if err := h.SetCaptureLength(Snaplen); err != nil {
		h.Close()
		return nil, fmt.Errorf("capturing on %s: setting the capture length: %w", name, err)
	}
	link := layers.LinkTypeEthernet
	if ifi.Flags&net.FlagLoopback == 0 && len(ifi.HardwareAddr) == 0 {
		link = layers.LinkTypeRaw // a tun or WireGuard device: IP without a link header
	}
	return &Live{h: h, fd: fd, ifindex: ifi.Index, link: link}, nil
}

// handleFD returns the socket of an EthernetHandle. pcapgo (v1.1.19) has
// no accessor for it and no read timeout; trace needs the socket to poll it,
// so that a capture stops on time even when no packet comes.
func handleFD(h *pcapgo.EthernetHandle) (int, error) {
	v := reflect.ValueOf(h).Elem().FieldByName("fd")
	if !v.IsValid() || v.Kind() != reflect.Int {
		return -1, errors.New("pcapgo.EthernetHandle has no fd field: gopacket version not supported")
	}
	return int(v.Int()), nil
}

// ReadPacket implements Source. It waits at most pollInterval for a
// packet; when none came it returns errIdle.
func (l *Live) ReadPacket() ([]byte, gopacket.CaptureInfo, layers.LinkType, error) {
	fds := []unix.PollFd{{Fd: int32(l.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, int(pollInterval/time.Millisecond))
	switch {
	case errors.Is(err, unix.EINTR), err == nil && n == 0:
		return nil, gopacket.CaptureInfo{}, 0, errIdle
	case err != nil:
		return nil, gopacket.CaptureInfo{}, 0, fmt.Errorf("waiting for packets: %w", err)
	}
	data, ci, err := l.h.ZeroCopyReadPacketData()
	if err != nil {
		return nil, ci, 0, err
	}
	if ci.InterfaceIndex != l.ifindex {
		// Queued between the socket's creation and its binding.
		return nil, ci, 0, errIdle
	}
	return data, ci, l.link, nil
}

// Dropped returns how many packets the kernel dropped because trace did
// not read them fast enough, so far.
func (l *Live) Dropped() uint64 {
	if st, err := l.h.Stats(); err == nil {
		l.dropped += uint64(st.Drops)
	}
	return l.dropped
}

// Close stops the capture.
func (l *Live) Close() error {
	l.h.Close()
	return nil
}
