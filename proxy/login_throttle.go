package proxy

import (
	"net/netip"
	"sync"
	"time"
)

// LoginThrottle refuses new sessions from a client that failed to log in
// too often (password guessing): after failures failed logins (530 to USER
// or PASS) within window, the client's sessions are refused with 421 for
// ban. Clients are counted as the session limits count them (ClientKey:
// an IPv4 address or an IPv6 prefix). Share one among the listeners of a
// process. Its memory is bounded: it tracks at most maxTrackedClients
// clients, and beyond that forgets the oldest.
type LoginThrottle struct {
	mu          sync.Mutex
	failures    int // 0: off
	window, ban time.Duration
	clients     map[netip.Prefix]*loginRecord
}

// NewLoginThrottle returns a throttle with these limits (failures 0: off).
func NewLoginThrottle(failures int, window, ban time.Duration) *LoginThrottle {
	lt := new(LoginThrottle)
	lt.SetLimits(failures, window, ban)
	return lt
}

// SetLimits changes the limits (a reload); what was counted stays.
func (lt *LoginThrottle) SetLimits(failures int, window, ban time.Duration) {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	lt.failures, lt.window, lt.ban = failures, window, ban
}

// limits returns the limits, for the log.
func (lt *LoginThrottle) limits() (failures int, window, ban time.Duration) {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	return lt.failures, lt.window, lt.ban
}

// maxTrackedClients bounds a LoginThrottle's memory (about 100 bytes
// each).
const maxTrackedClients = 100_000

type loginRecord struct {
	failures    []time.Time // within the window, oldest first
	bannedUntil time.Time
	last        time.Time
}

// Banned reports whether client is banned at now, and until when.
func (lt *LoginThrottle) Banned(client netip.Prefix, now time.Time) (bool, time.Time) {
	if lt == nil {
		return false, time.Time{}
	}
	lt.mu.Lock()
	defer lt.mu.Unlock()
	r := lt.clients[client]
	if r == nil || !now.Before(r.bannedUntil) {
		return false, time.Time{}
	}
	return true, r.bannedUntil
}

// Failed records a failed login of client at now, and reports whether it
// is banned from now on.
func (lt *LoginThrottle) Failed(client netip.Prefix, now time.Time) bool {
	if lt == nil {
		return false
	}
	lt.mu.Lock()
	defer lt.mu.Unlock()
	if lt.failures <= 0 {
		return false
	}
	if lt.clients == nil {
		lt.clients = make(map[netip.Prefix]*loginRecord)
	}
	r := lt.clients[client]
	if r == nil {
		lt.makeRoomLocked(now)
		r = &loginRecord{}
		lt.clients[client] = r
	}
	r.last = now
	keep := r.failures[:0]
	for _, t := range r.failures {
		if now.Sub(t) < lt.window {
			keep = append(keep, t)
		}
	}
	r.failures = append(keep, now)
	if len(r.failures) >= lt.failures {
		r.failures = r.failures[:0]
		r.bannedUntil = now.Add(lt.ban)
		return true
	}
	return false
}

// makeRoomLocked forgets the clients with nothing left to remember, and if
// that is not enough, the one seen longest ago.
func (lt *LoginThrottle) makeRoomLocked(now time.Time) {
	if len(lt.clients) < maxTrackedClients {
		return
	}
	var oldest netip.Prefix
	var oldestAt time.Time
	for k, r := range lt.clients {
		if !now.Before(r.bannedUntil) && (len(r.failures) == 0 || now.Sub(r.failures[len(r.failures)-1]) >= lt.window) {
			delete(lt.clients, k)
			continue
		}
		if oldestAt.IsZero() || r.last.Before(oldestAt) {
			oldest, oldestAt = k, r.last
		}
	}
	if len(lt.clients) >= maxTrackedClients {
		delete(lt.clients, oldest)
	}
}
