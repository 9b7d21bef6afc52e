package rules

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/prometheus/client_golang/prometheus"
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
// until Close; a second socket serves lookups in the connection table. log may be nil. Its metrics are registered on
// reg, or on a private registry if reg is nil.
//
// It needs CAP_NET_ADMIN and the kernel's nf_conntrack and
// nf_conntrack_netlink (built in, or modules the kernel loads on demand).
// If netlink conntrack is unavailable, the error wraps
// errors.ErrUnsupported; without the capability it wraps syscall.EPERM.
// The current network namespace is the calling thread's, which is the
// process's unless the caller has moved a locked thread.
func NewConntrack(log *slog.Logger, reg prometheus.Registerer) (*Conntrack, error) {
	return newNetlinkConntrack(log, reg, eventReadBuffer)
}

// newNetlinkConntrack is NewConntrack with the event socket's receive
// buffer size (the tests overflow a small one).
func newNetlinkConntrack(log *slog.Logger, reg prometheus.Registerer, readBuffer int) (*Conntrack, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := probeConntrack(); err != nil {
		return nil, err
	}
	m, err := newConntrackMetrics(reg)
	if err != nil {
		return nil, err
	}
	nl, err := netlink.Dial(syscall.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("opening conntrack event socket: %w", err)
	}
	if err := setReadBuffer(nl, readBuffer); err != nil {
		log.Warn("conntrack event socket keeps its default receive buffer", "want", readBuffer, "err", err)
	}
	if err := nl.JoinGroup(uint32(netfilter.GroupCTNew)); err != nil {
		_ = nl.Close()
		return nil, fmt.Errorf("subscribing to conntrack NEW events: %w", err)
	}
	req, err := netfilter.Dial(nil)
	if err != nil {
		_ = nl.Close()
		return nil, fmt.Errorf("opening conntrack request socket: %w", err)
	}
	return newConntrack(log, &netlinkEvents{nl: nl, req: req, log: log}, m), nil
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
// subscribed to conntrack's NEW group, and one for table lookups.
type netlinkEvents struct {
	nl  *netlink.Conn
	log *slog.Logger

	reqMu sync.Mutex // one lookup at a time: each sets the socket's deadline
	req   *netfilter.Conn
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

func (s *netlinkEvents) Close() error {
	return errors.Join(s.nl.Close(), s.req.Close())
}

// Values from include/uapi/linux/netfilter/nfnetlink_conntrack.h and, for
// the filter flags, net/netfilter/nf_internals.h (Linux 5.10 and later).
const (
	ctaTupleOrig      = 1  // CTA_TUPLE_ORIG
	ctaFilter         = 25 // CTA_FILTER
	ctaTupleIP        = 1  // CTA_TUPLE_IP
	ctaTupleProto     = 2  // CTA_TUPLE_PROTO
	ctaIPv4Src        = 1  // CTA_IP_V4_SRC
	ctaIPv4Dst        = 2  // CTA_IP_V4_DST
	ctaIPv6Src        = 3  // CTA_IP_V6_SRC
	ctaIPv6Dst        = 4  // CTA_IP_V6_DST
	ctaProtoNum       = 1  // CTA_PROTO_NUM
	ctaProtoDstPort   = 3  // CTA_PROTO_DST_PORT
	ctaFilterOrigFlag = 1  // CTA_FILTER_ORIG_FLAGS
	// CTA_FILTER_F_CTA_PROTO_NUM | CTA_FILTER_F_CTA_PROTO_DST_PORT
	filterProtoDport = 1<<3 | 1<<5
	// CTA_FILTER_F_CTA_IP_SRC | CTA_FILTER_F_CTA_IP_DST
	filterAddrs    = 1<<0 | 1<<1
	ipctnlMsgCtGet = 1 // IPCTNL_MSG_CT_GET
)

// lookup dumps the table's TCP connections from k.from to k.to, any source
// port, giving up at ctx's deadline. The kernel filters the dump by the original tuple (CTA_FILTER);
// one that does not know the filter returns the whole table, which the
// caller's match sorts out.
func (s *netlinkEvents) lookup(ctx context.Context, k expectKey) ([]newConn, error) {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(lookupTimeout)
	}
	if err := s.req.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("setting the request socket's deadline: %w", err)
	}
	req, err := netfilter.MarshalNetlink(netfilter.Header{
		SubsystemID: netfilter.NFSubsysCTNetlink,
		MessageType: ipctnlMsgCtGet,
		Family:      familyOf(k.from),
		Flags:       netlink.Request | netlink.Dump,
	}, tupleFilter(k))
	if err != nil {
		return nil, fmt.Errorf("marshalling the conntrack dump request: %w", err)
	}
	msgs, err := s.req.Query(req)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", ctx.Err(), err)
		}
		return nil, fmt.Errorf("dumping conntrack: %w", err)
	}
	var conns []newConn
	for _, m := range msgs {
		var ev conntrack.Event
		if err := ev.Unmarshal(m); err != nil || ev.Flow == nil {
			continue
		}
		if nc, ok := flowConn(ev.Flow); ok {
			conns = append(conns, nc)
		}
	}
	return conns, nil
}

