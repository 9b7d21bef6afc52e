//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// Listener ports of ftpgate on the corporate edge, both transparent.
const (
	portEdgeRelay   = 2121
	portEdgeKernel  = 2122
	portEdgeRelay6  = 2123
	portEdgeKernel6 = 2124
)

// edgeConfig: transparent listeners on the gateway's inside address, one
// per data path, allowed to reach the server only, with the given pinhole
// backend.
func edgeConfig(backend string) string {
	return `
listeners:
  - name: edge-relay
    listen: 198.18.1.1:2121
    mode: transparent
    allow_destinations: [198.19.0.10/32]
    data: {client_ports: 40000-40099, server_ports: 50000-50099}
  - name: edge-kernel
    listen: 198.18.1.1:2122
    mode: transparent
    allow_destinations: [198.19.0.10/32]
    data: {path: kernel, client_ports: 40100-40199, server_ports: 50100-50199}
  - name: edge-relay6
    listen: "[2001:db8:18:1::1]:2123"
    mode: transparent
    allow_destinations: ["2001:db8:19::10/128"]
    data: {client_ports: 41000-41099, server_ports: 51000-51099}
  - name: edge-kernel6
    listen: "[2001:db8:18:1::1]:2124"
    mode: transparent
    allow_destinations: ["2001:db8:19::10/128"]
    data: {path: kernel, client_ports: 41100-41199, server_ports: 51100-51199}
limits: {idle_timeout: 2m, data_timeout: 10s}
log: {level: debug, format: text}
firewall: ` + pinholeFirewall(backend) + `
`
}

// TestEdgeWithoutFtpgateFails: a client inside a corporate edge reaches the
// server's port 21, but its data connections are dropped, passive and
// active, as through any stateful firewall without an ALG.
func TestEdgeWithoutFtpgateFails(t *testing.T) {
	for _, name := range []string{"curl EPSV", "curl PASV strict", "curl PORT", "lftp passive", "ftplib active"} {
		c := netlab.ClientByName(name)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cell := edge.Do(c, netlab.EdgeServerAddr, 21, netlab.OpList)
			if cell.Err == nil {
				t.Fatalf("LIST across the edge firewall worked without ftpgate\n%s", cell.Log)
			}
			t.Logf("failed as expected after %s: %v", cell.Elapsed.Round(time.Millisecond), cell.Err)
		})
	}
}

// TestEdgeMatrix: with port 21 redirected to ftpgate, the whole client
// matrix reaches the server on the Internet, with transparent relay and with
// the transparent kernel path, with each pinhole backend. The clients use
// the server's own address; they never learn that ftpgate is there.
func TestEdgeMatrix(t *testing.T) {
	forEachBackend(t, edgeMatrix)
}

// edgeMatrix is TestEdgeMatrix with one backend.
func edgeMatrix(t *testing.T, backend string) {
	gw := startEdgeFtpgate(t, backend)
	waitLog(t, gw, "firewall backend "+backend+":", 1)
	baseline := openFDs(t, gw)
	kernelCells := 0
	for _, path := range []struct {
		name   string
		port   int
		server string
	}{
		{"ipv4/transparent/relay", portEdgeRelay, netlab.EdgeServerAddr},
		{"ipv4/transparent/kernel", portEdgeKernel, netlab.EdgeServerAddr},
		{"ipv6/transparent/relay", portEdgeRelay6, netlab.EdgeServerAddr6},
		{"ipv6/transparent/kernel", portEdgeKernel6, netlab.EdgeServerAddr6},
	} {
		t.Run(path.name, func(t *testing.T) {
			undo, err := edge.Intercept(path.port, strings.Contains(path.server, ":"))
			if err != nil {
				t.Fatal(err)
			}
			defer undo()
			for _, c := range netlab.Clients {
				for _, op := range netlab.Ops {
					t.Run(strings.ReplaceAll(c.Name, " ", "_")+"/"+string(op), func(t *testing.T) {
						if strings.Contains(path.name, "kernel") {
							kernelCells++
						}
						cell := edge.Do(c, path.server, 21, op)
						if cell.Err != nil {
							t.Fatalf("%v\n--- client log ---\n%s", cell.Err, tail(cell.Log, 60))
						}
					})
				}
			}
		})
	}
	if n, want := logCount(gw, "outcome=forwarded", kernelCells), kernelCells; n < want {
		t.Errorf("%d kernel-path transfers seen forwarded, want %d", n, want)
	}
	log := gw.Stderr.String()
	if !strings.Contains(log, "destination="+netlab.EdgeServerAddr+":21") && !strings.Contains(log, "destination=["+netlab.EdgeServerAddr6+"]:21") {
		t.Error("sessions did not go to the original destination")
	}
	assertNoLeftoversOn(t, edge, gw, baseline)
}

