//go:build e2e

package e2e

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// TestReload: SIGHUP during a transfer. A changed listener starts anew (on
// the old one's socket: the address is never unbound) while the running
// transfer goes on untouched; a file that fails the checks is refused and
// the old configuration stays; a listener moved to an address it cannot
// bind keeps running where it was.
func TestReload(t *testing.T) {
	base := spareConfig(withPinholes) + "metrics: {listen: \"127.0.0.1:9121\"}\n"
	gw := startFtpgate(t, base, portSpare)
	path := gw.Cmd.Args[len(gw.Cmd.Args)-1] // the --config file
	// 256 MiB read at 64 MB/s, about 4 s: the transfer runs across the
	// reload.
	done := slowBigRetr(t, "pub/reload-256m.bin")
	waitLog(t, gw, `msg="session started"`, 1)
	time.Sleep(500 * time.Millisecond)

	// Changed limits: the listener is retired and started anew.
	changed := strings.Replace(base, "idle_timeout: 2m", "idle_timeout: 3m", 1)
	if err := os.WriteFile(path, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	gw.Cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, gw, "configuration reloaded", 1)
	if err := <-done; err != nil {
		t.Errorf("the transfer running during the reload failed: %v", err)
	}
	if cell := net4.Do(netlab.ClientByName("ftplib passive strict"), netlab.GatewayOut, portSpare, netlab.OpStor); cell.Err != nil {
		t.Errorf("a transfer after the reload failed: %v", cell.Err)
	}

	// A bad file is refused; the listener keeps working.
	if err := os.WriteFile(path, []byte(changed+"colour: red\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	gw.Cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, gw, "reload refused", 1)
	if cell := net4.Do(netlab.ClientByName("curl PORT"), netlab.GatewayOut, portSpare, netlab.OpList); cell.Err != nil {
		t.Errorf("a transfer after a refused reload failed: %v", cell.Err)
	}
	if gw.Exited() {
		t.Fatal("ftpgate exited on a reload")
	}

	// A listener moved to an address the gateway does not have: before,
	// the old one was retired first and the listener stayed down.
	moved := strings.Replace(changed, "listen: 198.19.0.1:2123", "listen: 198.19.0.77:2123", 1)
	if moved == changed {
		t.Fatal("the test's configuration has no listen: 198.19.0.1:2123")
	}
	if err := os.WriteFile(path, []byte(moved), 0o644); err != nil {
		t.Fatal(err)
	}
	gw.Cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, gw, "the listener runs on as it was", 1)
	if cell := net4.Do(netlab.ClientByName("curl EPSV"), netlab.GatewayOut, portSpare, netlab.OpList); cell.Err != nil {
		t.Errorf("a transfer after a reload that could not bind failed: %v", cell.Err)
	}
	metrics, err := net4.Gateway.Run("curl", "-sS", "--fail", "--max-time", "10", "http://127.0.0.1:9121/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	for _, want := range []string{`ftpgate_config_reloads_total{result="ok"} 1`, `ftpgate_config_reloads_total{result="refused"} 1`, `ftpgate_config_reloads_total{result="failed"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
