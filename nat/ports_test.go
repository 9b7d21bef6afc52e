package nat

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
)

// portRangeTests also seed FuzzParsePortRange.
var portRangeTests = []struct {
	in   string
	want PortRange
	err  error
}{
	{"40000-40999", PortRange{40000, 40999}, nil},
	{"40000", PortRange{40000, 40000}, nil},
	{" 40000-40999\n", PortRange{40000, 40999}, nil},
	{"1-65535", PortRange{1, 65535}, nil},
	{"040000-040001", PortRange{40000, 40001}, nil},
	{"0", PortRange{}, ErrRange},
	{"0-10", PortRange{}, ErrRange},
	{"10-0", PortRange{}, ErrRange},
	{"65536", PortRange{}, ErrRange},
	{"40999-40000", PortRange{}, ErrRange},
	{"", PortRange{}, ErrSyntax},
	{"-", PortRange{}, ErrSyntax},
	{"40000-", PortRange{}, ErrSyntax},
	{"-40000", PortRange{}, ErrSyntax},
	{"1-2-3", PortRange{}, ErrSyntax},
	{"+1", PortRange{}, ErrSyntax},
	{"40000 - 40999", PortRange{}, ErrSyntax},
	{"a-b", PortRange{}, ErrSyntax},
}

func TestParsePortRange(t *testing.T) {
	for _, tt := range portRangeTests {
		got, err := ParsePortRange(tt.in)
		if tt.err != nil {
			var pe *ParseError
			if !errors.Is(err, tt.err) || !errors.As(err, &pe) || pe.What != "port range" {
				t.Errorf("ParsePortRange(%q) error = %v, want %v in a port range *ParseError", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParsePortRange(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			continue
		}
		if again, err := ParsePortRange(got.String()); err != nil || again != got {
			t.Errorf("ParsePortRange(%q) = %v, %v; want %v", got.String(), again, err, got)
		}
	}
}

func TestPortRange(t *testing.T) {
	r := PortRange{40000, 40999}
	if got := r.String(); got != "40000-40999" {
		t.Errorf("String() = %q", got)
	}
	if got := r.Len(); got != 1000 {
		t.Errorf("Len() = %d, want 1000", got)
	}
	for p, want := range map[uint16]bool{0: false, 39999: false, 40000: true, 40500: true, 40999: true, 41000: false} {
		if got := r.Contains(p); got != want {
			t.Errorf("Contains(%d) = %v, want %v", p, got, want)
		}
	}
	for _, r := range []PortRange{{}, {0, 10}, {10, 9}} {
		if r.Len() != 0 || r.Contains(0) || r.Contains(10) {
			t.Errorf("invalid range %v: Len() = %d, Contains not false", r, r.Len())
		}
	}
	if got := (PortRange{1, 65535}).Len(); got != 65535 {
		t.Errorf("full range Len() = %d", got)
	}
}

var (
	noOwner netip.Prefix
	gwIn    = netip.MustParseAddr("198.18.1.1")
	gwOut   = netip.MustParseAddr("198.19.0.1")
)

func TestPortPoolTakeAll(t *testing.T) {
	r := PortRange{40000, 40009}
	p := NewPortPool(r)
	if p.Range() != r {
		t.Fatalf("Range() = %v, want %v", p.Range(), r)
	}
	seen := map[uint16]bool{}
	for range r.Len() {
		port, err := p.Take(gwIn, noOwner)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Contains(port) || seen[port] {
			t.Fatalf("Take() = %d: outside %v or handed out twice", port, r)
		}
		seen[port] = true
	}
	if p.InUse() != r.Len() {
		t.Fatalf("InUse() = %d, want %d", p.InUse(), r.Len())
	}
	_, err := p.Take(gwIn, noOwner)
	if !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("Take() on a full pool: %v, want ErrPoolExhausted", err)
	}
	if want := "taking a port of 198.18.1.1 from range 40000-40009: port pool exhausted"; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
	// Another address has its own ports.
	other, err := p.Take(gwOut, noOwner)
	if err != nil {
		t.Errorf("Take(another address) = %v", err)
	}
	p.Release(gwOut, other)

	p.Release(gwIn, 40004)
	p.Release(gwIn, 40004)  // not held: no-op
	p.Release(gwIn, 39999)  // outside: no-op
	p.Release(gwOut, 40005) // held for another address: no-op
	p.Release(gwIn, 0)
	if p.InUse() != r.Len()-1 {
		t.Fatalf("InUse() after one release = %d, want %d", p.InUse(), r.Len()-1)
	}
	if port, err := p.Take(netip.AddrFrom16(gwIn.As16()), noOwner); err != nil || port != 40004 {
		t.Fatalf("Take(IPv4-mapped) after release = %d, %v; want 40004", port, err)
	}
}

// TestPortPoolShared: pools on one allocator (the listeners of a process
// and of every configuration generation) never hold the same port of the
// same address at once, however their ranges overlap.
func TestPortPoolShared(t *testing.T) {
	a := NewPortAllocator()
	old := NewSharedPortPool(PortRange{50000, 50009}, a)
	reloaded := NewSharedPortPool(PortRange{50005, 50014}, a)
	held := map[uint16]string{}
	for range 10 {
		for name, p := range map[string]*PortPool{"old": old, "reloaded": reloaded} {
			port, err := p.Take(gwIn, noOwner)
			if errors.Is(err, ErrPoolExhausted) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if other, ok := held[port]; ok {
				t.Fatalf("port %d held by the %s pool and the %s pool", port, other, name)
			}
			held[port] = name
		}
	}
	if len(held) != 15 || a.Held() != 15 {
		t.Fatalf("%d ports held (allocator: %d), want all 15 of the two ranges", len(held), a.Held())
	}
	for port, name := range held {
		map[string]*PortPool{"old": old, "reloaded": reloaded}[name].Release(gwIn, port)
	}
	if a.Held() != 0 || old.InUse() != 0 || reloaded.InUse() != 0 {
		t.Errorf("after release: allocator %d, pools %d and %d", a.Held(), old.InUse(), reloaded.InUse())
	}
}

// TestPortPoolRests: a port just released comes back only when no other is
// free: a late connection meant for the earlier transfer must not land on
// the next one's port.
func TestPortPoolRests(t *testing.T) {
	p := NewPortPool(PortRange{40000, 40009})
	var held []uint16
	for range 10 {
		port, err := p.Take(gwIn, noOwner)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, port)
	}
	p.Release(gwIn, held[3])
	p.Release(gwIn, held[7])
	if port, _ := p.Take(gwIn, noOwner); port != held[3] {
		t.Errorf("Take() = %d, want %d: released first, rested longest", port, held[3])
	}
	p.Release(gwIn, held[0])
	if port, _ := p.Take(gwIn, noOwner); port != held[7] {
		t.Errorf("Take() = %d, want %d, which rested longer than %d", port, held[7], held[0])
	}
	if port, _ := p.Take(gwIn, noOwner); port != held[0] {
		t.Errorf("Take() = %d, want %d, the last free port", port, held[0])
	}
}

// TestPortPoolRandom: ports are picked at random, not in order.
func TestPortPoolRandom(t *testing.T) {
	p := NewPortPool(PortRange{40000, 40999})
	seen := map[uint16]bool{}
	ordered := true
	prev := uint16(0)
	for range 20 {
		port, err := p.Take(gwOut, noOwner)
		if err != nil {
			t.Fatal(err)
		}
		if port != prev+1 && prev != 0 {
			ordered = false
		}
		prev = port
		seen[port] = true
		p.Release(gwOut, port)
	}
	if ordered || len(seen) < 10 {
		t.Errorf("20 takes and releases handed out %d distinct ports, in order %t: not random", len(seen), ordered)
	}
}

func TestPortPoolEmpty(t *testing.T) {
	for name, p := range map[string]*PortPool{
		"zero value":    new(PortPool),
		"invalid range": NewPortPool(PortRange{10, 9}),
		"zero range":    NewPortPool(PortRange{}),
	} {
		if _, err := p.Take(gwIn, noOwner); !errors.Is(err, ErrPoolExhausted) {
			t.Errorf("%s: Take() error = %v, want ErrPoolExhausted", name, err)
		}
		p.Release(gwIn, 0)
		p.Release(gwIn, 10)
		if p.InUse() != 0 {
			t.Errorf("%s: InUse() = %d", name, p.InUse())
		}
	}
}

func TestPortPoolOnePort(t *testing.T) {
	p := NewPortPool(PortRange{65535, 65535})
	for range 3 {
		port, err := p.Take(gwIn, noOwner)
		if err != nil || port != 65535 {
			t.Fatalf("Take() = %d, %v", port, err)
		}
		if _, err := p.Take(gwIn, noOwner); !errors.Is(err, ErrPoolExhausted) {
			t.Fatalf("second Take() error = %v", err)
		}
		p.Release(gwIn, port)
	}
}

// TestPortPoolConcurrent checks under -race that no port is held by two
// goroutines at once, from two pools of overlapping ranges on one
// allocator.
func TestPortPoolConcurrent(t *testing.T) {
	a := NewPortAllocator()
	pools := []*PortPool{NewSharedPortPool(PortRange{50000, 50099}, a), NewSharedPortPool(PortRange{50050, 50149}, a)}
	var holders [65536]atomic.Int32
	var wg sync.WaitGroup
	for g := range 64 {
		p := pools[g%2]
		wg.Go(func() {
			var mine []uint16
			for i := range 2000 {
				if i%3 != 2 {
					port, err := p.Take(gwIn, noOwner)
					if errors.Is(err, ErrPoolExhausted) {
						continue
					}
					if err != nil || !p.Range().Contains(port) {
						t.Errorf("Take() = %d, %v", port, err)
						return
					}
					if n := holders[port].Add(1); n != 1 {
						t.Errorf("port %d handed out while held (%d holders)", port, n)
						return
					}
					mine = append(mine, port)
				} else if len(mine) > 0 {
					port := mine[0]
					mine = mine[1:]
					holders[port].Add(-1)
					p.Release(gwIn, port)
				}
			}
			for _, port := range mine {
				holders[port].Add(-1)
				p.Release(gwIn, port)
			}
		})
	}
	wg.Wait()
	if a.Held() != 0 {
		t.Fatalf("Held() = %d after all released", a.Held())
	}
}

// TestPortPoolOwnerShare: one client cannot hold more than its share of a
// pool (here 20% of 10 ports: 2), whatever it asks for; others still get
// ports.
func TestPortPoolOwnerShare(t *testing.T) {
	p := NewPortPool(PortRange{40000, 40009})
	p.SetOwnerShare(20)
	greedy := netip.MustParsePrefix("2001:db8:bad::/64")
	var held []uint16
	for range 2 {
		port, err := p.Take(gwOut, greedy)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, port)
	}
	if _, err := p.Take(gwOut, greedy); !errors.Is(err, ErrOwnerShare) {
		t.Fatalf("a third port for one client: %v, want ErrOwnerShare", err)
	}
	if _, err := p.Take(gwOut, netip.MustParsePrefix("198.18.0.2/32")); err != nil {
		t.Errorf("another client: %v", err)
	}
	p.Release(gwOut, held[0])
	if _, err := p.Take(gwOut, greedy); err != nil {
		t.Errorf("after a release: %v", err)
	}
	p.SetOwnerShare(1) // 1% of 10 ports: still one
	if _, err := p.Take(gwOut, netip.MustParsePrefix("198.18.0.3/32")); err != nil {
		t.Errorf("a share below one port rounds up to one: %v", err)
	}
}