// TestEdgeAllowList: a destination outside allow_destinations, and a
// connection to the listener itself, are refused with 421 and logged.
func TestEdgeAllowList(t *testing.T) {
	gw := startEdgeFtpgate(t, defaultBackend)
	undo, err := edge.Intercept(portEdgeRelay, false)
	if err != nil {
		t.Fatal(err)
	}
	defer undo()
	for _, target := range []string{"198.19.0.11:21", netlab.EdgeGatewayIn + ":" + strconv.Itoa(portEdgeRelay)} {
		script := fmt.Sprintf(`
import socket
s = socket.create_connection((%q, %s), timeout=10)
print(s.makefile("rb").readline().decode().strip())
`, strings.Split(target, ":")[0], strings.Split(target, ":")[1])
		out, errOut, err := edge.Client.Exec(30*time.Second, nil, "python3", "-c", script)
		if err != nil {
			t.Fatalf("connecting to %s: %v %s", target, err, errOut)
		}
		if !strings.HasPrefix(out, "421 ") {
			t.Errorf("%s: got %q, want a 421 reply", target, out)
		}
	}
	waitLog(t, gw, "reason=allow_list", 2)
}

// TestKernelPathCopiesNothing: during a 1 GiB RETR on the kernel path,
// ftpgate holds no data socket at all (only the two control connections):
// the kernel forwards the data. The same transfer on the relay path shows
// ftpgate's two data sockets, so the check can tell the two apart. CPU time
// of both is reported, not asserted.
func TestKernelPathCopiesNothing(t *testing.T) {
	big := filepath.Join(net4.FTPRoot, "pub", "1g.bin")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil { // sparse: the disk is not the bottleneck
		t.Fatal(err)
	}
	f.Close()
	defer os.Remove(big)

	gw := startFtpgate(t, matrixConfig(defaultBackend), portSame, portPassive, portActive, portKernel)
	// retr runs a 1 GiB RETR (limited to ~4 s, so that it can be watched)
	// and returns the most sockets ftpgate held at once during it and the
	// CPU ticks ftpgate spent.
	retr := func(port int, limit string) (sockets int, cpuTicks int64) {
		cpu0 := procCPU(t, gw.PID())
		done := make(chan error, 1)
		go func() {
			url := fmt.Sprintf("ftp://%s:%d/pub/1g.bin", netlab.GatewayOut, port)
			out, errOut, err := net4.Client.Exec(5*time.Minute, nil, "curl", "-sS", "--limit-rate", limit,
				"-o", "/dev/null", "-w", "%{size_download}", url)
			if err == nil && strings.TrimSpace(out) != strconv.Itoa(1<<30) {
				err = fmt.Errorf("got %q bytes: %s", out, errOut)
			}
			done <- err
		}()
		for {
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("1 GiB RETR through port %d: %v", port, err)
				}
				return sockets, procCPU(t, gw.PID()) - cpu0
			case <-time.After(200 * time.Millisecond):
				sockets = max(sockets, establishedSockets(t, gw.PID()))
			}
		}
	}
	kernelSockets, kernelCPU := retr(portKernel, "256M")
	relaySockets, relayCPU := retr(portSame, "256M")
	t.Logf("1 GiB RETR: kernel path: ftpgate held at most %d connections, spent %d CPU ticks; relay path: %d connections, %d CPU ticks",
		kernelSockets, kernelCPU, relaySockets, relayCPU)
	if kernelSockets != 2 {
		t.Errorf("kernel path: ftpgate held %d connections during the transfer, want 2 (the control connections only)", kernelSockets)
	}
	if relaySockets != 4 {
		t.Errorf("relay path: ftpgate held %d connections during the transfer, want 4 (control and data, both sides)", relaySockets)
	}
	if logCount(gw, `command=RETR path=1g.bin direction=download data_path=kernel mode=passive`, 1) == 0 {
		t.Error("no kernel-path transfer line for the RETR")
	}
}

// establishedSockets counts the established TCP connections of process pid
// in the home router's gateway.
func establishedSockets(t *testing.T, pid int) int {
	t.Helper()
	out, err := net4.Gateway.Run("ss", "-Htnp", "state", "established")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(out, fmt.Sprintf("pid=%d,", pid))
}

// startEdgeFtpgate runs ftpgate with backend on the corporate edge's
// gateway.
func startEdgeFtpgate(t *testing.T, backend string) *netlab.Proc {
	t.Helper()
	p, err := edge.StartFtpgate(ftpgateBin, edgeConfig(backend), portEdgeRelay, portEdgeKernel)
	if err == nil {
		err = edge.WaitListening(edge.Gateway, fmt.Sprintf("[%s]:%d", netlab.EdgeGatewayIn6, portEdgeKernel6), 10*time.Second)
	}
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, p)
	return p
}

// procCPU is a process's user and system CPU time in clock ticks.
func procCPU(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("reading /proc/%d/stat: %v", pid, err)
	}
	// Fields after the command name in parentheses: utime is 14th, stime 15th.
	s := string(b)
	f := strings.Fields(s[strings.LastIndex(s, ")")+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return u + k
}
