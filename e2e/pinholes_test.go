//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// otherProgram's rules stand for another program's firewall rules on the
// gateway: ftpgate must leave them alone.
const otherProgram = `
iptables -N OTHERPROG
iptables -A OTHERPROG -s 198.19.9.9 -j DROP
iptables -A INPUT -s 198.19.9.8 -m comment --comment other-program -j DROP
iptables -A FORWARD -s 198.19.9.8 -m comment --comment other-program -j DROP
iptables -t nat -A PREROUTING -s 198.19.9.7 -m comment --comment other-program -j RETURN
iptables -t nat -A POSTROUTING -s 198.19.9.7 -m comment --comment other-program -j RETURN
`

const removeOtherProgram = `
iptables -D INPUT -s 198.19.9.8 -m comment --comment other-program -j DROP
iptables -D FORWARD -s 198.19.9.8 -m comment --comment other-program -j DROP
iptables -t nat -D PREROUTING -s 198.19.9.7 -m comment --comment other-program -j RETURN
iptables -t nat -D POSTROUTING -s 198.19.9.7 -m comment --comment other-program -j RETURN
iptables -F OTHERPROG
iptables -X OTHERPROG
`

// TestPinholeLifecycle follows ftpgate's rules through a run: chains and one
// jump each at start, one exact pinhole per announced data port, none once
// the connection is made or the session ends (also after 200 sessions in a
// row), nothing of ftpgate after it stops, and another program's rules
// untouched throughout.
func TestPinholeLifecycle(t *testing.T) {
	if err := net4.Gateway.Script(otherProgram); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { net4.Gateway.Script(removeOtherProgram) })
	before := othersRules(t)

	gw := startFtpgate(t, spareConfig(withPinholes), portSpare)
	rules := gatewayRules(t)
	for _, chain := range []string{"INPUT", "FORWARD", "PREROUTING", "POSTROUTING", "OUTPUT"} {
		jump := regexp.MustCompile(`(?m)^-A ` + chain + ` .*-j FTPGATE-` + chain + `$`)
		if n := len(jump.FindAllString(rules, -1)); n != 1 {
			t.Errorf("%d jumps from %s to FTPGATE-%s, want 1:\n%s", n, chain, chain, rules)
		}
		if !strings.Contains(rules, ":FTPGATE-"+chain+" ") {
			t.Errorf("chain FTPGATE-%s missing", chain)
		}
	}

	c := startPaused(t, portSpare)
	holes := pinholes(t)
	want := fmt.Sprintf("-A FTPGATE-INPUT -s %s/32 -d %s/32 -p tcp -m tcp --dport %s -m conntrack --ctstate NEW -m comment --comment \"ftpgate s=",
		netlab.ClientAddr, netlab.GatewayOut, c.Port)
	if len(holes) != 1 || !strings.HasPrefix(holes[0], want) || !strings.HasSuffix(holes[0], "-j ACCEPT") {
		t.Fatalf("pinholes while the client holds the 227:\n%s\nwant one like\n%s... -j ACCEPT", strings.Join(holes, "\n"), want)
	}
	c.Resume(t)
	waitNoPinholes(t)

	out, errOut, err := net4.Client.Exec(5*time.Minute, nil, "python3", net4.PythonClient(),
		netlab.GatewayOut, strconv.Itoa(portSpare), "passive", "sessions", "200", "-", "--strict")
	if err != nil || !strings.Contains(out, "SESSIONS 200") {
		t.Fatalf("200 sessions: %v\n%s%s", err, out, errOut)
	}
	waitNoPinholes(t)
	if n := strings.Count(gw.Stderr.String(), "msg=transfer"); n < 201 {
		t.Errorf("ftpgate logged %d transfers, want at least 201", n)
	}

	if err := gw.Signal(syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatalf("stopping ftpgate: %v", err)
	}
	if left := ftpgateLines(t); len(left) > 0 {
		t.Errorf("ftpgate's rules after it stopped:\n%s", strings.Join(left, "\n"))
	}
	if after := othersRules(t); after != before {
		t.Errorf("another program's rules changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestPinholeTTL: a client that never connects to its data port; the reaper
// removes the pinhole after pinhole_ttl, although the session still runs.
func TestPinholeTTL(t *testing.T) {
	gw := startFtpgate(t, spareConfig("{backend: iptables, pinhole_ttl: 2s}"), portSpare)
	c := startPaused(t, portSpare)
	start := time.Now()
	if n := len(pinholes(t)); n != 1 {
		t.Fatalf("%d pinholes, want 1", n)
	}
	waitNoPinholes(t)
	if d := time.Since(start); d < time.Second {
		t.Errorf("pinhole gone after %s, before its TTL of 2s", d)
	}
	if !strings.Contains(gw.Stderr.String(), "pinhole expired") {
		t.Error("ftpgate did not log the expiry")
	}
	syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
}

// TestCrashRecovery: ftpgate killed with SIGKILL leaves its pinhole behind;
// the next start flushes it and transfers work; `ftpgate cleanup` removes
// the chains and jumps of a killed ftpgate.
func TestCrashRecovery(t *testing.T) {
	config := spareConfig(withPinholes)
	first := startFtpgate(t, config, portSpare)
	c := startPaused(t, portSpare)
	first.Signal(syscall.SIGKILL, 5*time.Second)
	syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	if n := len(pinholes(t)); n != 1 {
		t.Fatalf("after SIGKILL: %d pinholes, want the 1 left behind", n)
	}

	second := startFtpgate(t, config, portSpare)
	if holes := pinholes(t); len(holes) != 0 {
		t.Errorf("after restart: leftover pinholes not flushed:\n%s", strings.Join(holes, "\n"))
	}
	if cell := net4.Do(netlab.ClientByName("curl EPSV"), netlab.GatewayOut, portSpare, netlab.OpRetr); cell.Err != nil {
		t.Errorf("transfer after restart: %v", cell.Err)
	}
	second.Signal(syscall.SIGKILL, 5*time.Second)
	if len(ftpgateLines(t)) == 0 {
		t.Fatal("no chains left behind by a killed ftpgate")
	}
	path := filepath.Join(net4.Dir, "cleanup.yaml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range 2 { // idempotent
		if out, err := net4.Gateway.Run(ftpgateBin, "cleanup", "--config", path); err != nil {
			t.Fatalf("ftpgate cleanup (run %d): %v\n%s", i+1, err, out)
		}
		if left := ftpgateLines(t); len(left) > 0 {
			t.Errorf("after ftpgate cleanup (run %d):\n%s", i+1, strings.Join(left, "\n"))
		}
	}
}

// TestLegacyVariant runs transfers through a gateway whose firewall is
// iptables-legacy, with firewall.variant legacy: the pinholes go to the
// legacy tables, none to nf_tables.
func TestLegacyVariant(t *testing.T) {
	h, err := netlab.NewHomeRouter("iptables-legacy", portSame)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	config := `
listeners:
  - name: legacy
    listen: 198.19.0.1:21
    upstream: 198.18.1.2:21
log: {level: debug}
firewall: {backend: iptables, variant: legacy}
`
	gw, err := h.StartFtpgate(ftpgateBin, config, portSame)
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Signal(syscall.SIGTERM, 10*time.Second)
	for _, name := range []string{"curl EPSV", "curl PORT", "ftplib passive strict", "ftplib active"} {
		for _, op := range []netlab.Op{netlab.OpRetr, netlab.OpStor} {
			if cell := h.Do(netlab.ClientByName(name), netlab.GatewayOut, portSame, op); cell.Err != nil {
				t.Errorf("%s %s: %v\n%s", name, op, cell.Err, tail(cell.Log, 30))
			}
		}
	}
	legacy, err := h.GatewayRules()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(legacy, ":FTPGATE-INPUT") {
		t.Errorf("no FTPGATE chains in the legacy tables:\n%s", legacy)
	}
	nft, err := h.Gateway.Run("iptables-nft-save")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(nft, "FTPGATE") {
		t.Errorf("ftpgate wrote to nf_tables although the variant is legacy:\n%s", nft)
	}
	if err := gw.Signal(syscall.SIGTERM, 10*time.Second); err != nil {
		t.Errorf("stopping ftpgate: %v\n%s", err, tail(gw.Stderr.String(), 50))
	}
	if legacy, _ = h.GatewayRules(); strings.Contains(legacy, "FTPGATE") {
		t.Errorf("ftpgate's chains remain after it stopped:\n%s", legacy)
	}
}

// gatewayRules is the home router gateway's iptables-save output.
func gatewayRules(t *testing.T) string {
	t.Helper()
	return gatewayRulesOn(t, net4)
}

// gatewayRulesOn is nw's gateway's iptables-save output.
func gatewayRulesOn(t *testing.T, nw *netlab.Network) string {
	t.Helper()
	out, err := nw.GatewayRules()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ftpgateLines are the lines of the home router gateway's rules that name
// ftpgate's chains.
func ftpgateLines(t *testing.T) []string {
	t.Helper()
	return ftpgateLinesOn(t, net4)
}

func ftpgateLinesOn(t *testing.T, nw *netlab.Network) []string {
	t.Helper()
	var lines []string
	for line := range strings.Lines(gatewayRulesOn(t, nw)) {
		if strings.Contains(line, "FTPGATE") {
			lines = append(lines, strings.TrimSpace(line))
		}
	}
	return lines
}

// pinholes are the rules inside ftpgate's chains on the home router.
func pinholes(t *testing.T) []string {
	t.Helper()
	return pinholesOn(t, net4)
}

func pinholesOn(t *testing.T, nw *netlab.Network) []string {
	t.Helper()
	var holes []string
	for _, line := range ftpgateLinesOn(t, nw) {
		if strings.HasPrefix(line, "-A FTPGATE-") {
			holes = append(holes, line)
		}
	}
	return holes
}

// waitNoPinholes waits up to 10 s until ftpgate's chains on the home router
// are empty.
func waitNoPinholes(t *testing.T) {
	t.Helper()
	waitNoPinholesOn(t, net4)
}

func waitNoPinholesOn(t *testing.T, nw *netlab.Network) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		holes := pinholesOn(t, nw)
		if len(holes) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pinholes remain:\n%s", strings.Join(holes, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// othersRules is the gateway's rule set without ftpgate's lines, comments
// and counters.
func othersRules(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for line := range strings.Lines(gatewayRules(t)) {
		if strings.HasPrefix(line, "#") || strings.Contains(line, "FTPGATE") {
			continue
		}
		b.WriteString(counters.ReplaceAllString(line, ""))
	}
	return b.String()
}
