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

// Listener ports of TestAccessControls.
const (
	portReadOnly = 2160 // read_only, NLST denied
	portAllowed  = 2161 // allow_clients: the client's network
	portStranger = 2162 // allow_clients: another network
)

// TestAccessControls runs real clients against vsftpd through listeners
// with access controls: a read-only listener refuses uploads, deletions
// and SITE CHMOD (550) and a denied verb (502), while downloads work; a
// listener whose allow_clients leaves the client out answers 421, one
// that includes it serves it. Nothing refused reaches vsftpd.
func TestAccessControls(t *testing.T) {
	listener := func(name string, port, data int, extra string) string {
		return fmt.Sprintf(`  - name: %s
    listen: %s:%d
    upstream: %s:21
    data: {client_ports: %d-%d, server_ports: %d-%d}
%s`, name, netlab.GatewayOut, port, netlab.ServerAddr, 40000+data*100, 40000+data*100+99, 50000+data*100, 50000+data*100+99, extra)
	}
	config := "listeners:\n" +
		listener("read-only", portReadOnly, 60, "    read_only: true\n    deny_commands: [nlst]\n") +
		listener("allowed", portAllowed, 61, "    allow_clients: ["+netlab.ClientAddr+"/32]\n") +
		listener("stranger", portStranger, 62, "    allow_clients: [198.18.200.0/24]\n") +
		"limits: {idle_timeout: 2m, data_timeout: 10s}\nlog: {level: debug, format: text}\nfirewall: " + withPinholes + "\n"
	openGatewayPorts(t, portReadOnly, portAllowed, portStranger)
	gw := startFtpgate(t, config, portReadOnly, portAllowed, portStranger)

	// Downloads through the read-only listener work.
	for _, name := range []string{"curl EPSV", "lftp passive", "ftplib active"} {
		if cell := net4.Do(netlab.ClientByName(name), netlab.GatewayOut, portReadOnly, netlab.OpRetr); cell.Err != nil {
			t.Errorf("%s RETR through the read-only listener: %v\n%s", name, cell.Err, tail(cell.Log, 30))
		}
	}
	// Writes are refused, each with its reply, in one ftplib session.
	victim := filepath.Join(net4.FTPRoot, "upload", "read-only-victim.txt")
	if err := os.WriteFile(victim, []byte("keep me"), 0o666); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(victim)
	script := fmt.Sprintf(`
import ftplib, io
ftp = ftplib.FTP(timeout=30)
ftp.connect(%q, %d)
ftp.login()
def code(f, *a):
    try:
        f(*a)
        return "ok"
    except ftplib.all_errors as e:
        return str(e)[:3]
print("STOR", code(ftp.storbinary, "STOR upload/read-only-new.txt", io.BytesIO(b"x")))
print("DELE", code(ftp.delete, "upload/read-only-victim.txt"))
print("MKD", code(ftp.mkd, "upload/read-only-dir"))
print("RNFR", code(ftp.sendcmd, "RNFR upload/read-only-victim.txt"))
print("SITE", code(ftp.sendcmd, "SITE CHMOD 777 upload/read-only-victim.txt"))
print("NLST", code(ftp.sendcmd, "NLST"))
print("SIZE", code(ftp.size, "pub/big.bin"))
ftp.quit()
`, netlab.GatewayOut, portReadOnly)
	out, errOut, err := net4.Client.Exec(time.Minute, nil, "python3", "-c", script)
	if err != nil {
		t.Fatalf("%v\n%s%s", err, out, errOut)
	}
	for _, want := range []string{"STOR 550", "DELE 550", "MKD 550", "RNFR 550", "SITE 550", "NLST 502", "SIZE ok"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("read-only listener: want %q in:\n%s", want, out)
		}
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "keep me" {
		t.Errorf("the file behind the read-only listener changed: %q, %v", b, err)
	}
	for _, p := range []string{"upload/read-only-new.txt", "upload/read-only-dir"} {
		if _, err := os.Stat(filepath.Join(net4.FTPRoot, p)); err == nil {
			t.Errorf("%s was created through the read-only listener", p)
			os.RemoveAll(filepath.Join(net4.FTPRoot, p))
		}
	}
	if logCount(gw, "reason=policy", 6) < 6 {
		t.Errorf("%d policy refusals logged, want 6", logCount(gw, "reason=policy", 6))
	}

	// allow_clients.
	if cell := net4.Do(netlab.ClientByName("curl EPSV"), netlab.GatewayOut, portAllowed, netlab.OpList); cell.Err != nil {
		t.Errorf("a client inside allow_clients: %v\n%s", cell.Err, tail(cell.Log, 30))
	}
	cell := net4.Do(netlab.ClientByName("curl EPSV"), netlab.GatewayOut, portStranger, netlab.OpList)
	if cell.Err == nil || !strings.Contains(cell.Log, "< 421") {
		t.Errorf("a client outside allow_clients was not refused with 421: %v\n%s", cell.Err, tail(cell.Log, 20))
	}
	if logCount(gw, "reason=allow_clients", 1) == 0 {
		t.Error("the refused client was not logged with reason=allow_clients")
	}
}
