//go:build e2e

package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// nativeFirewall is a gateway firewall written in nftables alone, as
// Debian's /etc/nftables.conf is: one inet table whose input and forward
// chains drop what they do not know. There is no iptables rule at all, so
// only the nftables backend's pinholes can let data connections through.
const nativeFirewall = `table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		iif lo accept
		ct state established,related accept
		meta l4proto ipv6-icmp accept
		tcp dport { 21, 2124 } ct state new accept
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		meta l4proto ipv6-icmp accept
	}
}
`

// operatorLines are the rules that an operator adds to the input and
// forward chains for attach sets (docs/pinholes.md).
var operatorLines = map[string][]string{
	"input": {
		"ct state new ip saddr . ip daddr . tcp dport @FTPGATE-in4 accept",
		"ct state new ct status dnat ip saddr . tcp dport @FTPGATE-rdr4 accept",
		"ct state new ip6 saddr . ip6 daddr . tcp dport @FTPGATE-in6 accept",
		"ct state new ct status dnat ip6 saddr . tcp dport @FTPGATE-rdr6 accept",
	},
	"forward": {
		"ct state new ip saddr . ip daddr . tcp dport @FTPGATE-fwd4 accept",
		"ct state new ct status dnat ip saddr . ip daddr . tcp dport @FTPGATE-dnat4 accept",
		"ct state new ip6 saddr . ip6 daddr . tcp dport @FTPGATE-fwd6 accept",
		"ct state new ct status dnat ip6 saddr . ip6 daddr . tcp dport @FTPGATE-dnat6 accept",
	},
}

