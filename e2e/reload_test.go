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

// TestReload: SIGHUP during a transfer. A changed listener starts anew while
// the running transfer goes on untouched; a file that fails the checks is
// refused and the old configuration stays.
func TestReload(t *testing.T) {
	gw := startFtpgate(t, spareConfig(withPinholes), portSpare)
	path := gw.Cmd.Args[len(gw.Cmd.Args)-1] // the --config file
	// 256 MiB read at 64 MB/s, about 4 s: the transfer runs across the
	// reload.
	done := slowBigRetr(t, "pub/reload-256m.bin")
	waitLog(t, gw, `msg="session started"`, 1)
	time.Sleep(500 * time.Millisecond)

	// Changed limits: the listener is retired and started anew.
	changed := strings.Replace(spareConfig(withPinholes), "idle_timeout: 2m", "idle_timeout: 3m", 1)
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
}
