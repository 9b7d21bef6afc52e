package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"
)

// UpstreamPolicy is the order in which a reverse listener with several
// upstreams tries them.
type UpstreamPolicy int

const (
	// UpstreamsInOrder tries them in the order given: the first is the
	// primary, the others stand in while it fails.
	UpstreamsInOrder UpstreamPolicy = iota
	// UpstreamsRoundRobin starts each session at the next one.
	UpstreamsRoundRobin
)

// DefaultUpstreamHoldDown is how long an upstream that could not be
// reached is tried only after the others.
const DefaultUpstreamHoldDown = 30 * time.Second

// upstreamState is what a Server remembers of its upstreams: where round
// robin goes next, and when each last failed.
type upstreamState struct {
	mu     sync.Mutex
	next   int
	failed map[string]time.Time
}

// upstreamOrder is the order in which a new session tries the upstreams:
// by the policy, with those that failed within the hold-down moved to the
// end (tried last rather than never: if all are down, the first to come
// back is found).
func (s *Server) upstreamOrder(now time.Time) []string {
	all := s.Upstreams
	if len(all) == 0 {
		all = []string{s.Upstream}
	}
	u := &s.upstreamState
	u.mu.Lock()
	defer u.mu.Unlock()
	start := 0
	if s.UpstreamPolicy == UpstreamsRoundRobin {
		start = u.next % len(all)
		u.next++
	}
	order := make([]string, 0, len(all))
	var held []string
	for i := range all {
		a := all[(start+i)%len(all)]
		if t, ok := u.failed[a]; ok && now.Sub(t) < s.upstreamHoldDown() {
			held = append(held, a)
			continue
		}
		order = append(order, a)
	}
	return append(order, held...)
}

// upstreamResult records whether addr could be reached.
func (s *Server) upstreamResult(addr string, err error, now time.Time) {
	u := &s.upstreamState
	u.mu.Lock()
	defer u.mu.Unlock()
	if err == nil {
		delete(u.failed, addr)
		return
	}
	if u.failed == nil {
		u.failed = make(map[string]time.Time)
	}
	u.failed[addr] = now
}

func (s *Server) upstreamHoldDown() time.Duration {
	return cmp0(s.UpstreamHoldDown, DefaultUpstreamHoldDown)
}

// dialUpstream connects the session to one of targets, in order, each
// within DataTimeout. Each failure is counted and logged, and marks a
// reverse listener's upstream as failed for the hold-down.
func (ss *session) dialUpstream(targets []string, reverse bool) (net.Conn, error) {
	var errs []error
	for _, target := range targets {
		dialCtx, cancel := context.WithTimeout(ss.ctx, ss.srv.dataTimeout())
		up, err := ss.srv.dial(dialCtx, "tcp", target)
		cancel()
		if reverse {
			ss.srv.upstreamResult(target, err, time.Now())
		}
		if err == nil {
			return up, nil
		}
		if ss.ctx.Err() != nil {
			return nil, context.Cause(ss.ctx)
		}
		ss.srv.Metrics.upstreamFailure(ss.srv.Name)
		ss.log.Warn("FTP server unreachable", "server", target, "err", err)
		errs = append(errs, fmt.Errorf("dialing server %s: %w", target, err))
	}
	return nil, errors.Join(errs...)
}

// sendProxyHeader writes the PROXY protocol header (UpstreamProxyProtocol's
// version) on the new connection to the server: the client's address and
// the one it connected to, so that the server logs and limits by the
// client rather than by ftpgate.
func (ss *session) sendProxyHeader(up net.Conn) error {
	dst := ss.clientDst
	if ss.srv.transparent() {
		dst = ss.origDst
	}
	h := proxyproto.HeaderProxyFromAddrs(byte(ss.srv.UpstreamProxyProtocol),
		net.TCPAddrFromAddrPort(unmapPort(ss.clientPeer)), net.TCPAddrFromAddrPort(unmapPort(dst)))
	up.SetWriteDeadline(time.Now().Add(ss.srv.dataTimeout()))
	defer up.SetWriteDeadline(time.Time{})
	if _, err := h.WriteTo(up); err != nil {
		return fmt.Errorf("sending the PROXY protocol header to the server: %w", err)
	}
	return nil
}

// reverseTargets reports whether the session dials the listener's own
// upstreams (reverse mode), and in which order.
func (ss *session) reverseTargets() ([]string, bool) {
	if ss.srv.Forward || ss.srv.transparent() {
		return nil, false
	}
	return slices.Clip(ss.srv.upstreamOrder(time.Now())), true
}

// unmapPort is ap with an IPv4-mapped address as plain IPv4.
func unmapPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
