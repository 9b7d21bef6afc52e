package proxy

import (
	"errors"
	"net/netip"
	"testing"
)

func TestSessionLimiter(t *testing.T) {
	a, b := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	aMapped := netip.AddrFrom16(a.As16())
	l := NewSessionLimiter(3, 2)

	id1, rel1, err := l.Acquire(a)
	if err != nil {
		t.Fatal(err)
	}
	id2, rel2, err := l.Acquire(aMapped) // the same client, seen on a dual-stack socket
	if err != nil {
		t.Fatal(err)
	}
	if id1 == 0 || id2 <= id1 {
		t.Errorf("IDs %d, %d: want increasing and non-zero", id1, id2)
	}
	if _, _, err := l.Acquire(a); !errors.Is(err, ErrTooManyFromClient) {
		t.Errorf("third session from %v: %v, want %v", a, err, ErrTooManyFromClient)
	}
	_, rel3, err := l.Acquire(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Acquire(netip.MustParseAddr("198.18.0.3")); !errors.Is(err, ErrTooManySessions) {
		t.Errorf("fourth session: %v, want %v", err, ErrTooManySessions)
	}
	if n := l.Active(); n != 3 {
		t.Errorf("Active() = %d, want 3", n)
	}
	rel1()
	rel1() // release is idempotent
	if n := l.Active(); n != 2 {
		t.Errorf("Active() = %d after one release, want 2", n)
	}
	if _, rel, err := l.Acquire(a); err != nil {
		t.Errorf("after a release: %v", err)
	} else {
		rel()
	}
	rel2()
	rel3()
	if n := l.Active(); n != 0 {
		t.Errorf("Active() = %d after every release, want 0", n)
	}

	unlimited := NewSessionLimiter(0, -1)
	for range 100 {
		if _, _, err := unlimited.Acquire(a); err != nil {
			t.Fatalf("unlimited: %v", err)
		}
	}
}

func TestServerModeString(t *testing.T) {
	for m, want := range map[ServerMode]string{SameMode: "same", PassiveMode: "passive", ActiveMode: "active", 7: "ServerMode(7)"} {
		if got := m.String(); got != want {
			t.Errorf("ServerMode(%d).String() = %q, want %q", int(m), got, want)
		}
	}
}
