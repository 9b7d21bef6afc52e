package nat

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"sync"
)

// PortRange is an inclusive range of TCP ports. A valid range has
// 1 <= First <= Last; the zero PortRange is empty.
type PortRange struct{ First, Last uint16 }

// ParsePortRange parses "40000-40999" or a single port "40000" (a range of
// one), ignoring surrounding white space. Ports are decimal, 1..65535, and
// First must not be above Last. Errors are *ParseError with What
// "port range", wrapping ErrSyntax or ErrRange.
func ParsePortRange(s string) (PortRange, error) {
	r, detail, err := parsePortRange(strings.Trim(s, cutset))
	if err != nil {
		return PortRange{}, &ParseError{What: "port range", Input: s, Detail: detail, Err: err}
	}
	return r, nil
}

func parsePortRange(s string) (PortRange, string, error) {
	firstText, lastText, isRange := strings.Cut(s, "-")
	first, detail, err := parsePort(firstText, "first port")
	if err != nil {
		return PortRange{}, detail, err
	}
	if !isRange {
		return PortRange{first, first}, "", nil
	}
	last, detail, err := parsePort(lastText, "last port")
	if err != nil {
		return PortRange{}, detail, err
	}
	if first > last {
		return PortRange{}, "first port " + firstText + " above last port " + lastText, ErrRange
	}
	return PortRange{first, last}, "", nil
}

// String returns the range as "First-Last", e.g. "40000-40999", which
// ParsePortRange accepts.
func (r PortRange) String() string {
	return strconv.Itoa(int(r.First)) + "-" + strconv.Itoa(int(r.Last))
}

// Len returns the number of ports in the range, 0 if it is not valid.
func (r PortRange) Len() int {
	if r.First == 0 || r.First > r.Last {
		return 0
	}
	return int(r.Last-r.First) + 1
}

// Contains reports whether p is in the range. An invalid range contains no
// port.
func (r PortRange) Contains(p uint16) bool {
	return r.First != 0 && r.First <= p && p <= r.Last
}

// PortAllocator records which ports are held, per address, by every
// PortPool built on it. A process shares one among all its listeners and
// all their configuration generations, so that a port of an address is
// held by one data connection at a time, however the listeners' ranges
// overlap and across reloads: two pinholes with the same match and
// different targets would send one session's data to another's peer
// (docs/security.md, "Cross-session data"). Safe for concurrent use.
type PortAllocator struct {
	mu   sync.Mutex
	held map[netip.Addr]map[uint16]struct{}
	// rested are the ports released last, oldest first, at most
	// restingPorts: take hands them out again only when no other port is
	// free, so that a late or stray connection meant for an earlier
	// transfer does not land on the next one's port.
	rested    []netip.AddrPort
	restedSet map[netip.AddrPort]int // how many times each is in rested
}

// restingPorts is how many released ports rest before they are handed out
// again, unless nothing else is free.
const restingPorts = 256

// NewPortAllocator returns an allocator with no port held.
func NewPortAllocator() *PortAllocator {
	return &PortAllocator{held: map[netip.Addr]map[uint16]struct{}{}, restedSet: map[netip.AddrPort]int{}}
}

// take holds a free port of r for addr, picked at random among those not
// released lately if there are any, and reports false if every port of r
// is held for addr.
func (a *PortAllocator) take(addr netip.Addr, r PortRange) (uint16, bool) {
	n := r.Len()
	if n == 0 {
		return 0, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	held := a.held[addr]
	if held == nil {
		held = map[uint16]struct{}{}
		a.held[addr] = held
	}
	start := rand.IntN(n)
	for k := range n {
		port := r.First + uint16((start+k)%n)
		if _, ok := held[port]; ok || a.restedSet[netip.AddrPortFrom(addr, port)] > 0 {
			continue
		}
		held[port] = struct{}{}
		return port, true
	}
	// Only resting ports are free, if any: the one that rested longest.
	for _, ap := range a.rested {
		if _, ok := held[ap.Port()]; ok || ap.Addr() != addr || !r.Contains(ap.Port()) {
			continue
		}
		held[ap.Port()] = struct{}{}
		return ap.Port(), true
	}
	return 0, false
}

// release frees port of addr; it rests for a while.
func (a *PortAllocator) release(addr netip.Addr, port uint16) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if held := a.held[addr]; held != nil {
		delete(held, port)
		if len(held) == 0 {
			delete(a.held, addr)
		}
	}
	if len(a.rested) == restingPorts {
		oldest := a.rested[0]
		if a.restedSet[oldest]--; a.restedSet[oldest] == 0 {
			delete(a.restedSet, oldest)
		}
		a.rested = append(a.rested[:0], a.rested[1:]...)
	}
	ap := netip.AddrPortFrom(addr, port)
	a.rested = append(a.rested, ap)
	a.restedSet[ap]++
}

