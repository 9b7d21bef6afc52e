package nat

import (
	"fmt"
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

// PortPool hands out ports from a PortRange, never the same port twice until
// it is released. It is safe for concurrent use. The zero PortPool, and a
// pool made from an invalid range, are empty: Take always fails.
//
// Take hands out ports round robin: it resumes after the port it last handed
// out, so a released port comes back only after the rest of the range has
// been tried. That keeps a late or stray data connection meant for an
// earlier transfer from landing on a new transfer's port.
type PortPool struct {
	mu    sync.Mutex
	r     PortRange
	n     int      // r.Len()
	taken []uint64 // bit i set: port r.First+i is handed out
	inUse int
	next  int // index at which Take starts looking
}

// NewPortPool returns a pool with every port of r free.
func NewPortPool(r PortRange) *PortPool {
	n := r.Len()
	return &PortPool{r: r, n: n, taken: make([]uint64, (n+63)/64)}
}

// Take hands out a free port. When every port is handed out it returns an
// error wrapping ErrPoolExhausted.
func (p *PortPool) Take() (uint16, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inUse < p.n {
		for k := range p.n {
			i := (p.next + k) % p.n
			w, bit := i/64, uint64(1)<<(i%64)
			if p.taken[w]&bit != 0 {
				continue
			}
			p.taken[w] |= bit
			p.inUse++
			p.next = (i + 1) % p.n
			return p.r.First + uint16(i), nil
		}
	}
	return 0, fmt.Errorf("taking a port from range %s: %w", p.r, ErrPoolExhausted)
}

// Release returns port to the pool. Releasing a port outside the range, or
// one that is not handed out, does nothing.
func (p *PortPool) Release(port uint16) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.r.Contains(port) || p.n == 0 {
		return
	}
	i := int(port - p.r.First)
	w, bit := i/64, uint64(1)<<(i%64)
	if p.taken[w]&bit == 0 {
		return
	}
	p.taken[w] &^= bit
	p.inUse--
}

// InUse returns the number of ports handed out and not yet released.
func (p *PortPool) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inUse
}

// Range returns the range the pool hands out ports from.
func (p *PortPool) Range() PortRange {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.r
}
