package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
)

// Admission errors: a new control connection was refused because a limit is
// reached. The session answers the client with 421 and closes.
var (
	ErrTooManySessions   = errors.New("session limit reached")
	ErrTooManyFromClient = errors.New("per-client session limit reached")
)

// DefaultClientIPv6Prefix is the prefix length by which IPv6 clients are
// counted as one: a /64 is what one site or one host gets (RFC 6177), and
// any of its 2^64 addresses is the host's for the asking.
const DefaultClientIPv6Prefix = 64

// ClientKey is what counts as one client for the per-client limits: an
// IPv4 address, or the IPv6 prefix of length ipv6Prefix holding the address
// (DefaultClientIPv6Prefix if ipv6Prefix is not 1..128).
func ClientKey(a netip.Addr, ipv6Prefix int) netip.Prefix {
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	if ipv6Prefix < 1 || ipv6Prefix > 128 {
		ipv6Prefix = DefaultClientIPv6Prefix
	}
	return netip.PrefixFrom(a, ipv6Prefix).Masked()
}

// SessionLimiter admits control connections up to a total and a per-client
// limit, and numbers the sessions it admits. One SessionLimiter is shared by
// every listener of a process, so the limits are process-wide. It is safe for
// concurrent use. A client is an IPv4 address or an IPv6 prefix (ClientKey).
type SessionLimiter struct {
	max, perClient int
	ipv6Prefix     int

	mu       sync.Mutex
	total    int
	byClient map[netip.Prefix]int
	nextID   uint64
}

// NewSessionLimiter returns a limiter for at most max sessions in all and
// perClient sessions from one client. A value <= 0 means no limit. IPv6
// clients are counted by their /64 until SetIPv6Prefix says otherwise.
func NewSessionLimiter(max, perClient int) *SessionLimiter {
	return &SessionLimiter{max: max, perClient: perClient, ipv6Prefix: DefaultClientIPv6Prefix,
		byClient: make(map[netip.Prefix]int)}
}

// SetLimits changes the limits for sessions admitted from now on (a
// configuration reload); sessions already admitted stay.
func (l *SessionLimiter) SetLimits(max, perClient int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.max, l.perClient = max, perClient
}

// SetIPv6Prefix sets the prefix length by which IPv6 clients are counted,
// for sessions admitted from now on.
func (l *SessionLimiter) SetIPv6Prefix(bits int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ipv6Prefix = bits
}

// IPv6Prefix returns the prefix length by which IPv6 clients are counted.
func (l *SessionLimiter) IPv6Prefix() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ipv6Prefix
}

// Acquire admits one session from client. On success it returns the session's
// ID and a release func that must be called exactly once when the session
// ends.
func (l *SessionLimiter) Acquire(addr netip.Addr) (id uint64, release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	client := ClientKey(addr, l.ipv6Prefix)
	if l.max > 0 && l.total >= l.max {
		return 0, nil, fmt.Errorf("admitting %s (%d of %d): %w", client, l.total, l.max, ErrTooManySessions)
	}
	if l.perClient > 0 && l.byClient[client] >= l.perClient {
		return 0, nil, fmt.Errorf("admitting %s (%d of %d from it): %w", client, l.byClient[client], l.perClient, ErrTooManyFromClient)
	}
	l.total++
	l.byClient[client]++
	l.nextID++
	id = l.nextID
	var once sync.Once
	return id, func() { once.Do(func() { l.release(client) }) }, nil
}

func (l *SessionLimiter) release(client netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if n := l.byClient[client] - 1; n > 0 {
		l.byClient[client] = n
	} else {
		delete(l.byClient, client)
	}
}

// Active reports the number of sessions admitted and not yet released.
func (l *SessionLimiter) Active() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}
