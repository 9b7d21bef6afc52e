//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// TestPlainDNATFails shows the problem ftpgate solves: through a plain port
// forward of port 21, without an ALG, the server's 227 carries its private
// address and the stateful firewall drops every data connection.
func TestPlainDNATFails(t *testing.T) {
	for _, name := range []string{"curl EPSV", "curl PASV strict", "curl PASV", "curl PORT", "lftp passive", "ftplib passive strict"} {
		c := netlab.ClientByName(name)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cell := net4.Do(c, netlab.GatewayDNAT, 21, netlab.OpList)
			if cell.Err == nil {
				t.Fatalf("LIST through a plain DNAT worked; the firewall should have dropped the data connection\n%s", cell.Log)
			}
			t.Logf("failed as expected after %s: %v", cell.Elapsed.Round(time.Millisecond), cell.Err)
		})
	}
}

// TestMatrix runs every client and operation through ftpgate, with each
// pinhole backend: on the relay path in each server_mode, and on the kernel
// path. Then it checks that ftpgate holds no data listener, no pinhole and
// no more sockets than before, and that its metrics count what it did.
func TestMatrix(t *testing.T) {
	forEachBackend(t, matrix)
}

// matrix is TestMatrix with one backend.
func matrix(t *testing.T, backend string) {
	gw := startFtpgate(t, matrixConfig(backend), portSame, portPassive, portActive, portKernel)
	waitLog(t, gw, "firewall backend "+backend+":", 1)
	baseline := openFDs(t, gw)
	kernelCells := 0
	cells := map[string]int{}   // cells run per listener
	audited := map[string]int{} // RETR and STOR cells per "data path/verb"
	for _, mode := range []struct {
		name string
		host string
		port int
	}{
		{"ipv4/relay/same", netlab.GatewayOut, portSame},
		{"ipv4/relay/passive", netlab.GatewayOut, portPassive},
		{"ipv4/relay/active", netlab.GatewayOut, portActive},
		{"ipv4/kernel/same", netlab.GatewayOut, portKernel},
		{"ipv6/relay/same", netlab.GatewayOut6, portSame},
		{"ipv6/kernel/same", netlab.GatewayOut6, portKernel},
		// An IPv6 client, the IPv4 server: EPSV/EPRT to the server, and
		// PASV/PORT for a server that knows no RFC 2428.
		{"ipv6-to-ipv4/auto", netlab.GatewayOut6, portTranslate},
		{"ipv6-to-ipv4/classic", netlab.GatewayOut6, portClassic},
	} {
		t.Run(mode.name, func(t *testing.T) {
			for _, c := range netlab.Clients {
				for _, op := range netlab.Ops {
					t.Run(strings.ReplaceAll(c.Name, " ", "_")+"/"+string(op), func(t *testing.T) {
						if mode.port == portKernel {
							kernelCells++
						}
						cells[listenerName(mode.host, mode.port)]++
						dataPath := "relay"
						if mode.port == portKernel {
							dataPath = "kernel"
						}
						switch op {
						case netlab.OpRetr, netlab.OpResume:
							audited[dataPath+"/RETR"]++
						case netlab.OpStor:
							audited[dataPath+"/STOR"]++
						}
						cell := net4.Do(c, mode.host, mode.port, op)
						if cell.Err != nil {
							t.Fatalf("%v\n--- client log ---\n%s", cell.Err, tail(cell.Log, 60))
						}
					})
				}
			}
		})
	}
	assertNoLeftovers(t, gw, baseline)
	checkMetrics(t, cells)
	checkTransferLines(t, gw, audited)
	// The start-up line and the metrics say which backend runs.
	if logCount(gw, `msg="ftpgate started" version=`, 1) == 0 || logCount(gw, `firewall="`+backend+" (", 1) == 0 {
		t.Errorf("no start-up line with the version and the %s backend", backend)
	}
	out := gatewayMetrics(t)
	for _, want := range []string{`ftpgate_firewall_backend_info{backend="` + backend + `"`, "ftpgate_config_last_reload_successful 1",
		"ftpgate_session_duration_seconds_count{", "ftpgate_transfer_duration_seconds_count{"} {
		if !strings.Contains(out, want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
	// Each kernel-path data connection was seen in conntrack, and its
	// pinhole removed then, not at a timeout.
	if n, want := logCount(gw, "outcome=forwarded", kernelCells), kernelCells; n < want {
		t.Errorf("%d kernel-path transfers seen forwarded, want %d", n, want)
		for line := range strings.Lines(gw.Stderr.String()) {
			if strings.Contains(line, "data_path=kernel") && !strings.Contains(line, "outcome=forwarded") {
				t.Logf("not forwarded: %s", strings.TrimSpace(line))
			}
		}
	}
}

// checkTransferLines checks the audit trail: on both data paths, one
// transfer line per RETR and STOR, with the user (every matrix client logs
// in as anonymous), the command and the file as separate fields, the
// direction, the server's final 226, and on the relay path the bytes.
func checkTransferLines(t *testing.T, gw *netlab.Proc, want map[string]int) {
	t.Helper()
	got := map[string]int{}
	for line := range strings.Lines(gw.Stderr.String()) {
		if !strings.Contains(line, "msg=transfer") {
			continue
		}
		field := func(k string) string {
			_, v, _ := strings.Cut(line, " "+k+"=")
			v, _, _ = strings.Cut(v, " ")
			return strings.Trim(v, `"`)
		}
		verb, dataPath := field("command"), field("data_path")
		// Clients that change directory first (curl) name the file alone.
		var file, dir string
		switch verb {
		case "RETR":
			file, dir = path.Base(netlab.BigFile), "download"
		case "STOR":
			file, dir = "", "upload"
		default:
			continue
		}
		name := field("path")
		ok := field("user") == "anonymous" && name != "" && strings.HasSuffix(name, file) &&
			field("direction") == dir && field("code") == "226" && field("outcome") != "" &&
			(dataPath == "kernel" || field("bytes") != "0")
		if !ok {
			t.Errorf("transfer line without its audit fields: %s", strings.TrimSpace(line))
			continue
		}
		got[dataPath+"/"+verb]++
	}
	for k, n := range want {
		if got[k] < n {
			t.Errorf("%d complete %s transfer lines, want %d (one per cell)", got[k], k, n)
		}
	}
}

// listenerName is the name, in matrixConfig, of the listener at host:port.
func listenerName(host string, port int) string {
	names := map[int]string{portSame: "same", portPassive: "passive", portActive: "active", portKernel: "kernel",
		portTranslate: "translate", portClassic: "classic"}
	if strings.Contains(host, ":") && (port == portSame || port == portKernel) {
		return names[port] + "6"
	}
	return names[port]
}

// checkMetrics scrapes ftpgate's /metrics in the gateway (and /healthz,
// /readyz) and checks that the counters match what the matrix did: one
// session per cell and listener, data bytes, rewrites.
func checkMetrics(t *testing.T, cells map[string]int) {
	t.Helper()
	get := func(path string) string {
		out, err := net4.Gateway.Run("curl", "-sS", "--fail", "--max-time", "10", "http://127.0.0.1:9121"+path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return out
	}
	if got := get("/healthz"); strings.TrimSpace(got) != "ok" {
		t.Errorf("/healthz = %q", got)
	}
	if got := get("/readyz"); strings.TrimSpace(got) != "ready" {
		t.Errorf("/readyz = %q", got)
	}
	metrics := get("/metrics")
	value := func(series string) float64 {
		for line := range strings.Lines(metrics) {
			if name, v, ok := strings.Cut(strings.TrimSpace(line), " "); ok && name == series {
				f, _ := strconv.ParseFloat(v, 64)
				return f
			}
		}
		return 0
	}
	for listener, n := range cells {
		series := fmt.Sprintf(`ftpgate_sessions_total{listener=%q,outcome="ok"}`, listener)
		if got := value(series); got < float64(n) {
			t.Errorf("%s = %v, want at least %d (the cells run)", series, got, n)
		}
	}
	// Per listener: the data series of a relay listener count its bytes,
	// and every listener's series exist (at zero if nothing happened).
	var toClient, rewrites float64
	for listener := range cells {
		toClient += value(fmt.Sprintf(`ftpgate_data_bytes_total{direction="to_client",listener=%q}`, listener))
		rewrites += value(fmt.Sprintf(`ftpgate_rewrites_total{kind="227",listener=%q}`, listener)) +
			value(fmt.Sprintf(`ftpgate_rewrites_total{kind="229",listener=%q}`, listener))
		if s := fmt.Sprintf(`ftpgate_rejections_total{listener=%q,reason="theft"} `, listener); !strings.Contains(metrics, s) {
			t.Errorf("%s is missing: a listener's series exist from its start", s)
		}
		// Every transfer has ended, on either path.
		for _, path := range []string{"relay", "kernel"} {
			s := fmt.Sprintf(`ftpgate_transfers_active{listener=%q,path=%q}`, listener, path)
			if got := value(s); got != 0 || !strings.Contains(metrics, s+" ") {
				t.Errorf("%s = %v after the cells, want 0", s, got)
			}
		}
	}
	if toClient < netlab.BigSize {
		t.Errorf("ftpgate_data_bytes_total to_client = %v over the listeners, want at least one 10 MiB file", toClient)
	}
	if rewrites == 0 {
		t.Error("no 227 or 229 rewrites counted")
	}
	if !strings.Contains(metrics, "ftpgate_pinhole_op_duration_seconds_bucket") || !strings.Contains(metrics, "ftpgate_build_info") {
		t.Error("pinhole latency histogram or build info missing from /metrics")
	}
}

// startFtpgate runs ftpgate in the home router's gateway with config and
// stops it when the test ends.
func startFtpgate(t *testing.T, config string, ports ...int) *netlab.Proc {
	t.Helper()
	p, err := net4.StartFtpgate(ftpgateBin, config, ports...)
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, p)
	return p
}

// stopOnCleanup stops ftpgate (SIGTERM) when the test ends; the test fails
// if it did not exit cleanly or panicked. Its log is printed when the test
// fails.
func stopOnCleanup(t *testing.T, p *netlab.Proc) {
	t.Cleanup(func() {
		// A test that killed ftpgate on purpose has seen to it already.
		if !p.Exited() {
			if err := p.Signal(syscall.SIGTERM, 10*time.Second); err != nil {
				t.Errorf("ftpgate did not stop cleanly: %v", err)
			}
		}
		if t.Failed() {
			t.Logf("--- ftpgate log ---\n%s", tail(p.Stderr.String(), 200))
		}
		if strings.Contains(p.Stderr.String(), "panic") {
			t.Errorf("ftpgate panicked:\n%s", tail(p.Stderr.String(), 100))
		}
	})
}

// openFDs counts the sockets the ftpgate process has open. Pipes are left
// out: Go keeps a pool of pipes for splice(2), released by the garbage
// collector, so their number is not a leak signal.
func openFDs(t *testing.T, p *netlab.Proc) int {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(p.PID()) + "/fd"
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("reading ftpgate's descriptors: %v", err)
	}
	n := 0
	for _, e := range entries {
		if target, err := os.Readlink(dir + "/" + e.Name()); err == nil && strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	return n
}

// assertNoLeftovers waits (bounded) for ftpgate's sessions on the home
// router to wind down, and checks that no data port is left listening, no
// pinhole is left, and the socket count is back to baseline.
func assertNoLeftovers(t *testing.T, p *netlab.Proc, baseline int) {
	t.Helper()
	assertNoLeftoversOn(t, net4, p, baseline)
}

// assertNoLeftoversOn is assertNoLeftovers on network nw.
func assertNoLeftoversOn(t *testing.T, nw *netlab.Network, p *netlab.Proc, baseline int) {
	t.Helper()
	var fds int
	var extra []int
	deadline := time.Now().Add(10 * time.Second)
	for {
		fds = openFDs(t, p)
		ports, err := nw.Listening(nw.Gateway, "")
		if err != nil {
			t.Fatal(err)
		}
		extra = nil
		for _, port := range ports {
			if port >= 40000 {
				extra = append(extra, port)
			}
		}
		if (fds <= baseline && len(extra) == 0) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(extra) > 0 {
		t.Errorf("data ports still listening after all sessions ended: %v", extra)
	}
	if fds > baseline {
		t.Errorf("ftpgate holds %d sockets, %d before the sessions", fds, baseline)
	}
	waitNoPinholesOn(t, nw)
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d lines]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// TestKernelPathBurst opens many kernel-path data connections at once:
// short listings from concurrent sessions, each over within milliseconds,
// so that sessions end while their connection's conntrack event may still
// be queued. Every transfer must be logged forwarded, seen by the event or,
// when it came too late, by a lookup in the conntrack table; and no
// pinhole may be left.
func TestKernelPathBurst(t *testing.T) {
	gw := startFtpgate(t, matrixConfig(defaultBackend), portKernel)
	waitLog(t, gw, "firewall backend "+defaultBackend+":", 1)
	const rounds, width = 4, 16
	clients := []netlab.Client{netlab.ClientByName("ftplib passive"), netlab.ClientByName("curl EPSV")}
	for round := range rounds {
		var wg sync.WaitGroup
		errs := make(chan error, width)
		for i := range width {
			c := clients[i%len(clients)]
			wg.Go(func() {
				if cell := net4.Do(c, netlab.GatewayOut, portKernel, netlab.OpList); cell.Err != nil {
					errs <- fmt.Errorf("round %d, %s: %w\n%s", round, c.Name, cell.Err, tail(cell.Log, 20))
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
	waitNoPinholes(t)
	// A transfer line comes after its pinhole is gone.
	forwarded := logCount(gw, "outcome=forwarded", rounds*width)
	log := gw.Stderr.String()
	byLookup := strings.Count(log, "seen_by=lookup")
	if want := rounds * width; forwarded != want {
		t.Errorf("%d kernel-path transfers logged forwarded, want %d", forwarded, want)
		for line := range strings.Lines(log) {
			if strings.Contains(line, "data_path=kernel") && !strings.Contains(line, "outcome=forwarded") {
				t.Logf("not forwarded: %s", strings.TrimSpace(line))
			}
		}
	}
	t.Logf("%d transfers forwarded, %d of them found by a conntrack lookup (event late or lost)", forwarded, byLookup)
}
