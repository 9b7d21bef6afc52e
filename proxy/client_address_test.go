package proxy

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeDNS answers lookups from a value the test changes.
type fakeDNS struct {
	mu    sync.Mutex
	addrs []netip.Addr
	err   error
	calls int
}

func (d *fakeDNS) set(err error, addrs ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.err, d.addrs = err, nil
	for _, a := range addrs {
		d.addrs = append(d.addrs, netip.MustParseAddr(a))
	}
}

func (d *fakeDNS) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	return d.addrs, d.err
}

// TestClientAddressHost: a client_address that is a DNS name is written
// in 227 replies as its IPv4 address; when the name's address changes,
// the next 227 carries the new one; when resolving fails or gives no IPv4
// address, the last good one stays.
func TestClientAddressHost(t *testing.T) {
	dns := new(fakeDNS)
	dns.set(nil, "2001:db8::7", "198.51.100.7")
	h := newHarness(t, func(s *Server) {
		s.ClientAddressHost = &ResolvedAddress{Host: "ftp.example.net", Refresh: time.Second, Lookup: dns.lookup}
	})
	pasv := func() string {
		t.Helper()
		c := h.dial()
		defer c.quit()
		c.login()
		return c.cmd("PASV", 227)
	}
	wait := func(want string) {
		t.Helper()
		if !eventually(5*time.Second, func() bool { return h.srv.ClientAddressHost.Addr().String() == want }) {
			t.Fatalf("client_address resolved to %v, want %s", h.srv.ClientAddressHost.Addr(), want)
		}
	}
	wait("198.51.100.7")
	if r := pasv(); !strings.Contains(r, "(198,51,100,7,") {
		t.Errorf("227 %q, want the name's address 198.51.100.7", r)
	}
	dns.set(nil, "198.51.100.8") // the provider hands out another
	wait("198.51.100.8")
	if r := pasv(); !strings.Contains(r, "(198,51,100,8,") {
		t.Errorf("227 %q after the change, want 198.51.100.8", r)
	}
	dns.set(errors.New("no such host"))
	calls := func() int { dns.mu.Lock(); defer dns.mu.Unlock(); return dns.calls }
	n := calls()
	if !eventually(5*time.Second, func() bool { return calls() > n+1 }) {
		t.Fatal("the name was not resolved again")
	}
	if r := pasv(); !strings.Contains(r, "(198,51,100,8,") {
		t.Errorf("227 %q while resolving fails, want the last good 198.51.100.8", r)
	}
	h.waitLog("level=WARN", "resolving failed; the last address stays", "no such host")
	dns.set(nil, "2001:db8::9") // no IPv4 address: kept too
	n = calls()
	eventually(5*time.Second, func() bool { return calls() > n+1 })
	if a := h.srv.ClientAddressHost.Addr().String(); a != "198.51.100.8" {
		t.Errorf("address %s after a lookup without IPv4, want the last good 198.51.100.8", a)
	}
	h.sessionsEnded()
}
