//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// TestProtocol walks through the rest of the protocol against the real
// vsftpd, through ftpgate, on both data paths, passive and active, IPv4 and
// IPv6: FEAT filtered, AUTH refused, REST+STOR, APPE, STOU, NLST, SIZE, MDTM,
// STAT, and ABOR in the middle of a transfer (426 then 226, in order).
// (vsftpd has no MLSD, MLST or REIN; those pass through ftpgate unchanged
// and are covered by the proxy's tests against its scripted server.)
func TestProtocol(t *testing.T) {
	big := filepath.Join(net4.FTPRoot, "pub", "256m.bin")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(256 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	defer os.Remove(big)

	gw := startFtpgate(t, matrixConfig(defaultBackend), portSame, portPassive, portActive, portKernel)
	baseline := openFDs(t, gw)
	for _, tc := range []struct {
		name, host string
		port       int
	}{
		{"ipv4/relay", netlab.GatewayOut, portSame},
		{"ipv4/kernel", netlab.GatewayOut, portKernel},
		{"ipv6/relay", netlab.GatewayOut6, portSame},
		{"ipv6/kernel", netlab.GatewayOut6, portKernel},
	} {
		for _, mode := range []string{"passive", "active"} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				out, errOut, err := net4.Client.Exec(2*time.Minute, nil, "python3", net4.PythonClient(),
					tc.host, strconv.Itoa(tc.port), mode, "protocol", "pub/256m.bin", "-")
				if err != nil {
					t.Fatalf("%v\n%s%s", err, out, errOut)
				}
				for _, step := range []string{"FEAT", "AUTH", "REST+STOR", "APPE", "STOU", "NLST", "MDTM", "STAT", "ABOR"} {
					if !strings.Contains(out, "OK "+step) {
						t.Errorf("step %s missing:\n%s%s", step, out, errOut)
					}
				}
				t.Logf("%s", strings.TrimSpace(out))
			})
		}
	}
	assertNoLeftovers(t, gw, baseline)
}
