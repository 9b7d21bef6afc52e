//go:build e2e

package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// TestNftablesAuto: firewall.backend auto looks at the host's ruleset. On
// a gateway whose only firewall is a native inet table with a drop policy
// it picks the nftables backend, attached to that table, says why, and
// transfers pass; on the shared gateway, whose firewall is iptables-nft's,
// it picks an iptables-based backend and says so too.
func TestNftablesAuto(t *testing.T) {
	t.Run("native", func(t *testing.T) {
		h := nftGateway(t, nativeFirewall, portSame)
		loaded := listFilter(t, h)
		config := `
listeners:
  - name: same
    listen: 198.19.0.1:21
    upstream: 198.18.1.2:21
    data: {client_ports: 40000-40099, server_ports: 50000-50099}
log: {level: debug}
firewall: {backend: auto, pinhole_ttl: 10s}
`
		gw, err := h.StartFtpgate(ftpgateBin, config, portSame)
		if err != nil {
			t.Fatal(err)
		}
		stopOnCleanup(t, gw)
		waitLog(t, gw, "the host's firewall is native nftables", 1)
		waitLog(t, gw, `table="inet filter" chains="[forward input]"`, 1)
		waitLog(t, gw, "firewall backend nftables:", 1)
		for _, name := range []string{"curl EPSV", "ftplib active"} {
			if cell := h.Do(netlab.ClientByName(name), netlab.GatewayOut, portSame, netlab.OpRetr); cell.Err != nil {
				t.Errorf("%s RETR: %v\n%s", name, cell.Err, tail(cell.Log, 30))
			}
		}
		if err := gw.Signal(syscall.SIGTERM, 10*time.Second); err != nil {
			t.Errorf("stopping ftpgate: %v", err)
		}
		if after := listFilter(t, h); after != loaded {
			t.Errorf("ftpgate left the operator's table changed:\n--- loaded\n%s\n--- after\n%s", loaded, after)
		}
	})
	t.Run("iptables", func(t *testing.T) {
		gw := startFtpgate(t, spareConfig(pinholeFirewall("auto")), portSpare)
		waitLog(t, gw, "no native nftables table drops by policy", 1)
		if strings.Contains(gw.Stderr.String(), "firewall backend nftables") {
			t.Error("auto chose the nftables backend on a gateway whose firewall is iptables-nft's")
		}
		if cell := net4.Do(netlab.ClientByName("curl EPSV"), netlab.GatewayOut, portSpare, netlab.OpRetr); cell.Err != nil || !strings.Contains(gw.Stderr.String(), "outcome=ok") {
			t.Errorf("RETR: %v\n%s", cell.Err, tail(cell.Log, 30))
		}
	})
}
