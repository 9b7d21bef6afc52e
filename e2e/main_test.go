//go:build e2e

// Package e2e holds ftpgate's end-to-end tests: real vsftpd, curl, lftp and
// Python ftplib in network namespaces, with the real kernel's stateful
// firewall between them (see netlab.HomeRouter). They need root, and they
// fail, never skip, when they cannot run.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// The networks and the ftpgate binary, shared by every test of the package.
var (
	net4       *netlab.HomeRouter // the home router: server behind NAT
	edge       *netlab.Network    // the corporate edge: clients inside
	ftpgateBin string
)

// Listener ports of the shared ftpgate: one listener per server_mode.
const (
	portSame    = 21
	portPassive = 2121
	portActive  = 2122
	portSpare   = 2123 // for tests that run their own ftpgate
	portKernel  = 2124 // the kernel data path
	// IPv6 clients to the IPv4 server: family translation.
	portTranslate = 2125 // server_commands auto (EPSV/EPRT to the server)
	portClassic   = 2126 // server_commands classic (PASV/PORT to the server)
)

// matrixConfig is the shared ftpgate's configuration.
const matrixConfig = `
listeners:` + netlab.HomeRouterListeners + `  - name: same6
    listen: "[2001:db8:19::1]:21"
    upstream: "[2001:db8:18:1::2]:21"
    data: {client_ports: 41000-41099, server_ports: 51000-51099}
  - name: kernel6
    listen: "[2001:db8:19::1]:2124"
    upstream: "[2001:db8:18:1::2]:21"
    data: {path: kernel, client_ports: 41100-41199, server_ports: 51100-51199}
  - name: translate
    listen: "[2001:db8:19::1]:2125"
    upstream: 198.18.1.2:21
    data: {client_ports: 41200-41299, server_ports: 51200-51299}
  - name: classic
    listen: "[2001:db8:19::1]:2126"
    upstream: 198.18.1.2:21
    data: {server_commands: classic, client_ports: 41300-41399, server_ports: 51300-51399}
limits: {idle_timeout: 2m, data_timeout: 10s}
log: {level: debug, format: text}
firewall: {backend: iptables, pinhole_ttl: 10s}
metrics: {listen: "127.0.0.1:9121"}
`

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ftpgate-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	ftpgateBin = filepath.Join(dir, "ftpgate")
	build := exec.Command("go", "build", "-o", ftpgateBin, "../cmd/ftpgate")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building ftpgate: %v\n%s", err, out)
		return 1
	}

	h, err := netlab.NewHomeRouter("iptables", portSame, portPassive, portActive, portSpare, portKernel, portTranslate, portClassic)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the network:", err)
		return 1
	}
	net4 = h
	// Remove the networks on every way out: normal return, a signal, or a
	// run that takes too long (go test's own timeout would panic and skip
	// deferred cleanup).
	var once sync.Once
	cleanup := func() {
		once.Do(func() {
			if err := h.Close(); err != nil {
				fmt.Fprintln(os.Stderr, "e2e: cleanup:", err)
			}
			if edge != nil {
				if err := edge.Close(); err != nil {
					fmt.Fprintln(os.Stderr, "e2e: cleanup:", err)
				}
			}
		})
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		cleanup()
		os.Exit(1)
	}()
	watchdog := time.AfterFunc(25*time.Minute, func() {
		fmt.Fprintln(os.Stderr, "e2e: watchdog: tests ran for 25 minutes, cleaning up")
		cleanup()
		os.Exit(1)
	})
	defer watchdog.Stop()
	defer cleanup()
	if edge, err = netlab.NewCorporateEdge("iptables"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the corporate edge:", err)
		return 1
	}

	code := m.Run()
	for _, nw := range []*netlab.Network{h, edge} {
		if n, err := nw.StrayPackets(); err != nil || n > 0 {
			fmt.Fprintf(os.Stderr, "e2e: %d packets to addresses outside the test space (err %v)\n", n, err)
			code = 1
		}
	}
	return code
}
