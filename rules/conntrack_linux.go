package rules

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"syscall"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
)

// eventReadBuffer is the receive buffer the event socket asks for
// (SO_RCVBUFFORCE, which CAP_NET_ADMIN allows beyond net.core.rmem_max).
// The kernel reports every new connection in the namespace, not only FTP
// data connections: a burst of them must not overflow the socket while the
// reader is descheduled. One NEW event is a few hundred bytes.
const eventReadBuffer = 4 << 20

// NewConntrack opens a netlink event socket in the current network namespace and starts one goroutine that reads events
// until Close. log may be nil.
//
// It needs CAP_NET_ADMIN and the kernel's nf_conntrack and
// nf_conntrack_netlink (built in, or modules the kernel loads on demand).
// If netlink conntrack is unavailable, the error wraps
// errors.ErrUnsupported; without the capability it wraps syscall.EPERM.
// The current network namespace is the calling thread's, which is the
// process's unless the caller has moved a locked thread.
func NewConntrack(log *slog.Logger) (*Conntrack, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := probeConntrack(); err != nil {
		return nil, err
	}
	nl, err := netlink.Dial(syscall.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("opening conntrack event socket: %w", err)
	}
	if err := setReadBuffer(nl, eventReadBuffer); err != nil {
		log.Warn("conntrack event socket keeps its default receive buffer", "want", eventReadBuffer, "err", err)
	}
	if err := nl.JoinGroup(uint32(netfilter.GroupCTNew)); err != nil {
		_ = nl.Close()
		return nil, fmt.Errorf("subscribing to conntrack NEW events: %w", err)
	}
	return newConntrack(log, &netlinkEvents{nl: nl, log: log}), nil
}

// probeConntrack asks ctnetlink for its global statistics: the kernel binds
// a socket to the conntrack event group even where ctnetlink is missing,
// but a request fails.
func probeConntrack() error {
	c, err := conntrack.Dial(nil)
	if err != nil {
		return unavailable("opening a netlink netfilter socket", err)
	}
	defer c.Close()
	if _, err := c.StatsGlobal(); err != nil {
		return unavailable("querying netlink conntrack", err)
	}
	return nil
}

// unavailable wraps an error of probeConntrack: EPERM and EACCES as they
// are, anything else as errors.ErrUnsupported.
func unavailable(doing string, err error) error {
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("%s (needs CAP_NET_ADMIN): %w", doing, err)
	}
	return fmt.Errorf("%s: netlink conntrack is unavailable (the kernel needs nf_conntrack and nf_conntrack_netlink): %w: %w",
		doing, errors.ErrUnsupported, err)
}

// setReadBuffer sets nl's receive buffer to n bytes, beyond
// net.core.rmem_max if allowed (SO_RCVBUFFORCE), else as far as it goes.
func setReadBuffer(nl *netlink.Conn, n int) error {
	raw, err := nl.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, n)
	}); err != nil {
		return err
	}
	if serr == nil {
		return nil
	}
	if err := nl.SetReadBuffer(n); err != nil {
		return fmt.Errorf("SO_RCVBUFFORCE: %w; SO_RCVBUF: %w", serr, err)
	}
	return nil
}

// netlinkEvents is the eventSource of NewConntrack: a netlink socket
// subscribed to conntrack's NEW group.
type netlinkEvents struct {
	nl  *netlink.Conn
	log *slog.Logger
}

func (s *netlinkEvents) receive() ([]newConn, error) {
	msgs, err := s.nl.Receive()
	if err != nil {
		return nil, err
	}
	var conns []newConn
	for _, m := range msgs {
		nc, ok, err := decodeEvent(m)
		if err != nil {
			s.log.Debug("undecodable conntrack event", "err", err)
			continue
		}
		if ok {
			conns = append(conns, nc)
		}
	}
	return conns, nil
}

func (s *netlinkEvents) Close() error { return s.nl.Close() }

// decodeEvent decodes one ctnetlink event message. It returns false (and
// no error) for events other than NEW and for connections other than TCP.
func decodeEvent(m netlink.Message) (newConn, bool, error) {
	var ev conntrack.Event
	if err := ev.Unmarshal(m); err != nil {
		return newConn{}, false, err
	}
	if ev.Type != conntrack.EventNew || ev.Flow == nil {
		return newConn{}, false, nil
	}
	k, ok := flowKey(ev.Flow)
	if !ok {
		return newConn{}, false, nil
	}
	return newConn{key: k, sport: ev.Flow.TupleOrig.Proto.SourcePort}, true, nil
}

// flowKey returns the key of f's original tuple, and false if f is not a
// TCP connection between valid addresses.
func flowKey(f *conntrack.Flow) (expectKey, bool) {
	t := f.TupleOrig
	if t.Proto.Protocol != syscall.IPPROTO_TCP || !t.IP.SourceAddress.IsValid() || !t.IP.DestinationAddress.IsValid() {
		return expectKey{}, false
	}
	return newExpectKey(t.IP.SourceAddress, netip.AddrPortFrom(t.IP.DestinationAddress, t.Proto.DestinationPort)), true
}