// familyOf is the netfilter protocol family of a.
func familyOf(a netip.Addr) netfilter.ProtoFamily {
	if a.Is4() {
		return netfilter.ProtoIPv4
	}
	return netfilter.ProtoIPv6
}

// tupleFilter is the CTA_TUPLE_ORIG and CTA_FILTER attributes that make a
// dump return only TCP connections to k.to's port and, on IPv4, from
// k.from to k.to's address. On IPv6 the kernel's address filter matches
// nothing (seen on Linux 6.18: a connection that the unfiltered dump lists
// is missing from the filtered one), so the caller's match checks the
// addresses.
func tupleFilter(k expectKey) []netfilter.Attribute {
	src, dst := uint16(ctaIPv4Src), uint16(ctaIPv4Dst)
	flags := uint32(filterProtoDport | filterAddrs)
	if !k.from.Is4() {
		src, dst = ctaIPv6Src, ctaIPv6Dst
		flags = filterProtoDport
	}
	return []netfilter.Attribute{
		{Type: ctaTupleOrig, Nested: true, Children: []netfilter.Attribute{
			{Type: ctaTupleIP, Nested: true, Children: []netfilter.Attribute{
				{Type: src, Data: k.from.AsSlice()},
				{Type: dst, Data: k.to.Addr().AsSlice()},
			}},
			{Type: ctaTupleProto, Nested: true, Children: []netfilter.Attribute{
				{Type: ctaProtoNum, Data: []byte{syscall.IPPROTO_TCP}},
				{Type: ctaProtoDstPort, Data: binary.BigEndian.AppendUint16(nil, k.to.Port())},
			}},
		}},
		// The flags are a host-order u32 (NLA_U32), unlike the rest.
		{Type: ctaFilter, Nested: true, Children: []netfilter.Attribute{
			{Type: ctaFilterOrigFlag, Data: binary.NativeEndian.AppendUint32(nil, flags)},
		}},
	}
}

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
	nc, ok := flowConn(ev.Flow)
	return nc, ok, nil
}

// flowConn returns f as a newConn, and false if f is not a TCP connection
// between valid addresses.
func flowConn(f *conntrack.Flow) (newConn, bool) {
	k, ok := flowKey(f)
	if !ok {
		return newConn{}, false
	}
	r := f.TupleReply
	nc := newConn{
		key:   k,
		sport: f.TupleOrig.Proto.SourcePort,
		reply: unmapAddrPort(netip.AddrPortFrom(r.IP.SourceAddress, r.Proto.SourcePort)),
	}
	if f.CountersOrig.Packets > 0 || f.CountersReply.Packets > 0 {
		nc.counters = &Counters{OrigBytes: f.CountersOrig.Bytes, OrigPackets: f.CountersOrig.Packets,
			ReplyBytes: f.CountersReply.Bytes, ReplyPackets: f.CountersReply.Packets}
	}
	return nc, true
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
