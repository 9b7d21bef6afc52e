//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// TestDrain: SIGTERM during a transfer lets it finish (drain_timeout is 30 s
// by default), then ftpgate exits cleanly and removes its chains. During
// the drain /readyz answers 503 (load balancers stop sending new clients)
// while /healthz and /metrics still answer.
func TestDrain(t *testing.T) {
	gw := startFtpgate(t, spareConfig(withPinholes)+"metrics: {listen: \"127.0.0.1:9121\"}\n", portSpare)
	probe := func(path string) int { // the HTTP status of GET path
		out, err := net4.Gateway.Run("curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:9121"+path)
		if err != nil {
			t.Errorf("GET %s: %v %s", path, err, out)
		}
		code, _ := strconv.Atoi(strings.TrimSpace(out))
		return code
	}
	// 256 MiB read by the client at 64 MB/s, about 4 s: far more than the
	// socket buffers hold, so ftpgate is relaying when SIGTERM comes.
	done := slowBigRetr(t, "pub/drain-256m.bin")
	waitLog(t, gw, "msg=\"session started\"", 1)
	time.Sleep(time.Second)
	if code := probe("/readyz"); code != 200 {
		t.Errorf("/readyz before SIGTERM: %d", code)
	}
	start := time.Now()
	gw.Cmd.Process.Signal(syscall.SIGTERM)
	waitLog(t, gw, "msg=draining", 1)
	if code := probe("/readyz"); code != 503 {
		t.Errorf("/readyz during the drain: %d, want 503", code)
	}
	for _, path := range []string{"/healthz", "/metrics"} {
		if code := probe(path); code != 200 {
			t.Errorf("%s during the drain: %d, want 200", path, code)
		}
	}
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

// TestDrainSlowReader: SIGTERM while a client has stopped reading its
// replies (thousands of HELPs sent to vsftpd, none read). Before, the
// session held its lock through a write that waited up to idle_timeout
// (10 minutes here), and the drain waited for that lock: ftpgate did not
// exit. Now it exits within drain_timeout and a few seconds, and leaves
// nothing behind.
func TestDrainSlowReader(t *testing.T) {
	config := strings.Replace(spareConfig(withPinholes), "limits: {idle_timeout: 2m, data_timeout: 5s}",
		"limits: {idle_timeout: 10m, data_timeout: 5s, drain_timeout: 2s}", 1)
	gw := startFtpgate(t, config, portSpare)
	stop := filepath.Join(t.TempDir(), "stop")
	script := fmt.Sprintf(`
import socket, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: ftpgate's writes block soon
s.settimeout(10)
s.connect((%q, %d))
f = s.makefile("rb")
f.readline()
s.sendall(b"USER anonymous\r\n"); f.readline()
s.sendall(b"PASS ftpgate@\r\n"); f.readline()
s.setblocking(False)
sent = 0
data = b"HELP\r\n" * 50000
deadline = time.time() + 10
while sent < len(data) and time.time() < deadline:
    try:
        sent += s.send(data[sent:])
    except BlockingIOError:
        time.sleep(0.01)
print("SENT", sent, flush=True)
# Hold the connection, reading nothing, until the test says stop.
for _ in range(600):
    try:
        open(%q)
        break
    except OSError:
        time.sleep(0.1)
`, netlab.GatewayOut, portSpare, stop)
	done := make(chan string, 1)
	go func() {
		out, _, _ := net4.Client.Exec(40*time.Second, nil, "python3", "-c", script)
		done <- out
	}()
	waitLog(t, gw, `msg="session started"`, 1)
	time.Sleep(3 * time.Second) // the replies pile up
	start := time.Now()
	err := gw.Signal(syscall.SIGTERM, 15*time.Second)
	os.WriteFile(stop, nil, 0o644) // the client lets go
	if err != nil {
		t.Fatalf("ftpgate did not exit within 15s of SIGTERM (drain_timeout 2s): %v", err)
	}
	t.Logf("ftpgate exited %s after SIGTERM", time.Since(start).Round(100*time.Millisecond))
	if left := ftpgateLines(t); len(left) > 0 {
		t.Errorf("ftpgate's rules after it stopped:\n%s", strings.Join(left, "\n"))
	}
	t.Logf("client: %s", strings.TrimSpace(<-done))
}
