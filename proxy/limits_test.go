package proxy

import (
	"errors"
	"net/netip"
	"testing"
	"time"
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

// TestSessionLimiterIPv6Prefix: an IPv6 client has a whole /64 to pick
// addresses from; counted by exact address, it had no per-client limit.
// It is counted by its /64 (or the configured prefix).
func TestSessionLimiterIPv6Prefix(t *testing.T) {
	l := NewSessionLimiter(0, 2)
	for i, s := range []string{"2001:db8:1:2::1", "2001:db8:1:2:ffff::7"} {
		if _, _, err := l.Acquire(netip.MustParseAddr(s)); err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
	}
	if _, _, err := l.Acquire(netip.MustParseAddr("2001:db8:1:2:dead:beef::1")); !errors.Is(err, ErrTooManyFromClient) {
		t.Errorf("a third address of the same /64: %v, want %v", err, ErrTooManyFromClient)
	}
	if _, _, err := l.Acquire(netip.MustParseAddr("2001:db8:1:3::1")); err != nil {
		t.Errorf("another /64: %v", err)
	}
	l.SetIPv6Prefix(48)
	for _, s := range []string{"2001:db8:1:4::1", "2001:db8:1:5::1"} {
		if _, _, err := l.Acquire(netip.MustParseAddr(s)); err != nil {
			t.Errorf("with prefix 48, %s: %v", s, err)
		}
	}
	if _, _, err := l.Acquire(netip.MustParseAddr("2001:db8:1:6::1")); !errors.Is(err, ErrTooManyFromClient) {
		t.Errorf("with prefix 48, a third /64 of the same /48: %v, want %v", err, ErrTooManyFromClient)
	}
	for _, tc := range []struct {
		addr string
		bits int
		want string
	}{
		{"198.18.0.1", 64, "198.18.0.1/32"},
		{"::ffff:198.18.0.1", 64, "198.18.0.1/32"},
		{"2001:db8::1", 64, "2001:db8::/64"},
		{"2001:db8::1", 0, "2001:db8::/64"},
		{"2001:db8::1", 128, "2001:db8::1/128"},
		{"fe80::1%eth0", 64, "fe80::/64"},
	} {
		if got := ClientKey(netip.MustParseAddr(tc.addr), tc.bits).String(); got != tc.want {
			t.Errorf("ClientKey(%s, %d) = %s, want %s", tc.addr, tc.bits, got, tc.want)
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

// TestLoginTimeout: a session that does not log in within LoginTimeout
// ends (before, it held its upstream connection for IdleTimeout); one that
// did is not affected.
func TestLoginTimeout(t *testing.T) {
	const login = 300 * time.Millisecond
	h := newHarness(t, func(s *Server) { s.LoginTimeout = login })
	lazy := h.dial()
	lazy.expect(220)
	quick := h.dial()
	quick.login()
	if got := lazy.expect(421); got != "421 Login timeout, closing control connection.\r\n" {
		t.Errorf("reply %q", got)
	}
	lazy.expectClosed()
	time.Sleep(2 * login)
	quick.cmd("NOOP", 200)
	quick.quit()
	h.sessionsEnded()
	h.waitLog("session ended", "not logged in within the login timeout")
}
