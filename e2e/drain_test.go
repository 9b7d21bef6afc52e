//go:build e2e

package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// TestDrain: SIGTERM during a transfer lets it finish (drain_timeout is 30 s
// by default), then ftpgate exits cleanly and removes its chains.
func TestDrain(t *testing.T) {
	gw := startFtpgate(t, spareConfig(withPinholes), portSpare)
	done := make(chan netlab.Cell, 1)
	go func() {
		c := netlab.ClientByName("curl EPSV")
		c.Args = []string{"--limit-rate", "2M"} // 10 MiB: about five seconds
		done <- net4.Do(c, netlab.GatewayOut, portSpare, netlab.OpRetr)
	}()
	waitLog(t, gw, "msg=\"session started\"", 1)
	time.Sleep(time.Second)
	start := time.Now()
	if err := gw.Signal(syscall.SIGTERM, 30*time.Second); err != nil {
		t.Fatalf("ftpgate did not exit cleanly after SIGTERM: %v", err)
	}
	if cell := <-done; cell.Err != nil {
		t.Errorf("the transfer running at SIGTERM failed: %v\n%s", cell.Err, tail(cell.Log, 20))
	}
	t.Logf("ftpgate exited %s after SIGTERM", time.Since(start).Round(100*time.Millisecond))
	if !strings.Contains(gw.Stderr.String(), "msg=draining") {
		t.Error("ftpgate did not log the drain")
	}
	if left := ftpgateLines(t); len(left) > 0 {
		t.Errorf("ftpgate's rules after it stopped:\n%s", strings.Join(left, "\n"))
	}
}
