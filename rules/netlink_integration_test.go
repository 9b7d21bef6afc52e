//go:build integration

// Integration tests of the netlink backend (ipset and nftables maps) against
// the real kernel, for both iptables variants of its static rules. They run
// in the same binary, and so behind the same TestMain guard, as
// integration_test.go.

package rules

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// resetNetlink removes ftpgate's sets and tables, now and when the test
// ends (after resetFirewall's flush, which unreferences the sets).
func resetNetlink(tb testing.TB) {
	tb.Helper()
	reset := func() {
		for _, bin := range allBinaries {
			if _, err := exec.LookPath(bin); err == nil {
				run(tb, bin, "-t", "filter", "-F")
				run(tb, bin, "-t", "filter", "-X")
			}
		}
		_ = exec.Command("ipset", "destroy").Run()
		_ = exec.Command("nft", "delete", "table", "ip", "FTPGATE").Run()
		_ = exec.Command("nft", "delete", "table", "ip6", "FTPGATE").Run()
	}
	reset()
	tb.Cleanup(reset)
}

// forEachNetlinkVariant is forEachVariant with ftpgate's sets and tables
// removed before and after.
func forEachNetlinkVariant(t *testing.T, f func(t *testing.T, v variant)) {
	forEachVariant(t, func(t *testing.T, v variant) {
		resetNetlink(t)
		f(t, v)
	})
}

// newNetlink makes and starts a Netlink for v; its logs are shown if the
// test fails. It is stopped when the test ends unless crash is set.
func newNetlink(tb testing.TB, v variant, cfg IPTablesConfig, crash bool) *Netlink {
	tb.Helper()
	n := newTestBackend(tb, v, cfg, crash, NewNetlink)
	if err := n.Start(tb.Context()); err != nil {
		tb.Fatalf("Start: %v", err)
	}
	return n
}

// tool runs ipset or nft and returns its output.
func tool(tb testing.TB, bin string, args ...string) string {
	tb.Helper()
	mustBeIsolated(tb)
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v: %s", bin, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ipsetMembers returns the members of set as `ipset list` prints them,
// without their timeouts and comments.
func ipsetMembers(tb testing.TB, set string) []string {
	tb.Helper()
	out := tool(tb, "ipset", "list", set)
	_, members, ok := strings.Cut(out, "Members:\n")
	if !ok {
		tb.Fatalf("ipset list %s: no Members: in %q", set, out)
	}
	var m []string
	for _, line := range strings.Split(members, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			m = append(m, f[0]) // the element, without "timeout N comment ..."
		}
	}
	return m
}

// ipsetNames returns the names of every ipset.
func ipsetNames(tb testing.TB) []string {
	tb.Helper()
	return strings.Fields(tool(tb, "ipset", "list", "-n"))
}

// nftMap returns `nft list map FAMILY FTPGATE NAME`.
func nftMap(tb testing.TB, family, name string) string {
	tb.Helper()
	return tool(tb, "nft", "list", "map", family, "FTPGATE", name)
}

// nftTables returns `nft list tables`.
func nftTables(tb testing.TB) string {
	tb.Helper()
	return tool(tb, "nft", "list", "tables")
}

var netlinkSets = []string{
	"FTPGATE-in4", "FTPGATE-fwd4", "FTPGATE-rdr4", "FTPGATE-dnat4",
	"FTPGATE-in6", "FTPGATE-fwd6", "FTPGATE-rdr6", "FTPGATE-dnat6",
}

// wantNoNetlink checks that no set, table or chain of ftpgate is left.
func wantNoNetlink(t *testing.T, v variant) {
	t.Helper()
	if names := ipsetNames(t); len(names) != 0 {
		t.Errorf("ipsets left: %q", names)
	}
	if tables := nftTables(t); strings.Contains(tables, "FTPGATE") {
		t.Errorf("nftables tables left: %q", tables)
	}
	wantNoFtpgate(t, v.v4)
	wantNoFtpgate(t, v.v6)
}

