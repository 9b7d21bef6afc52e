//go:build e2e

package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// TestProxyProtocol: a listener behind a load balancer (played by the thief
// namespace, 198.19.1.0/24) takes the client address from its PROXY protocol
// header; a client connecting directly gets the greeting at once (FTP
// servers speak first: ftpgate does not wait for a header from a source it
// would not believe), and the same header from it is refused.
func TestProxyProtocol(t *testing.T) {
	config := `
listeners:
  - name: behind-lb
    listen: 198.19.0.1:2123
    upstream: 198.18.1.2:21
    proxy_protocol: true
    trusted_proxies: [198.19.1.0/24]
    data: {client_ports: 40300-40399, server_ports: 50300-50399}
log: {level: debug}
firewall: {backend: netlink}
`
	gw := startFtpgate(t, config, portSpare)
	// The header says the client is 198.19.5.5:40001 (an address that is
	// only written in the header, never dialled).
	session := func(ns *netlab.NS) string {
		script := fmt.Sprintf(`
import socket
s = socket.create_connection((%q, %d), timeout=10)
s.sendall(b"PROXY TCP4 198.19.5.5 198.19.0.1 40001 %d\r\n")
f = s.makefile("rb")
try:
    line = f.readline().decode().strip()
    print(line or "CLOSED")
    s.sendall(b"QUIT\r\n")
except OSError as e:
    print("CLOSED", e)
`, netlab.GatewayOut, portSpare, portSpare)
		out, errOut, err := ns.Exec(30*time.Second, nil, "python3", "-c", script)
		if err != nil {
			t.Fatalf("%v: %s", err, errOut)
		}
		return strings.TrimSpace(out)
	}
	if got := session(net4.Thief); !strings.HasPrefix(got, "220") {
		t.Errorf("through the trusted load balancer: %q, want the 220 greeting", got)
	}
	waitLog(t, gw, "client=198.19.5.5:40001", 1)
	// A direct client that sends nothing: the greeting within 3 s (before,
	// it waited 10 s for a header).
	greeting := fmt.Sprintf(`
import socket
s = socket.create_connection((%q, %d), timeout=3)
print(s.makefile("rb").readline().decode().strip())
s.sendall(b"QUIT\r\n")
`, netlab.GatewayOut, portSpare)
	if out, errOut, err := net4.Client.Exec(30*time.Second, nil, "python3", "-c", greeting); err != nil || !strings.HasPrefix(out, "220") {
		t.Errorf("a direct client's greeting: %q, %v\n%s", out, err, errOut)
	}
	// The same header from it: refused and the connection closed (the
	// server's greeting may come first or not: the 421 does not wait).
	script := fmt.Sprintf(`
import socket
s = socket.create_connection((%q, %d), timeout=10)
s.sendall(b"PROXY TCP4 198.19.5.5 198.19.0.1 40001 %d\r\n")
f = s.makefile("rb")
print(f.readline().decode().strip())
print(f.readline().decode().strip())
print(f.readline().decode().strip() or "CLOSED")
`, netlab.GatewayOut, portSpare, portSpare)
	out, errOut, err := net4.Client.Exec(30*time.Second, nil, "python3", "-c", script)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	refused := slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "421") })
	if err != nil || !refused || lines[len(lines)-1] != "CLOSED" {
		t.Errorf("a header from an untrusted source: %q, %v, want a 421 and the connection closed\n%s", out, err, errOut)
	}
	waitLog(t, gw, "reason=proxy_protocol", 1)
	if strings.Contains(gw.Stderr.String(), "client=198.19.5.5:40001 session=2") {
		t.Error("the untrusted header was believed")
	}
}
