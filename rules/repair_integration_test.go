//go:build integration

// Integration tests of the repair after a firewall reload by someone else
// (issue 15), for every backend and iptables variant: a pinhole is open,
// the firewall is reloaded as an operator's tools would reload it, and a
// real connection through the pinhole must be accepted once ftpgate has
// noticed and reinstalled its rules. They run in the same binary, and so
// behind the same TestMain guard, as integration_test.go.

package rules

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// saveBinary returns the iptables-save or iptables-restore of bin
// (iptables-nft -> iptables-nft-save).
func saveBinary(bin, what string) string {
	base, variant, _ := strings.Cut(bin, "-")
	return base + "-" + variant + "-" + what
}

// reloadWithout reloads table of both families of v as an operator's
// iptables-restore would: the table is replaced by what it held without
// ftpgate's chains and jumps.
func reloadWithout(t *testing.T, v variant, table string) {
	t.Helper()
	mustBeIsolated(t)
	for _, bin := range []string{v.v4, v.v6} {
		out, err := exec.Command(saveBinary(bin, "save"), "-t", table).Output()
		if err != nil {
			t.Fatalf("%s -t %s: %v", saveBinary(bin, "save"), table, err)
		}
		var keep []string
		for _, l := range strings.Split(string(out), "\n") {
			if !strings.Contains(l, "FTPGATE") {
				keep = append(keep, l)
			}
		}
		cmd := exec.Command(saveBinary(bin, "restore"))
		cmd.Stdin = strings.NewReader(strings.Join(keep, "\n"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", saveBinary(bin, "restore"), err, out)
		}
		if s := strings.Join(list(t, bin, table), "\n"); strings.Contains(s, "FTPGATE") {
			t.Fatalf("%s -t %s -S after the reload still has ftpgate's chains:\n%s", bin, table, s)
		}
	}
}

// waitRepairs waits, at most 5s, until reg counts want repairs of
// backend, and marks the test failed if it does not (the connections are
// checked all the same).
func waitRepairs(t *testing.T, reg *prometheus.Registry, backend string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for repairs(t, reg, backend) < want && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := repairs(t, reg, backend); got != want {
		t.Errorf("ftpgate_firewall_repairs_total{backend=%q} = %v, want %v", backend, got, want)
	}
}

// openBoth opens an AcceptLocal pinhole to an echo server of each family
// and shows that it admits its connection; it returns the servers.
func openBoth(t *testing.T, ph Pinholer) []netip.AddrPort {
	t.Helper()
	var dsts []netip.AddrPort
	for i, fam := range testFamilies {
		dst := echoServer(t, fam.gw)
		if _, err := ph.Open(t.Context(), Pinhole{Session: 15, Seq: i, From: fam.peer, To: dst, TTL: time.Minute}); err != nil {
			t.Fatal(err)
		}
		wantThrough(t, fam.peer, dst, "before the reload")
		dsts = append(dsts, dst)
	}
	return dsts
}

// wantThrough fails the test unless src connects to dst and echoes.
func wantThrough(t *testing.T, src netip.Addr, dst netip.AddrPort, when string) {
	t.Helper()
	c, err := dial(src, dst)
	if err != nil {
		t.Errorf("%s -> %s through the pinhole %s: %v", src, dst, when, err)
		return
	}
	defer c.Close()
	if err := echo(c, "through the pinhole "+when); err != nil {
		t.Errorf("%s -> %s %s: %v", src, dst, when, err)
	}
}

// wantRepaired waits for the repair and shows that the pinholes of
// openBoth admit their connections again, and only them.
func wantRepaired(t *testing.T, reg *prometheus.Registry, backend string, dsts []netip.AddrPort) {
	t.Helper()
	waitRepairs(t, reg, backend, 1)
	for i, fam := range testFamilies {
		wantThrough(t, fam.peer, dsts[i], "after the repair")
		wantDropped(t, fam.thief, dsts[i], "the pinhole is for another source, after the repair")
	}
	time.Sleep(1500 * time.Millisecond) // more checks: nothing is missing now
	if got := repairs(t, reg, backend); got != 1 {
		t.Errorf("ftpgate_firewall_repairs_total{backend=%q} = %v after more checks, want still 1", backend, got)
	}
}

// TestIntegrationRepairIPTables: iptables-restore of the filter and nat
// tables without ftpgate's chains, while a pinhole is open.
func TestIntegrationRepairIPTables(t *testing.T) {
	forEachVariant(t, func(t *testing.T, v variant) {
		statefulInput(t, v)
		reg := prometheus.NewRegistry()
		ipt := newBackend(t, v, IPTablesConfig{Registerer: reg}, false)
		start(t, ipt, t.Context())
		dsts := openBoth(t, ipt)
		if got := repairs(t, reg, "iptables"); got != 0 {
			t.Fatalf("repairs = %v before the reload, want 0", got)
		}
		reloadWithout(t, v, "filter")
		reloadWithout(t, v, "nat")
		wantRepaired(t, reg, "iptables", dsts)
		wantHookedOnce(t, v)
		if got := ipt.Active(); got != 2 {
			t.Errorf("Active() = %d after the repair, want 2", got)
		}
	})
}

// wantHookedOnce checks that each built-in chain jumps to ftpgate's chain
// exactly once, first.
func wantHookedOnce(t *testing.T, v variant) {
	t.Helper()
	for _, bin := range []string{v.v4, v.v6} {
		for _, h := range hookedBuiltins {
			rs := list(t, bin, h.table, h.builtin)
			jump := "-A " + h.builtin + " -j " + h.chain
			if n := count(rs, jump); n != 1 || len(rs) < 2 || rs[1] != jump {
				t.Errorf("%s -t %s -S %s = %q, want %q once, first", bin, h.table, h.builtin, rs, jump)
			}
		}
	}
}

// TestIntegrationRepairNetlink: iptables-restore of the filter table
// without ftpgate's chains, every ipset destroyed and ftpgate's nftables
// tables deleted, while a pinhole is open.
func TestIntegrationRepairNetlink(t *testing.T) {
	forEachNetlinkVariant(t, func(t *testing.T, v variant) {
		statefulInput(t, v)
		reg := prometheus.NewRegistry()
		n := newNetlink(t, v, IPTablesConfig{Registerer: reg}, false)
		dsts := openBoth(t, n)
		reloadWithout(t, v, "filter")
		reloadWithout(t, v, "nat")
		tool(t, "ipset", "destroy")
		tool(t, "nft", "delete", "table", "ip", "FTPGATE")
		tool(t, "nft", "delete", "table", "ip6", "FTPGATE")
		wantRepaired(t, reg, "netlink", dsts)
		wantHookedOnce(t, v)
		for _, set := range []string{"FTPGATE-in4", "FTPGATE-in6"} {
			members := ipsetMembers(t, set)
			if len(members) != 1 {
				t.Errorf("ipset %s = %q after the repair, want the pinhole", set, members)
			}
		}
		if !strings.Contains(nftTables(t), "table ip FTPGATE") {
			t.Errorf("nftables tables after the repair:\n%s\nwant table ip FTPGATE", nftTables(t))
		}
	})
}

// TestIntegrationRepairNftables: `nft flush ruleset`, then the operator's
// ruleset loaded again, as a reload of /etc/nftables.conf does, while a
// pinhole is open.
func TestIntegrationRepairNftables(t *testing.T) {
	resetNftables(t)
	reg := prometheus.NewRegistry()
	cfg := chainCfg
	cfg.Registerer = reg
	b := newNft(t, cfg, false)
	if err := b.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	dsts := openBoth(t, b)
	resetNftables(t) // flush ruleset; load the operator's ruleset
	if s := ruleset(t); strings.Contains(s, "FTPGATE") {
		t.Fatalf("ruleset after the reload still has ftpgate's objects:\n%s", s)
	}
	wantRepaired(t, reg, "nftables", dsts)
	for _, c := range []string{"input", "forward"} {
		rules := nftChain(t, c)
		if len(rules) == 0 || rules[0] != "jump FTPGATE" || count(rules, "jump FTPGATE") != 1 {
			t.Errorf("chain %s = %q after the repair, want one jump FTPGATE, first", c, rules)
		}
	}
	// The element keeps the time it had left: its timeout is less than
	// the pinhole's TTL of 1m (nft prints e.g. "timeout 57s800ms").
	s := tool(t, "nft", "list", "set", "inet", "filter", "FTPGATE-in4")
	if !strings.Contains(s, "timeout 5") || strings.Contains(s, "timeout 1m") {
		t.Errorf("set FTPGATE-in4 after the repair:\n%s\nwant the element with the time it had left", s)
	}
}
