//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// TestAuditTrail: during a long download through vsftpd (curl at 64 MB/s,
// 256 MiB: about 4 s) ftpgate's metrics, labelled with the listener, move
// while the transfer runs; afterwards the transfer line carries the user,
// the command and the path, and log.xferlog holds the classic line of the
// download and of an upload.
func TestAuditTrail(t *testing.T) {
	xferlog := filepath.Join(t.TempDir(), "xferlog")
	config := strings.Replace(spareConfig(withPinholes), "log: {level: debug, format: text}",
		fmt.Sprintf("log: {level: debug, format: text, xferlog: %q}", xferlog), 1) +
		"metrics: {listen: \"127.0.0.1:9121\"}\n"
	gw := startFtpgate(t, config, portSpare)

	series := func(name string) float64 {
		t.Helper()
		v, ok := seriesIn(gatewayMetrics(t), name)
		if !ok {
			t.Fatalf("no series %s in /metrics", name)
		}
		return v
	}
	bytesSeries := `ftpgate_data_bytes_total{direction="to_client",listener="spare"}`
	activeSeries := `ftpgate_transfers_active{listener="spare",path="relay"}`

	// Far more than the socket buffers hold: ftpgate relays all along.
	done := slowBigRetr(t, "pub/audit-256m.bin")
	waitLog(t, gw, "verb=RETR", 1)
	time.Sleep(time.Second)
	first, active := series(bytesSeries), series(activeSeries)
	time.Sleep(time.Second)
	second := series(bytesSeries)
	if active != 1 || second <= first || second >= 256<<20 {
		t.Errorf("during the download: %s %v then %v (want growing, below the file's size), %s = %v (want 1)",
			bytesSeries, first, second, activeSeries, active)
	}
	if err := <-done; err != nil {
		t.Fatalf("the download: %v", err)
	}
	t.Logf("bytes counted 1 s and 2 s into the download: %.0f, %.0f", first, second)

	up := netlab.ClientByName("curl EPSV")
	if cell := net4.Do(up, netlab.GatewayOut, portSpare, netlab.OpStor); cell.Err != nil {
		t.Fatalf("STOR: %v\n%s", cell.Err, tail(cell.Log, 30))
	}
	waitLog(t, gw, "command=STOR", 1)
	if logCount(gw, "user=anonymous command=RETR path=audit-256m.bin direction=download data_path=relay mode=passive", 1) == 0 ||
		logCount(gw, "bytes=268435456", 1) == 0 {
		t.Error("no transfer line with the user, the command and the path of the download")
	}

	b, err := os.ReadFile(xferlog)
	if err != nil {
		t.Fatalf("reading the xferlog: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	want := []string{
		fmt.Sprintf(" %s 268435456 audit-256m.bin b _ o a anonymous ftp 0 * c", netlab.ClientAddr),
		" b _ i a anonymous ftp 0 * c",
	}
	if len(lines) != len(want) {
		t.Fatalf("xferlog holds %d lines, want %d:\n%s", len(lines), len(want), b)
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) || len(strings.Fields(lines[i])) != 18 {
			t.Errorf("xferlog line %d: %q, want 18 fields containing %q", i+1, lines[i], w)
		}
	}
}

// TestUpstreamFailover: a reverse listener with two upstreams, proftpd
// first and vsftpd second. While proftpd runs, sessions get its greeting;
// once it is stopped, they go to vsftpd (a download through it checked),
// and ftpgate logs the dead one at WARN and counts the failed dial.
func TestUpstreamFailover(t *testing.T) {
	first, err := net4.StartServer(netlab.ProFTPD, 2200)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			first.Stop()
		}
	})
	config := strings.Replace(spareConfig(withPinholes), "    upstream: 198.18.1.2:21\n",
		"    upstreams: [198.18.1.2:2200, 198.18.1.2:21]\n    upstream_hold_down: 1m\n", 1) +
		"metrics: {listen: \"127.0.0.1:9121\"}\n"
	gw := startFtpgate(t, config, portSpare)
	greeting := func() string {
		t.Helper()
		script := fmt.Sprintf("import ftplib\nftp = ftplib.FTP(timeout=20)\nprint(ftp.connect(%q, %d))\nftp.close()\n",
			netlab.GatewayOut, portSpare)
		out, errOut, err := net4.Client.Exec(30*time.Second, nil, "python3", "-c", script)
		if err != nil {
			t.Fatalf("connecting: %v\n%s%s", err, out, errOut)
		}
		return strings.TrimSpace(out)
	}
	if g := greeting(); !strings.Contains(g, "ProFTPD") {
		t.Fatalf("with both up, greeting %q, want the first upstream's (ProFTPD)", g)
	}
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped = true
	if g := greeting(); !strings.Contains(g, "vsFTPd") {
		t.Errorf("with the first upstream stopped, greeting %q, want the second's (vsFTPd)", g)
	}
	if cell := net4.Do(netlab.ClientByName("curl EPSV"), netlab.GatewayOut, portSpare, netlab.OpRetr); cell.Err != nil {
		t.Errorf("RETR through the second upstream: %v\n%s", cell.Err, tail(cell.Log, 30))
	}
	if logCount(gw, "FTP server unreachable", 1) == 0 || logCount(gw, "server=198.18.1.2:2200", 1) == 0 {
		t.Error("the dead upstream was not logged")
	}
	out := gatewayMetrics(t)
	// One failed dial: the hold-down (1m) keeps the dead one last for the
	// RETR's session.
	if !strings.Contains(out, `ftpgate_upstream_dial_failures_total{listener="spare"} 1`+"\n") {
		t.Errorf("want ftpgate_upstream_dial_failures_total 1 for spare in:\n%s", grepLines(out, "upstream"))
	}
}

