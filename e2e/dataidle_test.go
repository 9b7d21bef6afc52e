//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// TestDataIdleTimeout: a client that opens its STOR data connection to
// vsftpd through ftpgate, sends 64 KiB and then stalls (without closing)
// is cut off after data_idle_timeout (2 s here): its data connection is
// reset, vsftpd reports the failed upload on the control connection, the
// transfer is logged outcome=idle, and the session goes on (a LIST after
// it works).
func TestDataIdleTimeout(t *testing.T) {
	config := strings.Replace(spareConfig(withPinholes), "limits: {idle_timeout: 2m, data_timeout: 5s}",
		"limits: {idle_timeout: 2m, data_timeout: 5s, data_idle_timeout: 2s}", 1)
	gw := startFtpgate(t, config, portSpare)
	script := fmt.Sprintf(`
import ftplib, socket, time
ftp = ftplib.FTP(timeout=30)
ftp.connect(%q, %d)
ftp.login()
ftp.voidcmd("TYPE I")
dc = ftp.transfercmd("STOR upload/stalled.bin")
dc.sendall(b"x" * 65536)
start = time.time()
dc.settimeout(20)
try:
    got = dc.recv(1)
    print("DATA", "closed" if got == b"" else "bytes")
except OSError as e:
    print("DATA", type(e).__name__)
print("CUT AFTER %%.1f" %% (time.time() - start))
try:
    print("REPLY", ftp.voidresp())
except ftplib.all_errors as e:
    print("REPLY", str(e)[:3])
print("LIST", len(ftp.nlst("pub")) > 0)
ftp.quit()
`, netlab.GatewayOut, portSpare)
	out, errOut, err := net4.Client.Exec(time.Minute, nil, "python3", "-c", script)
	if err != nil {
		t.Fatalf("%v\n%s%s", err, out, errOut)
	}
	t.Log(strings.TrimSpace(out))
	var cut float64
	for line := range strings.Lines(out) {
		fmt.Sscanf(line, "CUT AFTER %g", &cut)
	}
	// Not before data_idle_timeout; and by ftpgate, not the client's own
	// 20 s timeout (vsftpd's data_connection_timeout is 300 s).
	if cut < 1.5 || strings.Contains(out, "DATA TimeoutError") || strings.Contains(out, "DATA timeout") {
		t.Errorf("the stalled data connection was not cut by data_idle_timeout (2 s):\n%s", out)
	}
	for _, want := range []string{"REPLY 4", "LIST True"} {
		if !strings.Contains(out, want) {
			t.Errorf("want %q in:\n%s", want, out)
		}
	}
	if logCount(gw, "outcome=idle", 1) == 0 || logCount(gw, "data connection idle: closed", 1) == 0 {
		t.Error("the idle data connection was not logged")
	}
}
