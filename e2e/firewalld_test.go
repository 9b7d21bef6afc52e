//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// TestFirewalld runs Debian's firewalld itself as the gateway's firewall,
// in the gateway's network namespace with a D-Bus system bus of the
// test's own (so that it touches nothing outside): its table inet
// firewalld rejects what its zone does not allow. firewall.backend auto
// recognizes that table and attaches the nftables backend to its
// filter_INPUT and filter_FORWARD chains, whose pinholes let the clients'
// data connections through. Then,
// between a client's PASV and its data connection, `firewall-cmd
// --reload` rebuilds firewalld's table from scratch: ftpgate puts its
// chain, jumps and the waiting pinhole back, counts one repair, and the
// RETR completes.
func TestFirewalld(t *testing.T) {
	h := nftGateway(t, "", portSame) // firewalld makes the ruleset
	dir := t.TempDir()
	bus := filepath.Join(dir, "system_bus_socket")
	busConf := fmt.Sprintf(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="root"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/>
  </policy>
  <includedir>/usr/share/dbus-1/system.d</includedir>
</busconfig>
`, bus)
	if err := os.WriteFile(filepath.Join(dir, "bus.conf"), []byte(busConf), 0o644); err != nil {
		t.Fatal(err)
	}
	// Both processes are killed, by PID, when h closes.
	if _, err := h.Gateway.Start("dbus-daemon", "--nofork", "--config-file", filepath.Join(dir, "bus.conf")); err != nil {
		t.Fatal(err)
	}
	env := "DBUS_SYSTEM_BUS_ADDRESS=unix:path=" + bus
	waitFor(t, 10*time.Second, "the test's D-Bus socket", func() bool { _, err := os.Stat(bus); return err == nil })
	// firewalld in a mount namespace of its own, with a tmpfs as its /run
	// and its log in the test's folder: nothing of it is left on the
	// machine.
	fwd, err := h.Gateway.Start("unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs tmpfs /run && exec env "$0" /usr/sbin/firewalld --nofork --nopid --log-target file --log-file "$1"`,
		env, filepath.Join(dir, "firewalld.log"))
	if err != nil {
		t.Fatal(err)
	}
	firewallCmd := func(args ...string) string {
		t.Helper()
		out, errOut, err := h.Gateway.Exec(30*time.Second, nil, "env", append([]string{env, "firewall-cmd"}, args...)...)
		if err != nil {
			log, _ := os.ReadFile(filepath.Join(dir, "firewalld.log"))
			t.Fatalf("firewall-cmd %s: %v: %s%s\n--- firewalld ---\n%s", strings.Join(args, " "), err, out, errOut,
				tail(fwd.Stdout.String()+fwd.Stderr.String()+string(log), 30))
		}
		return strings.TrimSpace(out)
	}
	waitFor(t, 30*time.Second, "firewalld running", func() bool {
		out, _, err := h.Gateway.Exec(10*time.Second, nil, "env", env, "firewall-cmd", "--state")
		return err == nil && strings.TrimSpace(out) == "running"
	})
	// The control port, as an operator opens it; the data ports are
	// ftpgate's pinholes.
	openControl := func() { firewallCmd("--add-port=21/tcp") }
	openControl()
	if tables, err := h.Gateway.Run("nft", "list", "tables"); err != nil || !strings.Contains(tables, "table inet firewalld") {
		t.Fatalf("firewalld made no table inet firewalld (err %v):\n%s", err, tables)
	}

	config := `
listeners:
  - name: same
    listen: 198.19.0.1:21
    upstream: 198.18.1.2:21
    data: {client_ports: 40000-40099, server_ports: 50000-50099}
log: {level: debug}
metrics: {listen: "127.0.0.1:9131"}
firewall: {backend: auto, pinhole_ttl: 30s}
`
	gw, err := h.StartFtpgate(ftpgateBin, config, portSame)
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, gw)
	// auto recognizes firewalld's table.
	waitLog(t, gw, `table="inet firewalld" chains="[filter_FORWARD filter_INPUT]"`, 1)
	waitLog(t, gw, "firewall backend nftables:", 1)
	for _, c := range netlab.Clients {
		for _, op := range []netlab.Op{netlab.OpList, netlab.OpRetr, netlab.OpStor} {
			if cell := h.Do(c, netlab.GatewayOut, portSame, op); cell.Err != nil {
				t.Errorf("through firewalld: %s %s: %v\n%s", c.Name, op, cell.Err, tail(cell.Log, 30))
			}
		}
	}

	// firewall-cmd --reload between PASV and the data connection.
	paused := startPausedOn(t, h, portSame)
	waitLog(t, gw, "pinhole opened", 1)
	firewallCmd("--reload")
	openControl() // a reload drops runtime settings
	waitLog(t, gw, "firewall rules of ftpgate were removed by someone else: reinstalled", 1)
	if v, ok := seriesIn(metricsOn(t, h, "127.0.0.1:9131"), `ftpgate_firewall_repairs_total{backend="nftables"}`); !ok || v < 1 {
		t.Errorf("ftpgate_firewall_repairs_total = %v (found %v), want at least 1 after firewall-cmd --reload", v, ok)
	}
	paused.Resume(t)
}

// waitFor polls cond every 100 ms until it holds, at most d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
