//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestFirewallReload (issue 15): between PASV and the data connection,
// the gateway's firewall is reloaded as an operator's tools would reload
// it (iptables-restore of the filter and nat tables without ftpgate's
// chains; with netlink also every ipset of ftpgate destroyed and its
// nftables tables deleted). ftpgate notices, reinstalls its rules and the
// waiting pinhole, logs and counts it, and the client's RETR then works.
func TestFirewallReload(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		config := spareConfig(pinholeFirewall(backend)) + "metrics: {listen: \"127.0.0.1:9131\"}\n"
		gw := startFtpgate(t, config, portSpare)
		c := startPaused(t, portSpare)
		waitLog(t, gw, "pinhole opened", 1)

		save, restore := net4.IPTables+"-save", net4.IPTables+"-restore"
		if net4.IPTables == "iptables-legacy" {
			save, restore = "iptables-legacy-save", "iptables-legacy-restore"
		}
		script := []string{"set -e"}
		for _, six := range []bool{false, true} {
			s, r := save, restore
			if six {
				s, r = "ip6"+strings.TrimPrefix(s, "ip"), "ip6"+strings.TrimPrefix(r, "ip")
			}
			for _, table := range []string{"filter", "nat"} {
				script = append(script, fmt.Sprintf("%s -t %s | grep -v FTPGATE | %s", s, table, r))
			}
		}
		if backend == "netlink" {
			script = append(script,
				"ipset -n list | grep '^FTPGATE-' | xargs -r -n1 ipset destroy",
				"nft delete table ip FTPGATE", "nft delete table ip6 FTPGATE")
		}
		script = append(script, "! "+save+" | grep -q FTPGATE", "! ipset -n list | grep -q FTPGATE", "! nft list tables | grep -q FTPGATE")
		if _, stderr, err := net4.Gateway.Exec(30*time.Second, nil, "sh", "-c", strings.Join(script, "\n")); err != nil {
			t.Fatalf("reloading the gateway's firewall: %v: %s", err, stderr)
		}

		waitLog(t, gw, "firewall rules of ftpgate were removed by someone else: reinstalled", 1)
		series := `ftpgate_firewall_repairs_total{backend="` + backend + `"}`
		if v, ok := seriesIn(metricsOn(t, net4, "127.0.0.1:9131"), series); !ok || v != 1 {
			t.Errorf("%s = %v (found %v), want 1", series, v, ok)
		}
		c.Resume(t) // connects to the data port, RETR, checks the file
		waitNoPinholes(t)
	})
}

// TestFirewallReloadNftables is TestFirewallReload for the nftables
// backend, on a gateway of its own whose only firewall is a native inet
// table with policy drop: between PASV and the data connection the
// ruleset is flushed and the operator's table loaded again, as `nft -f`
// of /etc/nftables.conf or a firewalld reload does. ftpgate puts its
// chain, jumps, sets and NAT tables back with the waiting pinhole, counts
// one repair, and the RETR completes.
func TestFirewallReloadNftables(t *testing.T) {
	h := nftGateway(t, nativeFirewall, portSame)
	config := `
listeners:
  - name: same
    listen: 198.19.0.1:21
    upstream: 198.18.1.2:21
    data: {client_ports: 40000-40099, server_ports: 50000-50099}
log: {level: debug}
metrics: {listen: "127.0.0.1:9131"}
firewall: {backend: nftables, pinhole_ttl: 30s, nftables: {table: inet filter, chains: [input, forward]}}
`
	gw, err := h.StartFtpgate(ftpgateBin, config, portSame)
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, gw)
	waitLog(t, gw, "firewall backend nftables:", 1)
	c := startPausedOn(t, h, portSame)
	waitLog(t, gw, "pinhole opened", 1)

	loadRuleset(t, h, nativeFirewall) // the reload: ftpgate's chain, jumps and sets are gone
	if out, err := h.Gateway.Run("nft", "list", "ruleset"); err != nil || strings.Contains(out, "FTPGATE") {
		t.Fatalf("after the reload the ruleset still names FTPGATE (err %v):\n%s", err, out)
	}
	waitLog(t, gw, "firewall rules of ftpgate were removed by someone else: reinstalled", 1)
	series := `ftpgate_firewall_repairs_total{backend="nftables"}`
	if v, ok := seriesIn(metricsOn(t, h, "127.0.0.1:9131"), series); !ok || v != 1 {
		t.Errorf("%s = %v (found %v), want 1", series, v, ok)
	}
	c.Resume(t) // connects to the data port, RETR, checks the file
}
