package nat

import (
	"errors"
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

func TestPortPoolTakeAll(t *testing.T) {
	r := PortRange{40000, 40009}
	p := NewPortPool(r)
	if p.Range() != r {
		t.Fatalf("Range() = %v, want %v", p.Range(), r)
	}
	seen := map[uint16]bool{}
	for range r.Len() {
		port, err := p.Take()
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
	_, err := p.Take()
	if !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("Take() on a full pool: %v, want ErrPoolExhausted", err)
	}
	if want := "taking a port from range 40000-40009: port pool exhausted"; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}

	p.Release(40004)
	p.Release(40004) // not taken: no-op
	p.Release(39999) // outside: no-op
	p.Release(0)
	if p.InUse() != r.Len()-1 {
		t.Fatalf("InUse() after one release = %d, want %d", p.InUse(), r.Len()-1)
	}
	if port, err := p.Take(); err != nil || port != 40004 {
		t.Fatalf("Take() after release = %d, %v; want 40004", port, err)
	}
}

func TestPortPoolRoundRobin(t *testing.T) {
	p := NewPortPool(PortRange{40000, 40009})
	a, _ := p.Take()
	b, _ := p.Take()
	p.Release(a)
	c, err := p.Take()
	if err != nil || c == a || c == b {
		t.Fatalf("Take() after releasing %d = %d, %v; want a port not just released", a, c, err)
	}
	// The released port comes back only after the rest of the range.
	var last uint16
	for range 8 {
		last, _ = p.Take()
	}
	if last != a {
		t.Fatalf("last free port handed out = %d, want %d", last, a)
	}
}

func TestPortPoolEmpty(t *testing.T) {
	for name, p := range map[string]*PortPool{
		"zero value":    new(PortPool),
		"invalid range": NewPortPool(PortRange{10, 9}),
		"zero range":    NewPortPool(PortRange{}),
	} {
		if _, err := p.Take(); !errors.Is(err, ErrPoolExhausted) {
			t.Errorf("%s: Take() error = %v, want ErrPoolExhausted", name, err)
		}
		p.Release(0)
		p.Release(10)
		if p.InUse() != 0 {
			t.Errorf("%s: InUse() = %d", name, p.InUse())
		}
	}
}

func TestPortPoolOnePort(t *testing.T) {
	p := NewPortPool(PortRange{65535, 65535})
	for range 3 {
		port, err := p.Take()
		if err != nil || port != 65535 {
			t.Fatalf("Take() = %d, %v", port, err)
		}
		if _, err := p.Take(); !errors.Is(err, ErrPoolExhausted) {
			t.Fatalf("second Take() error = %v", err)
		}
		p.Release(port)
	}
}

// TestPortPoolConcurrent checks under -race that no port is held by two
// goroutines at once.
func TestPortPoolConcurrent(t *testing.T) {
	r := PortRange{50000, 50099}
	p := NewPortPool(r)
	var holders [65536]atomic.Int32
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			var mine []uint16
			for i := range 2000 {
				if i%3 != 2 {
					port, err := p.Take()
					if errors.Is(err, ErrPoolExhausted) {
						continue
					}
					if err != nil || !r.Contains(port) {
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
					p.Release(port)
				}
			}
			for _, port := range mine {
				holders[port].Add(-1)
				p.Release(port)
			}
		})
	}
	wg.Wait()
	if p.InUse() != 0 {
		t.Fatalf("InUse() = %d after all released", p.InUse())
	}
}

func TestPortPoolConcurrentTakeAll(t *testing.T) {
	r := PortRange{1024, 5119}
	p := NewPortPool(r)
	var mu sync.Mutex
	seen := map[uint16]bool{}
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for {
				port, err := p.Take()
				if err != nil {
					return
				}
				mu.Lock()
				if seen[port] {
					t.Errorf("port %d handed out twice", port)
				}
				seen[port] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != r.Len() || p.InUse() != r.Len() {
		t.Fatalf("took %d ports, InUse() = %d; want %d", len(seen), p.InUse(), r.Len())
	}
}
