//go:build e2e

package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDrain: SIGTERM during a transfer lets it finish (drain_timeout is 30 s
// by default), then ftpgate exits cleanly and removes its chains.
func TestDrain(t *testing.T) {
	gw := startFtpgate(t, spareConfig(withPinholes), portSpare)
	// 256 MiB read by the client at 64 MB/s, about 4 s: far more than the
	// socket buffers hold, so ftpgate is relaying when SIGTERM comes.
	done := slowBigRetr(t, "pub/drain-256m.bin")
	waitLog(t, gw, "msg=\"session started\"", 1)
	time.Sleep(time.Second)
	start := time.Now()
	if err := gw.Signal(syscall.SIGTERM, 30*time.Second); err != nil {
		t.Fatalf("ftpgate did not exit cleanly after SIGTERM: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("the transfer running at SIGTERM failed: %v", err)
	}
	t.Logf("ftpgate exited %s after SIGTERM", time.Since(start).Round(100*time.Millisecond))
	if !strings.Contains(gw.Stderr.String(), "msg=draining") {
		t.Error("ftpgate did not log the drain")
	}
	if left := ftpgateLines(t); len(left) > 0 {
		t.Errorf("ftpgate's rules after it stopped:\n%s", strings.Join(left, "\n"))
	}
}