// Held returns the number of ports held for every address together.
func (a *PortAllocator) Held() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, held := range a.held {
		n += len(held)
	}
	return n
}

// PortPool hands out ports of a PortRange for any address: never a port
// that this pool or another pool of its PortAllocator holds for that
// address. It is safe for concurrent use. The zero PortPool, and a pool
// made from an invalid range, are empty: Take always fails.
//
// Take picks a free port at random, among those not released lately when
// there are any: a late or stray data connection meant for an earlier
// transfer does not land on the next transfer's port, and no one can tell
// the next port from the last.
type PortPool struct {
	r     PortRange
	alloc *PortAllocator

	mu       sync.Mutex
	mine     map[netip.AddrPort]netip.Prefix // what this pool holds, for whom
	byOwner  map[netip.Prefix]int
	ownerMax int // the most ports one owner may hold; 0: no limit
}

// NewPortPool returns a pool of r with an allocator of its own.
func NewPortPool(r PortRange) *PortPool {
	return NewSharedPortPool(r, NewPortAllocator())
}

// NewSharedPortPool returns a pool of r on the allocator a, which it shares
// with every other pool on a.
func NewSharedPortPool(r PortRange, a *PortAllocator) *PortPool {
	return &PortPool{r: r, alloc: a, mine: map[netip.AddrPort]netip.Prefix{}, byOwner: map[netip.Prefix]int{}}
}

// SetOwnerShare limits the ports one owner may hold at once to percent of
// the range, at least one: so that one client cannot take the whole pool.
// 0 (or 100 and above) lifts the limit.
func (p *PortPool) SetOwnerShare(percent int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ownerMax = 0
	if percent > 0 && percent < 100 {
		p.ownerMax = max(1, p.r.Len()*percent/100)
	}
}

// Take holds a free port for addr (unmapped, without zone), on behalf of
// owner (a client; the invalid Prefix for none, which is not limited).
// When every port of the range is held for addr it returns an error
// wrapping ErrPoolExhausted; when owner holds its share (SetOwnerShare),
// one wrapping ErrOwnerShare.
func (p *PortPool) Take(addr netip.Addr, owner netip.Prefix) (uint16, error) {
	addr = addr.Unmap().WithZone("")
	p.mu.Lock()
	defer p.mu.Unlock()
	if owner.IsValid() && p.ownerMax > 0 && p.byOwner[owner] >= p.ownerMax {
		return 0, fmt.Errorf("taking a port of %s from range %s for %s (%d held): %w", addr, p.r, owner, p.byOwner[owner], ErrOwnerShare)
	}
	if p.alloc != nil {
		if port, ok := p.alloc.take(addr, p.r); ok {
			p.mine[netip.AddrPortFrom(addr, port)] = owner
			if owner.IsValid() {
				p.byOwner[owner]++
			}
			return port, nil
		}
	}
	return 0, fmt.Errorf("taking a port of %s from range %s: %w", addr, p.r, ErrPoolExhausted)
}

// Release frees a port that Take handed out for addr. Releasing a port this
// pool does not hold does nothing.
func (p *PortPool) Release(addr netip.Addr, port uint16) {
	ap := netip.AddrPortFrom(addr.Unmap().WithZone(""), port)
	p.mu.Lock()
	owner, ok := p.mine[ap]
	delete(p.mine, ap)
	if ok && owner.IsValid() {
		if p.byOwner[owner]--; p.byOwner[owner] <= 0 {
			delete(p.byOwner, owner)
		}
	}
	p.mu.Unlock()
	if ok {
		p.alloc.release(ap.Addr(), port)
	}
}

// InUse returns the number of ports this pool holds.
func (p *PortPool) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.mine)
}

// Range returns the range the pool hands out ports from.
func (p *PortPool) Range() PortRange { return p.r }
