//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// TestMachineListings: MLSD (a data connection) and MLST (a control reply)
// through ftpgate against the two servers that have them (vsftpd has not),
// passive and active, IPv4 and IPv6.
func TestMachineListings(t *testing.T) {
	for _, s := range interopServers {
		if s.kind == netlab.Vsftpd {
			continue
		}
		srv, err := net4.StartServer(s.kind, s.port)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Stop() })
	}
	openInteropPorts(t)
	var listeners []int
	for _, s := range interopServers {
		listeners = append(listeners, s.listener)
	}
	startFtpgate(t, interopConfig(), listeners...)
	for _, s := range interopServers {
		if s.kind == netlab.Vsftpd {
			continue
		}
		for _, host := range []string{netlab.GatewayOut, netlab.GatewayOut6} {
			for _, passive := range []string{"True", "False"} {
				name := fmt.Sprintf("%s/%s/passive=%s", s.kind, host, passive)
				t.Run(name, func(t *testing.T) {
					script := fmt.Sprintf(`
import ftplib
ftp = ftplib.FTP(timeout=30)
ftp.connect(%q, %d)
ftp.login()
ftp.set_pasv(%s)
names = [n for n, facts in ftp.mlsd("pub")]
assert "big.bin" in names, names
mlst = ftp.sendcmd("MLST pub/big.bin")
assert mlst.startswith("250") and "size=%d" in mlst.lower(), mlst
print("OK MLSD", names, "| MLST", mlst.splitlines()[1].strip())
ftp.quit()
`, host, s.listener, passive, netlab.BigSize)
					out, errOut, err := net4.Client.Exec(time.Minute, nil, "python3", "-c", script)
					if err != nil || !strings.Contains(out, "OK MLSD") {
						t.Fatalf("%v\n%s%s", err, out, errOut)
					}
					t.Log(strings.TrimSpace(out))
				})
			}
		}
	}
}
