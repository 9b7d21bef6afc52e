//go:build e2e

// Package e2e holds ftpgate's end-to-end tests: real vsftpd, curl, lftp and
// Python ftplib in network namespaces, with the real kernel's stateful
// firewall between them (see netlab.HomeRouter). They need root, and they
// fail, never skip, when they cannot run.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
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

// backends are the pinhole backends that the pinhole tests and the
// matrices run with, one subtest each. Each is named explicitly, never
// auto, whose fallback to iptables could hide a failure of netlink.
var backends = []string{"iptables", "netlink"}

// defaultBackend is the backend of every other test: netlink, what auto
// picks on a kernel that has ipset and nftables.
const defaultBackend = "netlink"

// forEachBackend runs f as one subtest per backend, named after it.
func forEachBackend(t *testing.T, f func(t *testing.T, backend string)) {
	t.Helper()
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) { f(t, backend) })
	}
}

// matrixConfig is the shared ftpgate's configuration, with the given
// pinhole backend.
func matrixConfig(backend string) string {
	return `
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
firewall: ` + pinholeFirewall(backend) + `
metrics: {listen: "127.0.0.1:9121"}
`
}

// pinholeFirewall is the firewall section of the end-to-end
// configurations, with the given backend.
func pinholeFirewall(backend string) string {
	return "{backend: " + backend + ", pinhole_ttl: 10s}"
}

// withPinholes is the firewall section of the tests that are not about a
// particular backend.
var withPinholes = pinholeFirewall(defaultBackend)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	// The tests read the netlink backend's sets and tables with these (in
	// the gateway namespaces only): missing, the tests fail.
	for _, tool := range []string{"ipset", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %s not found (packages ipset, nftables): %v\n", tool, err)
			return 1
		}
	}
	rootBefore, err := rootTraces()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: reading the root namespace's firewall:", err)
		return 1
	}
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
	if after, err := rootTraces(); err != nil || after != rootBefore {
		fmt.Fprintf(os.Stderr, "e2e: the root namespace's firewall changed (err %v):\nbefore:\n%s\nafter:\n%s\n", err, rootBefore, after)
		code = 1
	}
	return code
}

// rootTraces lists what of ftpgate the root namespace's firewall holds:
// chains and rules, ipsets and nftables tables named FTPGATE. The tests
// only read it, before and after, to check that they never touched it.
func rootTraces() (string, error) {
	var b strings.Builder
	for _, argv := range [][]string{{"iptables-save"}, {"ip6tables-save"}, {"ipset", "list", "-n"}, {"nft", "list", "tables"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).Output()
		cancel()
		if err != nil {
			return "", fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
		}
		for line := range strings.Lines(string(out)) {
			if strings.Contains(line, "FTPGATE") {
				b.WriteString(argv[0] + ": " + line)
			}
		}
	}
	return b.String(), nil
}