// TestNftablesBackend runs the client matrix through ftpgate on a gateway
// of its own whose only firewall is nativeFirewall, with backend nftables in
// both attach modes, on the relay and kernel paths, IPv4 and IPv6; and
// checks that ftpgate leaves the operator's table as it found it.
func TestNftablesBackend(t *testing.T) {
	h, err := netlab.NewHomeRouter("iptables", portSame, portKernel)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, mode := range []struct{ name, nftables string }{
		{"chain", "{table: inet filter, chains: [input, forward]}"},
		{"sets", "{table: inet filter, attach: sets}"},
	} {
		t.Run(mode.name, func(t *testing.T) {
			loadRuleset(t, h, nativeFirewall)
			loaded := listFilter(t, h)
			config := `
listeners:
  - name: same
    listen: 198.19.0.1:21
    upstream: 198.18.1.2:21
    data: {client_ports: 40000-40099, server_ports: 50000-50099}
  - name: kernel
    listen: 198.19.0.1:2124
    upstream: 198.18.1.2:21
    data: {path: kernel, client_ports: 40400-40499, server_ports: 50400-50499}
  - name: same6
    listen: "[2001:db8:19::1]:21"
    upstream: "[2001:db8:18:1::2]:21"
    data: {client_ports: 41000-41099, server_ports: 51000-51099}
log: {level: debug}
firewall: {backend: nftables, pinhole_ttl: 10s, nftables: ` + mode.nftables + `}
`
			gw, err := h.StartFtpgate(ftpgateBin, config, portSame, portKernel)
			if err != nil {
				t.Fatal(err)
			}
			stopOnCleanup(t, gw)
			waitLog(t, gw, "firewall backend nftables:", 1)
			if mode.name == "sets" {
				if got := listFilter(t, h); strings.Contains(got, "chain FTPGATE") || strings.Contains(got, "jump") {
					t.Errorf("attach sets changed a chain:\n%s", got)
				}
				// The pinhole is in the set, but no rule of the
				// operator's matches it yet: the data connection is
				// dropped.
				if cell := h.Do(netlab.ClientByName("curl EPSV"), netlab.GatewayOut, portSame, netlab.OpList); cell.Err == nil {
					t.Errorf("LIST worked before the operator matched ftpgate's sets\n%s", cell.Log)
				}
				for chain, lines := range operatorLines {
					for _, l := range lines {
						if _, err := h.Gateway.Run("nft", append([]string{"add", "rule", "inet", "filter", chain}, strings.Fields(l)...)...); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
			withLines := listFilter(t, h)
			for _, target := range []struct {
				name string
				host string
				port int
			}{
				{"ipv4/relay", netlab.GatewayOut, portSame},
				{"ipv4/kernel", netlab.GatewayOut, portKernel},
				{"ipv6/relay", netlab.GatewayOut6, portSame},
			} {
				// The whole client matrix: every client, every operation.
				for _, c := range netlab.Clients {
					for _, op := range netlab.Ops {
						if cell := h.Do(c, target.host, target.port, op); cell.Err != nil {
							t.Errorf("%s %s %s: %v\n%s", target.name, c.Name, op, cell.Err, tail(cell.Log, 30))
						}
					}
				}
			}
			if err := gw.Signal(syscall.SIGTERM, 10*time.Second); err != nil {
				t.Errorf("stopping ftpgate: %v", err)
			}
			after := listFilter(t, h)
			if mode.name == "chain" && after != loaded {
				t.Errorf("ftpgate left the operator's table changed:\n--- loaded\n%s\n--- after\n%s", loaded, after)
			}
			if mode.name == "sets" && after != withLines {
				t.Errorf("ftpgate changed the operator's table:\n--- with the operator's lines\n%s\n--- after\n%s", withLines, after)
			}
			if tables, err := h.Gateway.Run("nft", "list", "tables"); err != nil || strings.Contains(tables, "FTPGATE") {
				t.Errorf("ftpgate's NAT tables remain (err %v):\n%s", err, tables)
			}
		})
	}
}

// nftGateway is a home-router network of the test's own, closed when the
// test ends, whose gateway's firewall is ruleset alone (loadRuleset).
func nftGateway(t *testing.T, ruleset string, ports ...int) *netlab.Network {
	t.Helper()
	h, err := netlab.NewHomeRouter("iptables", ports...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	loadRuleset(t, h, ruleset)
	return h
}

// loadRuleset replaces the gateway's whole nftables ruleset by ruleset
// (empty: none), as `nft -f` of an operator's file does: the iptables-nft
// rules go with it, so no iptables table is left to accept anything.
func loadRuleset(t *testing.T, h *netlab.Network, ruleset string) {
	t.Helper()
	if _, err := h.Gateway.Run("nft", "flush", "ruleset"); err != nil {
		t.Fatal(err)
	}
	if ruleset == "" {
		return
	}
	if _, stderr, err := h.Gateway.Exec(30*time.Second, []byte(ruleset), "nft", "-f", "-"); err != nil {
		t.Fatalf("loading the gateway's ruleset: %v: %s", err, stderr)
	}
}

// listFilter returns the gateway's `nft list table inet filter`, with the
// sets' elements left out: an element that expires between two listings
// is no change of the operator's.
func listFilter(t *testing.T, h *netlab.Network) string {
	t.Helper()
	out, err := h.Gateway.Run("nft", "-t", "list", "table", "inet", "filter")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestNftablesNativeOtherBackendsFail shows the problem the nftables
// backend solves: on a gateway whose only firewall is nativeFirewall,
// ftpgate with the netlink backend (pinholes accepted in ip filter, by
// iptables rules matching ipsets) opens its pinholes, and the native
// table's policy drops the data connection all the same.
func TestNftablesNativeOtherBackendsFail(t *testing.T) {
	h := nftGateway(t, nativeFirewall, portSame)
	config := `
listeners:
  - name: same
    listen: 198.19.0.1:21
    upstream: 198.18.1.2:21
    data: {client_ports: 40000-40099, server_ports: 50000-50099}
log: {level: debug}
firewall: {backend: netlink, pinhole_ttl: 10s}
`
	gw, err := h.StartFtpgate(ftpgateBin, config, portSame)
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, gw)
	waitLog(t, gw, "firewall backend netlink:", 1)
	cell := h.Do(netlab.ClientByName("curl EPSV"), netlab.GatewayOut, portSame, netlab.OpList)
	if cell.Err == nil {
		t.Fatalf("LIST worked with the netlink backend behind a native drop-policy table: the nftables backend would not be needed\n%s", cell.Log)
	}
	waitLog(t, gw, "pinhole opened", 1)
	t.Logf("failed as expected after %s, with the pinhole open: %v", cell.Elapsed.Round(time.Millisecond), cell.Err)
}
