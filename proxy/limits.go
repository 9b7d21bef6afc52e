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

// SessionLimiter admits control connections up to a total and a per-client
// limit, and numbers the sessions it admits. One SessionLimiter is shared by
// every listener of a process, so the limits are process-wide. It is safe for
// concurrent use.
type SessionLimiter struct {
	max, perClient int

	mu       sync.Mutex
	total    int
	byClient map[netip.Addr]int
	nextID   uint64
}

// NewSessionLimiter returns a limiter for at most max sessions in all and
// perClient sessions from one client address. A value <= 0 means no limit.
func NewSessionLimiter(max, perClient int) *SessionLimiter {
	return &SessionLimiter{max: max, perClient: perClient, byClient: make(map[netip.Addr]int)}
}

// SetLimits changes the limits for sessions admitted from now on (a
// configuration reload); sessions already admitted stay.
func (l *SessionLimiter) SetLimits(max, perClient int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.max, l.perClient = max, perClient
}

// Acquire admits one session from client. On success it returns the session's
// ID and a release func that must be called exactly once when the session
// ends.
func (l *SessionLimiter) Acquire(client netip.Addr) (id uint64, release func(), err error) {
	client = client.Unmap()
	l.mu.Lock()
	defer l.mu.Unlock()
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

func (l *SessionLimiter) release(client netip.Addr) {
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
