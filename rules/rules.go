// Package rules is the only part of ftpgate that touches the kernel's
// firewall. It installs pinholes: exact, short-lived rules that admit one TCP
// data connection negotiated on an FTP control channel, from one peer, to one
// address and port, and deliver it where the session wants it (accepted as
// is, redirected to a local listener, or DNATed elsewhere).
//
// The proxy sees only the Pinholer interface. IPTables keeps ftpgate's
// rules in its own chains through the iptables and ip6tables binaries;
// Netlink makes pinholes ipset and nftables map elements matched from
// those chains; NftablesBackend, for hosts whose firewall is native
// nftables, keeps its sets in the operator's own table; None is for
// deployments where ftpgate manages no firewall at all.
package rules

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Errors that callers branch on with errors.Is. Every error returned by this
// package wraps one of these or a lower-level error, with context.
var (
	// ErrInvalid means a Pinhole failed Validate.
	ErrInvalid = errors.New("invalid pinhole")
	// ErrNotExist means the firewall reported that a rule or chain does
	// not exist.
	ErrNotExist = errors.New("rule or chain does not exist")
	// ErrFamily means the backend cannot install rules for the pinhole's
	// address family, e.g. an IPv6 pinhole where no ip6tables was found.
	ErrFamily = errors.New("address family not available")
	// ErrConflict means that another open pinhole diverts the same
	// connections (same source, same destination) elsewhere: installing
	// this one would send one session's data to another's peer, or let the
	// older rule win silently. Nothing is installed.
	ErrConflict = errors.New("another pinhole diverts the same connections elsewhere")
)

// Delivery says where a connection admitted by a pinhole goes.
type Delivery int

const (
	// AcceptLocal delivers to a local listener: filter INPUT accept (relay
	// path).
	AcceptLocal Delivery = iota
	// AcceptForward routes the connection through the gateway unchanged:
	// filter FORWARD accept.
	AcceptForward
	// Redirect is nat PREROUTING REDIRECT to the local port RedirectPort,
	// plus filter INPUT accept of the redirected connection (transparent
	// relay).
	Redirect
	// DNAT is nat PREROUTING DNAT to DNATTo, plus filter FORWARD accept,
	// plus, if SNATTo is valid, nat POSTROUTING SNAT to SNATTo (kernel
	// path).
	DNAT
)

// String returns the name of d as used in logs: "accept-local",
// "accept-forward", "redirect" or "dnat".
func (d Delivery) String() string {
	switch d {
	case AcceptLocal:
		return "accept-local"
	case AcceptForward:
		return "accept-forward"
	case Redirect:
		return "redirect"
	case DNAT:
		return "dnat"
	}
	return fmt.Sprintf("Delivery(%d)", int(d))
}

// Pinhole admits a single TCP data connection negotiated on an FTP control
// channel. It is a plain value; the zero Pinhole is invalid.
//
// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d, as a dual-stack socket
// reports an IPv4 peer) are treated as the IPv4 addresses they carry.
// Addresses with a zone are invalid: a firewall rule cannot express one.
type Pinhole struct {
	// Session is the owning session, written into the rule comment.
	Session uint64
	// Seq is the pinhole's number within the session, written into the
	// comment. It must not be negative.
	Seq int
	// From is the only source address admitted.
	From netip.Addr
	// To is the destination address and port as the packet arrives.
	To netip.AddrPort
	// Deliver says where the admitted connection goes.
	Deliver Delivery
	// RedirectPort is the local port for Redirect; it must be zero
	// otherwise.
	RedirectPort uint16
	// DNATTo is the new destination for DNAT; it must be the zero value
	// otherwise.
	DNATTo netip.AddrPort
	// SNATTo, if valid, makes a DNAT pinhole also rewrite the source to
	// this address; it must be the zero value for other deliveries.
	SNATTo netip.Addr
	// TTL bounds the pinhole's life: the backend removes it at the latest
	// this long after Open. Zero means the backend's default; negative is
	// invalid.
	TTL time.Duration
}

// String describes p for logs, e.g.
// "s=12 p=3 198.19.0.2 -> 198.19.0.1:40001 accept-local" or
// "s=12 p=4 198.19.0.2 -> 198.19.0.1:40002 dnat 198.18.0.5:30000 snat 198.18.0.1".
func (p Pinhole) String() string {
	s := fmt.Sprintf("s=%d p=%d %s -> %s %s", p.Session, p.Seq, p.From, p.To, p.Deliver)
	switch p.Deliver {
	case Redirect:
		s += fmt.Sprintf(" :%d", p.RedirectPort)
	case DNAT:
		s += " " + p.DNATTo.String()
		if p.SNATTo.IsValid() {
			s += " snat " + p.SNATTo.String()
		}
	}
	return s
}

