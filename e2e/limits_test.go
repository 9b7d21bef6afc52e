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

// TestClientAddressHostname: client_address is a DNS name (a home router's
// dynamic DNS name). The gateway namespace resolves it through its own
// hosts file (/etc/netns/<namespace>/hosts, which ip netns exec puts in
// place of /etc/hosts for ftpgate alone); when the name's address changes,
// the next 227 carries the new one, with no reload.
func TestClientAddressHostname(t *testing.T) {
	dir := filepath.Join("/etc/netns", net4.Gateway.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	hosts := filepath.Join(dir, "hosts")
	setName := func(addr string) {
		t.Helper()
		// Rewritten in place: the bind mount keeps the file's inode.
		if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"+addr+" ftp.dyn.test\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	setName(netlab.GatewayOut)
	config := strings.Replace(spareConfig(withPinholes), "data: {client_ports: 40300-40399,",
		"data: {client_address: ftp.dyn.test, client_address_refresh: 1s, client_ports: 40300-40399,", 1)
	gw := startFtpgate(t, config, portSpare)
	waitLog(t, gw, "client_address resolved", 1)

	// A passive download works through the name's address.
	if cell := net4.Do(netlab.ClientByName("curl PASV"), netlab.GatewayOut, portSpare, netlab.OpRetr); cell.Err != nil {
		t.Fatalf("RETR with client_address ftp.dyn.test: %v\n%s", cell.Err, tail(cell.Log, 30))
	}
	pasv := func() string {
		t.Helper()
		script := fmt.Sprintf("import ftplib\nftp = ftplib.FTP(timeout=20)\nftp.connect(%q, %d)\nftp.login()\nprint(ftp.sendcmd('PASV'))\nftp.quit()\n",
			netlab.GatewayOut, portSpare)
		out, errOut, err := net4.Client.Exec(30*time.Second, nil, "python3", "-c", script)
		if err != nil {
			t.Fatalf("PASV: %v\n%s%s", err, out, errOut)
		}
		return strings.TrimSpace(out)
	}
	want := strings.ReplaceAll(netlab.GatewayOut, ".", ",") + ","
	if r := pasv(); !strings.Contains(r, want) {
		t.Errorf("227 %q, want the name's address %s", r, netlab.GatewayOut)
	}

	// The provider hands out another address.
	setName(netlab.GatewayDNAT)
	waitLog(t, gw, "client_address resolved", 2)
	want = strings.ReplaceAll(netlab.GatewayDNAT, ".", ",") + ","
	if r := pasv(); !strings.Contains(r, want) {
		t.Errorf("227 %q after the name changed, want its new address %s", r, netlab.GatewayDNAT)
	}
	if logCount(gw, "was="+netlab.GatewayOut, 1) == 0 {
		t.Error("the change of address was not logged")
	}
}

// TestLoginThrottle: against vsftpd (anonymous only: "USER alice" gets
// 530), two failed logins from the client within the window end its
// session, and its next session is refused with 421.
func TestLoginThrottle(t *testing.T) {
	config := strings.Replace(spareConfig(withPinholes), "limits: {idle_timeout: 2m, data_timeout: 5s}",
		"limits: {idle_timeout: 2m, data_timeout: 5s, login_failures: 2, login_failure_window: 1m, login_ban: 10m}", 1)
	gw := startFtpgate(t, config, portSpare)
	script := fmt.Sprintf(`
import ftplib
for i in range(3):
    ftp = ftplib.FTP(timeout=20)
    try:
        print("GREETING", ftp.connect(%q, %d)[:3])
        ftp.login("alice", "guess%%d" %% i)
        print("LOGIN ok")
    except ftplib.all_errors as e:
        print("ERROR", str(e)[:3])
    ftp.close()
`, netlab.GatewayOut, portSpare)
	out, errOut, err := net4.Client.Exec(time.Minute, nil, "python3", "-c", script)
	if err != nil {
		t.Fatalf("%v\n%s%s", err, out, errOut)
	}
	got := strings.Fields(strings.ReplaceAll(strings.TrimSpace(out), "\n", " "))
	want := strings.Fields("GREETING 220 ERROR 530 GREETING 220 ERROR 530 ERROR 421")
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("got %q, want %q", got, want)
	}
	if logCount(gw, "reason=login_throttle", 2) < 2 {
		t.Error("the throttle and the refused session were not both logged")
	}
}

// TestRateLimit: a download through vsftpd under rate_limit.session
// (4MB/s, 10 MiB) is paced by ftpgate, which counts the time it waited,
// and arrives whole. How close the rate comes to the limit is measured by
// make bench-rate, not here.
func TestRateLimit(t *testing.T) {
	config := strings.Replace(spareConfig(withPinholes), "    upstream: 198.18.1.2:21\n",
		"    upstream: 198.18.1.2:21\n    rate_limit: {session: 4MB}\n", 1) + "metrics: {listen: \"127.0.0.1:9121\"}\n"
	startFtpgate(t, config, portSpare)
	if cell := net4.Do(netlab.ClientByName("curl EPSV"), netlab.GatewayOut, portSpare, netlab.OpRetr); cell.Err != nil {
		t.Fatalf("RETR: %v\n%s", cell.Err, tail(cell.Log, 30))
	}
	series := `ftpgate_data_throttled_seconds_total{listener="spare"}`
	if v, ok := seriesIn(gatewayMetrics(t), series); !ok || v <= 0 {
		t.Errorf("%s = %v (found %v): want a positive number (the relay waited for the limit)", series, v, ok)
	}
}