// gatewayMetrics is what ftpgate's /metrics (metrics.listen
// 127.0.0.1:9121, in the gateway namespace) answers now.
func gatewayMetrics(t *testing.T) string {
	t.Helper()
	return metricsOn(t, net4, "127.0.0.1:9121")
}

// metricsOn is what the /metrics of the ftpgate listening at addr in nw's
// gateway namespace answers now.
func metricsOn(t *testing.T, nw *netlab.Network, addr string) string {
	t.Helper()
	out, err := nw.Gateway.Run("curl", "-sS", "--fail", "--max-time", "10", "http://"+addr+"/metrics")
	if err != nil {
		t.Fatalf("GET %s/metrics: %v", addr, err)
	}
	return out
}

// seriesIn is the value of series (name{labels}, as exposed) in metrics.
func seriesIn(metrics, series string) (float64, bool) {
	for line := range strings.Lines(metrics) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), " "); ok && k == series {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// grepLines is the lines of s that contain sub.
func grepLines(s, sub string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		if strings.Contains(line, sub) {
			b.WriteString(line)
		}
	}
	return b.String()
}

// TestUpstreamProxyProtocol: with upstream_proxy_protocol v1 and v2,
// ftpgate's connection to the server starts with a PROXY header that
// haproxy, the protocol's reference parser (accept-proxy, in the server's
// namespace, in front of vsftpd), reads as the real client's address and
// the address it connected to, logs, and passes on: the login through it
// works. (Debian's vsftpd, pure-ftpd and proftpd builds do not read the
// PROXY protocol; ProFTPD does with the third-party mod_proxy_protocol.)
// Only the control connection is checked: vsftpd refuses data
// connections from another address than the control connection's, which
// here is haproxy's.
func TestUpstreamProxyProtocol(t *testing.T) {
	const haproxyPort = 2400
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	conf := fmt.Sprintf(`global
  log stdout format raw local0
defaults
  mode tcp
  log global
  option logasap
  timeout connect 5s
  timeout client 1m
  timeout server 1m
  log-format "PROXYSEEN client=%%ci:%%cp frontend=%%fi:%%fp"
frontend ftp
  bind %s:%d accept-proxy
  default_backend vsftpd
backend vsftpd
  server vsftpd %s:21
`, netlab.ServerAddr, haproxyPort, netlab.ServerAddr)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	hp, err := net4.Server.Start("haproxy", "-db", "-f", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hp.Signal(syscall.SIGTERM, 5*time.Second) })
	for _, version := range []string{"v1", "v2"} {
		t.Run(version, func(t *testing.T) {
			config := strings.Replace(spareConfig(withPinholes), "    upstream: 198.18.1.2:21\n",
				fmt.Sprintf("    upstream: %s:%d\n    upstream_proxy_protocol: %s\n", netlab.ServerAddr, haproxyPort, version), 1)
			startFtpgate(t, config, portSpare)
			before := strings.Count(hp.Stdout.String(), "PROXYSEEN")
			script := fmt.Sprintf("import ftplib\nftp = ftplib.FTP(timeout=20)\nftp.connect(%q, %d)\nprint(ftp.login())\nprint(ftp.voidcmd('NOOP'))\nftp.quit()\n",
				netlab.GatewayOut, portSpare)
			out, errOut, err := net4.Client.Exec(30*time.Second, nil, "python3", "-c", script)
			if err != nil || !strings.Contains(out, "230") || !strings.Contains(out, "200") {
				t.Fatalf("login through haproxy: %v\n%s%s\n--- haproxy ---\n%s", err, out, errOut, hp.Stdout.String()+hp.Stderr.String())
			}
			var line string
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				lines := strings.Split(hp.Stdout.String(), "PROXYSEEN")
				if len(lines) > before+1 {
					line = strings.TrimSpace(strings.SplitN(lines[before+1], "\n", 2)[0])
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			want := fmt.Sprintf("client=%s:", netlab.ClientAddr)
			wantFrontend := fmt.Sprintf("frontend=%s:%d", netlab.GatewayOut, portSpare)
			if !strings.Contains(line, want) || !strings.Contains(line, wantFrontend) {
				t.Errorf("haproxy logged %q, want %s... (the real client) and %s (where it connected)\n%s",
					line, want, wantFrontend, hp.Stdout.String()+hp.Stderr.String())
			}
		})
	}
}