// Validate reports whether p can be installed: From and To are valid,
// specified, unzoned addresses of one family, shared by DNATTo and SNATTo
// where present; every port is non-zero; the fields that Deliver requires
// are present and the others are zero; TTL and Seq are not negative. The
// error wraps ErrInvalid.
func (p Pinhole) Validate() error {
	p = p.normalize()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	if err := checkAddr("From", p.From); err != nil {
		return bad("%s", err)
	}
	if err := checkAddr("To", p.To.Addr()); err != nil {
		return bad("%s", err)
	}
	if p.To.Port() == 0 {
		return bad("To %s has port 0", p.To)
	}
	is4 := p.From.Is4()
	if p.To.Addr().Is4() != is4 {
		return bad("From %s and To %s are of different address families", p.From, p.To.Addr())
	}
	if p.Seq < 0 {
		return bad("Seq %d is negative", p.Seq)
	}
	if p.TTL < 0 {
		return bad("TTL %s is negative", p.TTL)
	}
	if p.Deliver != Redirect && p.RedirectPort != 0 {
		return bad("RedirectPort %d set for delivery %s", p.RedirectPort, p.Deliver)
	}
	if p.Deliver != DNAT && (p.DNATTo != netip.AddrPort{} || p.SNATTo.IsValid()) {
		return bad("DNATTo or SNATTo set for delivery %s", p.Deliver)
	}
	switch p.Deliver {
	case AcceptLocal, AcceptForward:
	case Redirect:
		if p.RedirectPort == 0 {
			return bad("redirect without RedirectPort")
		}
	case DNAT:
		if err := checkAddr("DNATTo", p.DNATTo.Addr()); err != nil {
			return bad("%s", err)
		}
		if p.DNATTo.Port() == 0 {
			return bad("DNATTo %s has port 0", p.DNATTo)
		}
		if p.DNATTo.Addr().Is4() != is4 {
			return bad("DNATTo %s is not of the family of From %s", p.DNATTo.Addr(), p.From)
		}
		if p.SNATTo.IsValid() {
			if err := checkAddr("SNATTo", p.SNATTo); err != nil {
				return bad("%s", err)
			}
			if p.SNATTo.Is4() != is4 {
				return bad("SNATTo %s is not of the family of From %s", p.SNATTo, p.From)
			}
		}
	default:
		return bad("unknown delivery %s", p.Deliver)
	}
	return nil
}

// checkAddr reports why a (normalized) address cannot appear in a rule.
func checkAddr(field string, a netip.Addr) error {
	switch {
	case !a.IsValid():
		return fmt.Errorf("%s is not a valid address", field)
	case a.Zone() != "":
		return fmt.Errorf("%s %s has a zone", field, a)
	case a.IsUnspecified():
		return fmt.Errorf("%s %s is unspecified", field, a)
	}
	return nil
}

// normalize returns p with IPv4-mapped IPv6 addresses unmapped.
func (p Pinhole) normalize() Pinhole {
	p.From = p.From.Unmap()
	if p.To.Addr().Is4In6() {
		p.To = netip.AddrPortFrom(p.To.Addr().Unmap(), p.To.Port())
	}
	if p.DNATTo.Addr().Is4In6() {
		p.DNATTo = netip.AddrPortFrom(p.DNATTo.Addr().Unmap(), p.DNATTo.Port())
	}
	p.SNATTo = p.SNATTo.Unmap()
	return p
}

// conflicts reports whether a and b (normalized) divert the same
// connections, from the same source to the same destination address and
// port, to different places: a NAT rule matches on source and
// destination, so only one of them can hold.
func conflicts(a, b Pinhole) bool {
	diverts := func(p Pinhole) bool { return p.Deliver == DNAT || p.Deliver == Redirect }
	if !diverts(a) || !diverts(b) || a.From != b.From || a.To != b.To {
		return false
	}
	return a.Deliver != b.Deliver || a.DNATTo != b.DNATTo || a.SNATTo != b.SNATTo || a.RedirectPort != b.RedirectPort
}

// Pinholer installs pinholes. Implementations are safe for concurrent use.
type Pinholer interface {
	// Open installs p and returns a func that removes it. The func is
	// idempotent, safe to call concurrently with the backend's TTL reaper,
	// and returns nil if the pinhole is already gone. Open returns an
	// error (and installs nothing) if p is invalid or the firewall
	// refuses.
	Open(ctx context.Context, p Pinhole) (close func(context.Context) error, err error)
}

// None manages no firewall: for a Kubernetes sidecar without NET_ADMIN, or an
// operator who opens the data ports statically. Open validates the pinhole
// and returns a close func that does nothing. The zero value is ready to use
// and safe for concurrent use.
type None struct{}

var _ Pinholer = None{}

// Open returns an error wrapping ErrInvalid if p is invalid, and otherwise a
// no-op close func. It installs nothing and ignores ctx.
func (None) Open(_ context.Context, p Pinhole) (func(context.Context) error, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("opening pinhole %s: %w", p, err)
	}
	return func(context.Context) error { return nil }, nil
}
