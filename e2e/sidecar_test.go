//go:build e2e

package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// TestSidecar plays a Kubernetes sidecar deployment: a pod whose legacy
// vsftpd listens on 127.0.0.1 only, ftpgate in front of it without firewall
// privileges (relay, backend none) advertising the Service's address and
// ports, and a node that plays the Service by DNAT of port 21 and of a
// passive range that it remaps (30000-30009 on the Service, 40000-40009 in
// the pod). Clients outside pass the core matrix, in plain FTP and in FTPS
// (TLS offloaded for the legacy server, as the sidecar example does).
func TestSidecar(t *testing.T) {
	h, err := netlab.NewSidecar("iptables")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	files, err := h.MakeTLSFiles()
	if err != nil {
		t.Fatal(err)
	}
	// As deploy/examples/sidecar.yaml: TLS offloaded for the legacy server,
	// optional for the clients, session reuse required.
	config := fmt.Sprintf(`
listeners:
  - name: sidecar
    listen: %s:21
    upstream: 127.0.0.1:21
    tls: {mode: explicit, cert: %s, key: %s, required: false, session_reuse: required}
    data:
      client_address: %s
      client_ports: %d-%d
      advertise_ports: %d-%d
      server_ports: 50000-50009
log: {level: debug}
firewall: {backend: none}
`, netlab.SidecarPodAddr, files.GatewayCert, files.GatewayKey, netlab.SidecarService,
		netlab.SidecarPodPorts, netlab.SidecarPodPorts+netlab.SidecarPorts-1,
		netlab.SidecarServicePorts, netlab.SidecarServicePorts+netlab.SidecarPorts-1)
	gw, err := h.StartFtpgate(ftpgateBin, config, 21)
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, gw)
	clients := slices.Clone(netlab.Clients)
	for _, c := range netlab.FTPSClients(files.CA) {
		if !strings.HasPrefix(c.Name, "ftplib") { // no session reuse: refused with required
			clients = append(clients, c)
		}
	}
	for _, c := range clients {
		for _, op := range netlab.Ops {
			t.Run(strings.ReplaceAll(c.Name, " ", "_")+"/"+string(op), func(t *testing.T) {
				cell := h.Do(c, netlab.SidecarService, 21, op)
				if cell.Err != nil {
					t.Fatalf("%v\n--- client log ---\n%s", cell.Err, tail(cell.Log, 40))
				}
				if strings.Contains(cell.Log, "227 Entering Passive Mode (198,19,0,1,") {
					// The 227 names the Service and one of its ports.
					if !strings.Contains(cell.Log, fmt.Sprintf("(198,19,0,1,%d,", netlab.SidecarServicePorts/256)) {
						t.Errorf("the 227 does not name a Service port:\n%s", tail(cell.Log, 20))
					}
				}
			})
		}
	}
	if n, err := h.StrayPackets(); err != nil || n > 0 {
		t.Errorf("%d packets outside the test space (%v)", n, err)
	}
}
