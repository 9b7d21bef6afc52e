//go:build e2e

package e2e

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// TestForward: ftpgate as an explicit forward proxy. curl and lftp log in
// as USER anonymous@198.18.1.2 (the allow-listed server) and transfer
// through it; another destination is refused with 421, and so are another
// port of the allowed server (an SMTP relay through USER x@host:25) and a
// NAT64 address that reaches a private IPv4 address through the operator's
// allowed NAT64 prefix.
func TestForward(t *testing.T) {
	config := `
listeners:
  - name: forward
    listen: 198.19.0.1:2123
    mode: forward
    allow_destinations: [198.18.1.2/32, "64:ff9b::/96"]
    data: {client_ports: 40300-40399, server_ports: 50300-50399}
log: {level: debug}
firewall: {backend: netlink}
`
	gw := startFtpgate(t, config, portSpare)
	dir := filepath.Join(net4.Dir, "client")
	os.MkdirAll(dir, 0o755)
	out := filepath.Join(dir, "forward.bin")
	proxy := fmt.Sprintf("ftp://%s:%d/%s", netlab.GatewayOut, portSpare, netlab.BigFile)

	// curl: the destination goes in the user name.
	_, errOut, err := net4.Client.Exec(time.Minute, nil, "curl", "-sS", "-v", "-u", "anonymous@"+netlab.ServerAddr+":ftpgate@", "-o", out, proxy)
	if err != nil {
		t.Fatalf("curl through the forward proxy: %v\n%s", err, tail(errOut, 30))
	}
	if sum, err := netlab.FileSHA256(out); err != nil || sum != net4.BigSHA256 {
		t.Errorf("curl: sha256 %.12s, %v", sum, err)
	}
	// lftp: likewise, with the user@host in -u.
	os.Remove(out)
	script := fmt.Sprintf("set ftp:ssl-allow no; set net:max-retries 1; open -u anonymous@%s,ftpgate@ -p %d %s; get %s -o %s; bye",
		netlab.ServerAddr, portSpare, netlab.GatewayOut, netlab.BigFile, out)
	if _, errOut, err := net4.Client.Exec(time.Minute, nil, "lftp", "-c", script); err != nil {
		t.Fatalf("lftp through the forward proxy: %v\n%s", err, tail(errOut, 30))
	}
	if sum, err := netlab.FileSHA256(out); err != nil || sum != net4.BigSHA256 {
		t.Errorf("lftp: sha256 %.12s, %v", sum, err)
	}
	// A destination outside allow_destinations.
	_, errOut, err = net4.Client.Exec(time.Minute, nil, "curl", "-sS", "-v", "-u", "anonymous@198.18.1.9:ftpgate@", fmt.Sprintf("ftp://%s:%d/", netlab.GatewayOut, portSpare))
	if err == nil || !strings.Contains(errOut, "< 421") {
		t.Errorf("a destination outside the allow-list was not refused with 421: %v\n%s", err, tail(errOut, 20))
	}
	waitLog(t, gw, "reason=allow_list", 1)
	waitLog(t, gw, "destination="+netlab.ServerAddr+":21", 1)
	for _, dst := range []struct{ user, why string }{
		{"anonymous@" + netlab.ServerAddr + ":25", "port 25 is not 21"},
		{"anonymous@[64:ff9b::a00:5]", "reaches the IPv4 address 10.0.0.5"},
	} {
		// In the URL, percent-encoded: curl's -u would split the user at
		// its first colon.
		u := fmt.Sprintf("ftp://%s:ftpgate@%s:%d/", url.QueryEscape(dst.user), netlab.GatewayOut, portSpare)
		_, errOut, err = net4.Client.Exec(time.Minute, nil, "curl", "-sS", "-v", u)
		if err == nil || !strings.Contains(errOut, "< 421") {
			t.Errorf("USER %s was not refused with 421: %v\n%s", dst.user, err, tail(errOut, 20))
		}
		if logCount(gw, dst.why, 1) == 0 {
			t.Errorf("USER %s: no refusal saying %q in ftpgate's log", dst.user, dst.why)
		}
	}
}