func TestIntegrationNetlinkStartStop(t *testing.T) {
	forEachNetlinkVariant(t, func(t *testing.T, v variant) {
		n := newNetlink(t, v, IPTablesConfig{}, true)
		names := ipsetNames(t)
		slices.Sort(names)
		want := slices.Clone(netlinkSets)
		slices.Sort(want)
		if !slices.Equal(names, want) {
			t.Errorf("ipsets %q, want %q", names, want)
		}
		for _, set := range netlinkSets {
			if m := ipsetMembers(t, set); len(m) != 0 {
				t.Errorf("%s has members %q after Start", set, m)
			}
		}
		wantRules := map[string][]string{
			"FTPGATE-INPUT": {
				"-N FTPGATE-INPUT",
				"-A FTPGATE-INPUT -p tcp -m set --match-set FTPGATE-in4 src,dst,dst -m conntrack --ctstate NEW -j ACCEPT",
				"-A FTPGATE-INPUT -p tcp -m set --match-set FTPGATE-rdr4 src,dst -m conntrack --ctstate NEW -m conntrack --ctstate DNAT -j ACCEPT",
			},
			"FTPGATE-FORWARD": {
				"-N FTPGATE-FORWARD",
				"-A FTPGATE-FORWARD -p tcp -m set --match-set FTPGATE-fwd4 src,dst,dst -m conntrack --ctstate NEW -j ACCEPT",
				"-A FTPGATE-FORWARD -p tcp -m set --match-set FTPGATE-dnat4 src,dst,dst -m conntrack --ctstate NEW -m conntrack --ctstate DNAT -j ACCEPT",
			},
		}
		for chain, want := range wantRules {
			if got := list(t, v.v4, "filter", chain); !slices.Equal(got, want) {
				t.Errorf("%s -S %s =\n%s\nwant\n%s", v.v4, chain, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if got := list(t, v.v6, "filter", chain); len(got) != 3 || !strings.Contains(got[1], "FTPGATE-in6") && !strings.Contains(got[1], "FTPGATE-fwd6") {
				t.Errorf("%s -S %s = %q, want the IPv6 set rules", v.v6, chain, got)
			}
		}
		tables := nftTables(t)
		for _, want := range []string{"table ip FTPGATE", "table ip6 FTPGATE"} {
			if !strings.Contains(tables, want) {
				t.Errorf("nft list tables = %q, want %q", tables, want)
			}
		}
		// The table reads as documented on natMaps.
		table := tool(t, "nft", "list", "table", "ip", "FTPGATE")
		for _, want := range []string{
			"type ipv4_addr . ipv4_addr . inet_service : ipv4_addr . inet_service",
			"type nat hook prerouting priority dstnat - 10; policy accept;",
			"dnat ip to ip saddr . ip daddr . tcp dport map @dnat_to",
			"redirect to :ip saddr . ip daddr . tcp dport map @redirect_to",
			"type nat hook postrouting priority srcnat - 10; policy accept;",
			"ct status dnat snat to ip saddr . ip daddr . tcp dport map @snat_to",
		} {
			if !strings.Contains(table, want) {
				t.Errorf("nft list table ip FTPGATE lacks %q:\n%s", want, table)
			}
		}
		if err := n.Stop(t.Context()); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		wantNoNetlink(t, v)
	})
}

// TestIntegrationNetlinkElements opens a pinhole of every delivery and
// family and reads its elements back from the kernel.
func TestIntegrationNetlinkElements(t *testing.T) {
	forEachNetlinkVariant(t, func(t *testing.T, v variant) {
		n := newNetlink(t, v, IPTablesConfig{}, false)
		srv4 := netip.MustParseAddrPort("198.19.0.5:30000")
		srv6 := netip.MustParseAddrPort("[2001:db8:1::5]:30000")
		for _, tc := range []struct {
			p    Pinhole
			sets map[string]string // set -> member
			maps map[string]string // "family map" -> element
		}{
			{Pinhole{Session: 1, Seq: 1, From: peer4, To: netip.AddrPortFrom(gw4, 40001)},
				map[string]string{"FTPGATE-in4": "198.18.0.2,tcp:40001,198.18.0.1"}, nil},
			{Pinhole{Session: 1, Seq: 2, From: peer6, To: netip.AddrPortFrom(gw6, 40002), Deliver: AcceptForward},
				map[string]string{"FTPGATE-fwd6": "2001:db8::2,tcp:40002,2001:db8::1"}, nil},
			{Pinhole{Session: 1, Seq: 3, From: peer4, To: netip.AddrPortFrom(gw4, 40003), Deliver: Redirect, RedirectPort: 2121},
				map[string]string{"FTPGATE-rdr4": "198.18.0.2,tcp:2121"},
				map[string]string{"ip redirect_to": "198.18.0.2 . 198.18.0.1 . 40003"}},
			{Pinhole{Session: 1, Seq: 4, From: peer4, To: netip.AddrPortFrom(gw4, 40004), Deliver: DNAT, DNATTo: srv4, SNATTo: gw4},
				map[string]string{"FTPGATE-dnat4": "198.18.0.2,tcp:30000,198.19.0.5"},
				map[string]string{"ip snat_to": "198.18.0.2 . 198.19.0.5 . 30000", "ip dnat_to": "198.18.0.2 . 198.18.0.1 . 40004"}},
			{Pinhole{Session: 1, Seq: 5, From: peer6, To: netip.AddrPortFrom(gw6, 40005), Deliver: DNAT, DNATTo: srv6},
				map[string]string{"FTPGATE-dnat6": "2001:db8::2,tcp:30000,2001:db8:1::5"},
				map[string]string{"ip6 dnat_to": "2001:db8::2 . 2001:db8::1 . 40005"}},
		} {
			t.Run(tc.p.Deliver.String(), func(t *testing.T) {
				closeFn, err := n.Open(t.Context(), tc.p)
				if err != nil {
					t.Fatal(err)
				}
				for set, member := range tc.sets {
					if m := ipsetMembers(t, set); !slices.Contains(m, member) {
						t.Errorf("%s members %q, want %q", set, m, member)
					}
					if out := tool(t, "ipset", "list", set); !strings.Contains(out, fmt.Sprintf(`comment "ftpgate s=1 p=%d"`, tc.p.Seq)) {
						t.Errorf("ipset list %s lacks the comment:\n%s", set, out)
					}
				}
				for fm, el := range tc.maps {
					fam, name, _ := strings.Cut(fm, " ")
					if out := nftMap(t, fam, name); !strings.Contains(out, el) {
						t.Errorf("nft list map %s FTPGATE %s lacks %q:\n%s", fam, name, el, out)
					}
				}
				if n.Active() != 1 {
					t.Errorf("Active() = %d, want 1", n.Active())
				}
				if err := closeFn(t.Context()); err != nil {
					t.Fatal(err)
				}
				if err := closeFn(t.Context()); err != nil {
					t.Errorf("second close: %v", err)
				}
				for set := range tc.sets {
					if m := ipsetMembers(t, set); len(m) != 0 {
						t.Errorf("%s members %q after close", set, m)
					}
				}
				for fm, el := range tc.maps {
					fam, name, _ := strings.Cut(fm, " ")
					if out := nftMap(t, fam, name); strings.Contains(out, el) {
						t.Errorf("nft list map %s FTPGATE %s still has %q", fam, name, el)
					}
				}
			})
		}
		if n.Active() != 0 {
			t.Errorf("Active() = %d at the end", n.Active())
		}
	})
}

// TestIntegrationNetlinkConnection puts a stateful firewall in front of
// local listeners and shows that a netlink pinhole admits exactly the
// connection it names.
func TestIntegrationNetlinkConnection(t *testing.T) {
	forEachNetlinkVariant(t, func(t *testing.T, v variant) {
		statefulInput(t, v)
		testConnection(t, newNetlink(t, v, IPTablesConfig{}, false))
	})
}

// TestIntegrationNetlinkKernelExpiry drops the backend's books without
// Stop, as kill -9 would, and watches the kernel remove the elements by
// itself at their timeout.
func TestIntegrationNetlinkKernelExpiry(t *testing.T) {
	forEachNetlinkVariant(t, func(t *testing.T, v variant) {
		n := newNetlink(t, v, IPTablesConfig{}, true)
		ttl := 2 * time.Second
		if _, err := n.Open(t.Context(), Pinhole{Session: 7, Seq: 1, From: peer4, To: netip.AddrPortFrom(gw4, 40001), TTL: ttl}); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Open(t.Context(), Pinhole{Session: 7, Seq: 2, From: peer4, To: netip.AddrPortFrom(gw4, 40002), TTL: ttl,
			Deliver: DNAT, DNATTo: netip.MustParseAddrPort("198.19.0.5:30000"), SNATTo: gw4}); err != nil {
			t.Fatal(err)
		}
		opened := time.Now()
		// The process dies: no close, no timer of ours, no Stop.
		n.op.Lock()
		n.forget()
		n.op.Unlock()
		if m := ipsetMembers(t, "FTPGATE-in4"); len(m) != 1 {
			t.Fatalf("FTPGATE-in4 members %q right after the crash, want the pinhole", m)
		}
		gone := func() bool {
			return len(ipsetMembers(t, "FTPGATE-in4")) == 0 && len(ipsetMembers(t, "FTPGATE-dnat4")) == 0 &&
				!strings.Contains(nftMap(t, "ip", "dnat_to"), "40002") && !strings.Contains(nftMap(t, "ip", "snat_to"), "30000")
		}
		deadline := opened.Add(ttl + 2*time.Second) // ipset's timer runs once a second or so
		for !gone() {
			if time.Now().After(deadline) {
				t.Fatalf("elements still there %s after opening with TTL %s:\n%s\n%s", time.Since(opened), ttl,
					tool(t, "ipset", "list"), tool(t, "nft", "list", "table", "ip", "FTPGATE"))
			}
			time.Sleep(100 * time.Millisecond)
		}
		if d := time.Since(opened); d < ttl-100*time.Millisecond {
			t.Errorf("elements gone after %s, before their TTL %s", d, ttl)
		}
		t.Logf("the kernel removed the elements %s after Open (TTL %s)", time.Since(opened).Round(time.Millisecond), ttl)

		// A new process starts over the leftovers, then a cleanup removes all.
		second := newNetlink(t, v, IPTablesConfig{}, true)
		_ = second
		cleaner, err := NewNetlink(IPTablesConfig{Path: v.v4, Path6: v.v6})
		if err != nil {
			t.Fatal(err)
		}
		if err := cleaner.Cleanup(t.Context()); err != nil {
			t.Fatalf("Cleanup: %v", err)
		}
		wantNoNetlink(t, v)
		if err := cleaner.Cleanup(t.Context()); err != nil {
			t.Errorf("Cleanup with nothing to clean: %v", err)
		}
	})
}

// TestIntegrationNetlinkSharedElements: two pinholes with the same
// elements. The elements stay in the kernel as long as the longer-lived
// holder needs them, whichever opened or closes first, and go with the
// last.
func TestIntegrationNetlinkSharedElements(t *testing.T) {
	forEachNetlinkVariant(t, func(t *testing.T, v variant) {
		n := newNetlink(t, v, IPTablesConfig{}, false)
		p := Pinhole{Session: 5, Seq: 1, From: peer4, To: netip.AddrPortFrom(gw4, 40005),
			Deliver: DNAT, DNATTo: netip.MustParseAddrPort("198.19.0.5:30000"), SNATTo: gw4}
		present := func(when string) {
			t.Helper()
			if m := ipsetMembers(t, "FTPGATE-dnat4"); len(m) != 1 {
				t.Errorf("%s: FTPGATE-dnat4 members %q, want the shared element", when, m)
			}
			for name, port := range map[string]string{"dnat_to": "40005", "snat_to": "30000"} {
				if out := nftMap(t, "ip", name); !strings.Contains(out, port) {
					t.Errorf("%s: map %s lost the shared element:\n%s", when, name, out)
				}
			}
		}
		// a opens with a 2s TTL; b, 1s later, with 2s too: the elements
		// must now live until b's expiry, 3s after a opened, though a
		// closes at once.
		start := time.Now()
		a := p
		a.TTL = 2 * time.Second
		closeA, err := n.Open(t.Context(), a)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		b := a
		b.Session = 6
		closeB, err := n.Open(t.Context(), b)
		if err != nil {
			t.Fatal(err)
		}
		if err := closeA(t.Context()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Until(start.Add(2500 * time.Millisecond)))
		present("after a's TTL, with b open")
		// c holds them for an hour; d, with 1s, must not shorten that.
		c := p
		c.Session, c.TTL = 7, time.Hour
		if _, err := n.Open(t.Context(), c); err != nil {
			t.Fatal(err)
		}
		if err := closeB(t.Context()); err != nil {
			t.Fatal(err)
		}
		d := p
		d.Session, d.TTL = 8, time.Second
		if _, err := n.Open(t.Context(), d); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2500 * time.Millisecond) // d has expired (ftpgate's timer and the kernel's)
		present("after d's TTL, with c open")
		if got := n.Active(); got != 1 {
			t.Errorf("Active() = %d, want 1 (c)", got)
		}
	})
}

// TestIntegrationNetlink10000 opens 10,000 pinholes of every kind, then
// closes them, and finds nothing left.
func TestIntegrationNetlink10000(t *testing.T) {
	forEachNetlinkVariant(t, func(t *testing.T, v variant) {
		n := newNetlink(t, v, IPTablesConfig{DefaultTTL: time.Hour}, false)
		const count = 10000
		closers := make([]func(context.Context) error, 0, count)
		for i := range count {
			closeFn, err := n.Open(t.Context(), benchPinhole(i))
			if err != nil {
				t.Fatalf("pinhole %d: Open: %v", i, err)
			}
			closers = append(closers, closeFn)
		}
		if got := n.Active(); got != count {
			t.Errorf("Active() = %d, want %d", got, count)
		}
		if m := ipsetMembers(t, "FTPGATE-in4"); len(m) < count/8 {
			t.Errorf("FTPGATE-in4 has %d members, want at least %d", len(m), count/8)
		}
		for i, closeFn := range closers {
			if err := closeFn(t.Context()); err != nil {
				t.Fatalf("pinhole %d: close: %v", i, err)
			}
		}
		if got := n.Active(); got != 0 {
			t.Errorf("Active() = %d after closing all", got)
		}
		for _, set := range netlinkSets {
			if m := ipsetMembers(t, set); len(m) != 0 {
				t.Errorf("%s keeps %d members", set, len(m))
			}
		}
		for _, fm := range []string{"ip dnat_to", "ip snat_to", "ip redirect_to", "ip6 dnat_to", "ip6 snat_to", "ip6 redirect_to"} {
			fam, name, _ := strings.Cut(fm, " ")
			if out := nftMap(t, fam, name); strings.Contains(out, "elements") {
				t.Errorf("nft map %s keeps elements:\n%s", fm, out)
			}
		}
	})
}

// benchPinhole returns the i-th of a mix of distinct pinholes: every
// delivery, both families.
func benchPinhole(i int) Pinhole {
	port := uint16(1024 + i%60000)
	// vary the peer so that ports can repeat without keys repeating
	peer4 := netip.AddrFrom4([4]byte{198, 18, byte(16 + i/60000), 2})
	peer6 := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(16 + i/60000)})
	p := Pinhole{Session: uint64(i), Seq: 1, From: peer4, To: netip.AddrPortFrom(gw4, port)}
	switch i % 8 {
	case 1:
		p.From, p.To = peer6, netip.AddrPortFrom(gw6, port)
	case 2:
		p.Deliver = AcceptForward
	case 3:
		p.Deliver, p.RedirectPort = Redirect, port
	case 4:
		p.Deliver, p.DNATTo, p.SNATTo = DNAT, netip.MustParseAddrPort("198.19.0.5:30000"), gw4
		p.DNATTo = netip.AddrPortFrom(p.DNATTo.Addr(), port)
	case 5:
		p.From, p.To = peer6, netip.AddrPortFrom(gw6, port)
		p.Deliver, p.DNATTo = DNAT, netip.AddrPortFrom(netip.MustParseAddr("2001:db8:1::5"), port)
	case 6:
		p.From, p.To = peer6, netip.AddrPortFrom(gw6, port)
		p.Deliver, p.RedirectPort = Redirect, port
	}
	return p
}
