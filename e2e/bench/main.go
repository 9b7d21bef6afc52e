// Command bench measures ftpgate's data paths and session rate (sudo make
// bench) and prints one table, which it also writes to docs/benchmarks.md.
//
// It builds the home-router network of the end-to-end tests (client
// 198.19.0.2 -- 198.19.0.1 gateway 198.18.1.1 -- 198.18.1.2 vsftpd) in
// network namespaces and runs, in each run, every data path over the same
// namespaces and links, switching only the gateway's firewall and what runs
// on it:
//
//   - direct: the gateway is a plain router (no rules, no NAT, no conntrack);
//     the client uses the server's own address;
//   - helper: the kernel's FTP helper (nf_conntrack_ftp, nf_nat_ftp) behind a
//     DNAT of port 21 and a stateful firewall that accepts RELATED;
//   - kernel: ftpgate with data.path kernel, gateway policy DROP with only
//     ESTABLISHED and port 21 accepted; ftpgate installs the pinholes with
//     its default backend, netlink;
//   - relay: the same with data.path relay;
//   - kernel and relay again with the iptables backend, for the session
//     rate only (the backend changes how pinholes are made, not the
//     forwarding of an admitted connection).
//
// Each figure is the median of -runs runs; each ratio is the median of the
// per-run ratios to direct. Everything it creates is removed when it ends,
// also on SIGINT, SIGTERM or when the watchdog fires.
package main

import (
	"compress/gzip"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// GiB is the unit of the CPU figure.
const GiB = 1 << 30

// Files on the server (under vsftpd's anonymous root).
const (
	bigFile   = "pub/bench-big.bin"
	smallFile = "pub/bench-1k.bin"
	smallSize = 1024
)

// configTemplate is ftpgate's configuration; %[1]s is the data path, %[2]s
// the firewall backend, %[3]s the upstream, %[4]s the listener's TLS
// settings (lines, or nothing).
const configTemplate = `
listeners:
  - name: bench
    listen: 198.19.0.1:21
    upstream: %[3]s
    data: {path: %[1]s, client_ports: 40000-40999, server_ports: 50000-50999}
%[4]s
limits: {idle_timeout: 2m, data_timeout: 30s, max_sessions_per_client: 64}
log: {level: info}
firewall: {backend: %[2]s, pinhole_ttl: 30s}
`

// tlsServerPort is where the TLS vsftpd of the FTPS paths listens, on the
// server: TLS required, session reuse required (vsftpd's defaults).
const tlsServerPort = 2300

// ftpgateConfig is ftpgate's configuration for p.
func ftpgateConfig(p *path, f *netlab.TLSFiles) string {
	upstream, tls := netlab.ServerAddr+":21", ""
	if p.tls != "" {
		tls = fmt.Sprintf("    tls: {mode: explicit, cert: %s, key: %s, required: true, session_reuse: required}\n", f.GatewayCert, f.GatewayKey)
	}
	if p.tls == "both" {
		upstream = fmt.Sprintf("%s:%d", netlab.ServerAddr, tlsServerPort)
		tls += fmt.Sprintf("    upstream_tls: {mode: explicit, ca: %s}\n", f.CA)
	}
	return fmt.Sprintf(configTemplate, p.data, p.backend, upstream, strings.TrimSuffix(tls, "\n"))
}

// Gateway firewalls (netlab.HomeRouter.ResetGatewayFirewall runs them after
// emptying the gateway's tables; %[1]s is the iptables binary).
const (
	// directFirewall: a plain router.
	directFirewall = `
sysctl -qw net.ipv4.ip_forward=1
`
	// helperFirewall: a stateful firewall with the kernel's FTP helper on
	// port 21, which is DNATed to the server; the helper's expectations
	// admit the data connections (RELATED) and nf_nat_ftp rewrites the
	// addresses in the control channel.
	helperFirewall = `
sysctl -qw net.ipv4.ip_forward=1
%[1]s -P INPUT DROP
%[1]s -P FORWARD DROP
%[1]s -A INPUT -i lo -j ACCEPT
%[1]s -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
%[1]s -A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
%[1]s -t raw -A PREROUTING -p tcp --dport 21 -j CT --helper ftp
%[1]s -t nat -A PREROUTING -d ` + netlab.GatewayOut + ` -p tcp --dport 21 -j DNAT --to-destination ` + netlab.ServerAddr + `:21
%[1]s -A FORWARD -d ` + netlab.ServerAddr + ` -p tcp --dport 21 -m conntrack --ctstate NEW -j ACCEPT
`
	// ftpgateFirewall: policy DROP, ESTABLISHED and the control port
	// accepted, nothing else; ftpgate opens the pinholes.
	ftpgateFirewall = `
sysctl -qw net.ipv4.ip_forward=1
%[1]s -P INPUT DROP
%[1]s -P FORWARD DROP
%[1]s -A INPUT -i lo -j ACCEPT
%[1]s -A INPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT
%[1]s -A INPUT -p tcp --dport 21 -m conntrack --ctstate NEW -j ACCEPT
%[1]s -A FORWARD -m conntrack --ctstate ESTABLISHED -j ACCEPT
`
)

// path is one way through the gateway.
type path struct {
	key, title string
	host       string // where the client connects (port 21)
	firewall   string
	data       string // ftpgate's data.path; "" when ftpgate does not run
	backend    string // ftpgate's firewall.backend
	sessions   bool   // measure the session rate
	onlyRate   bool   // measure the session rate only, no throughput
	na         string // why the path cannot be measured ("" if it can)
	err        error  // the first failure; the path is not run again
	// FTPS: tls is "direct" (FTPS straight to the TLS vsftpd), "both"
	// (ftpgate terminates TLS on both sides, to the TLS vsftpd) or
	// "offload" (TLS to the client, plain FTP to vsftpd); "" for plain
	// FTP. port is where the client connects (0: 21).
	tls  string
	port int
	// base is the key of the path whose figures in the same run the
	// ratios are taken to ("": direct).
	base string
	// passiveOnly skips the active cells: curl 7.87-7.88 sends active
	// FTPS data in clear (curl/curl#10666), so no active FTPS figure is
	// possible with Debian 12's curl.
	passiveOnly bool

	mbps     [len(cells)][]float64 // MiB/s per run
	ratio    [len(cells)][]float64 // to direct, per run
	rate     [2][]float64          // sessions/s per run: sequential, concurrent
	rateRat  [2][]float64
	cpuPerGB []float64 // ftpgate's CPU seconds per GiB relayed, per run
}

// cell is one throughput measurement.
type cell struct {
	op      string // RETR or STOR
	passive bool
}

var cells = [...]cell{{"RETR", true}, {"RETR", false}, {"STOR", true}, {"STOR", false}}

func (c cell) String() string {
	if c.passive {
		return c.op + " passive (EPSV)"
	}
	return c.op + " active (EPRT)"
}

type options struct {
	tls             *netlab.TLSFiles // the FTPS paths' certificates
	bin             string
	runs            int
	size            int64
	sessions, conc  int
	doc             string
	budget, timeout time.Duration
	exe, clkTck     string
	load0, load1    string // load averages at the start and the end
}

func main() {
	var o options
	var sizeMiB int
	flag.StringVar(&o.bin, "ftpgate", "bin/ftpgate", "the ftpgate `binary` to run in the gateway")
	flag.IntVar(&o.runs, "runs", 5, "runs; each figure is the median over them (fewer if the budget runs out)")
	flag.IntVar(&sizeMiB, "mib", 1024, "size of the transferred file in MiB")
	flag.IntVar(&o.sessions, "sessions", 200, "sessions per session-rate measurement")
	flag.IntVar(&o.conc, "concurrency", 20, "concurrent clients of the concurrent session-rate measurement")
	flag.StringVar(&o.doc, "doc", "docs/benchmarks.md", "write the table here too (\"\" for none)")
	flag.DurationVar(&o.budget, "budget", 8*time.Minute, "start no run that would end after this long (judging by the longest run so far)")
	flag.DurationVar(&o.timeout, "timeout", 12*time.Minute, "clean up and fail after this long (a hard limit)")
	// The session client (the bench runs itself in the client namespace).
	client := flag.String("session-client", "", "internal: run sessions against this `host:port` and exit")
	clientFile := flag.String("session-file", smallFile, "internal: the file each session retrieves")
	clientSize := flag.Int64("session-size", smallSize, "internal: its size")
	clientCA := flag.String("session-tls-ca", "", "internal: speak FTPS (AUTH TLS, PROT P), trusting this CA `file`")
	flag.Parse()
	if *client != "" {
		os.Exit(runSessionClient(*client, *clientFile, *clientSize, *clientCA, o.sessions, o.conc))
	}
	o.size = int64(sizeMiB) << 20
	os.Exit(bench(o))
}

// lab is the network, guarded so that a signal or the watchdog waits for it
// to be built before removing it.
var (
	labMu  sync.Mutex
	lab    *netlab.HomeRouter
	closed bool
)

func cleanup() {
	labMu.Lock()
	defer labMu.Unlock()
	if lab != nil && !closed {
		closed = true
		if err := lab.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "bench: cleanup:", err)
		}
	}
}

func bench(o options) int {
	if o.runs < 1 || o.size < 1<<20 || o.sessions < 1 || o.conc < 1 || o.conc > o.sessions {
		fmt.Fprintln(os.Stderr, "bench: bad flags")
		return 2
	}
	if _, err := os.Stat(o.bin); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	o.exe = exe
	o.clkTck = "100"
	if out, err := exec.Command("getconf", "CLK_TCK").Output(); err == nil {
		o.clkTck = strings.TrimSpace(string(out))
	}
	start := time.Now()
	o.load0 = loadAvg()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "bench: %s, cleaning up\n", s)
		cleanup()
		os.Exit(1)
	}()
	watchdog := time.AfterFunc(o.timeout, func() {
		fmt.Fprintf(os.Stderr, "bench: watchdog: still running after %s, cleaning up\n", o.timeout)
		cleanup()
		os.Exit(1)
	})
	defer watchdog.Stop()
	defer cleanup()

	progress("building the network (namespaces, vsftpd)")
	labMu.Lock()
	h, err := netlab.NewHomeRouter("iptables", 21)
	lab = h
	labMu.Unlock()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: building the network:", err)
		return 1
	}
	progress("writing the %d MiB file and the 1 KiB file on the server", o.size>>20)
	if err := writeRandom(filepath.Join(h.FTPRoot, bigFile), o.size); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	if err := writeRandom(filepath.Join(h.FTPRoot, smallFile), smallSize); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}

	progress("starting vsftpd with TLS required at port %d", tlsServerPort)
	if o.tls, err = h.MakeTLSFiles(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	if _, err := h.StartTLSServer(netlab.Vsftpd, tlsServerPort, o.tls.ServerCert, o.tls.ServerKey, true); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}

	paths := []*path{
		{key: "direct", title: "direct", host: netlab.ServerAddr, firewall: directFirewall, sessions: true},
		{key: "helper", title: "Linux FTP helper", host: netlab.GatewayOut, firewall: helperFirewall, na: helperMissing()},
		{key: "kernel", title: "ftpgate kernel path", host: netlab.GatewayOut, firewall: ftpgateFirewall, data: "kernel", backend: "netlink", sessions: true},
		{key: "relay", title: "ftpgate relay path", host: netlab.GatewayOut, firewall: ftpgateFirewall, data: "relay", backend: "netlink", sessions: true},
		{key: "kernel-iptables", title: "kernel path, iptables backend", host: netlab.GatewayOut, firewall: ftpgateFirewall, data: "kernel", backend: "iptables", sessions: true, onlyRate: true},
		{key: "relay-iptables", title: "relay path, iptables backend", host: netlab.GatewayOut, firewall: ftpgateFirewall, data: "relay", backend: "iptables", sessions: true, onlyRate: true},
		{key: "ftps-direct", title: "direct FTPS", host: netlab.ServerAddr, port: tlsServerPort, firewall: directFirewall, sessions: true, tls: "direct", passiveOnly: true},
		{key: "ftps-both", title: "ftpgate FTPS, both sides", host: netlab.GatewayOut, firewall: ftpgateFirewall, data: "relay", backend: "netlink", sessions: true, tls: "both", base: "ftps-direct", passiveOnly: true},
		{key: "ftps-offload", title: "ftpgate FTPS offload", host: netlab.GatewayOut, firewall: ftpgateFirewall, data: "relay", backend: "netlink", sessions: true, tls: "offload", base: "ftps-direct", passiveOnly: true},
	}
	for _, p := range paths[2:] {
		if p.data == "" {
			continue
		}
		if out, err := checkConfig(h, o, p); err != nil {
			if p.data == "kernel" {
				p.na = "n/a (kernel path not built)"
				progress("the kernel path is not available: %s", firstLine(out))
				continue
			}
			fmt.Fprintf(os.Stderr, "bench: %s refuses the %s configuration: %v\n%s", o.bin, p.data, err, out)
			return 1
		}
	}
	if paths[1].na != "" {
		progress("the kernel's FTP helper is not available: %s", paths[1].na)
	}

	// Warm up: page cache, neighbour tables, vsftpd's upload directory.
	progress("warm-up transfers (not counted)")
	if err := h.ResetGatewayFirewall(directFirewall); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	for i, c := range []cell{{"RETR", true}, {"STOR", true}} {
		if _, err := transfer(h, o, paths[0], c, fmt.Sprintf("warmup-%d", i)); err != nil {
			fmt.Fprintln(os.Stderr, "bench: warm-up transfer:", err)
			return 1
		}
	}

	// Each run takes every measurement on every path in turn, so that a
	// path's figure and direct's are taken seconds apart, and alternates
	// the order of the paths (direct first, then direct last) so that a
	// drift in the machine's speed does not always favour the same path. A
	// run starts only if it fits in the budget, judging by the longest run
	// so far.
	gwState := &gateway{h: h, o: o}
	runs, longest := 0, time.Duration(0)
	for run := range o.runs {
		if elapsed := time.Since(start); run > 0 && elapsed+longest > o.budget {
			progress("stopping after %d runs: another run (up to %s) would end after the %s budget", run, longest.Round(time.Second), o.budget)
			break
		}
		runStart := time.Now()
		order := slices.Clone(paths)
		if run%2 == 1 {
			slices.Reverse(order)
		}
		runOnce(gwState, order, run, o)
		runs++
		longest = max(longest, time.Since(runStart))
		// Ratios to direct (or the path's base) in this run.
		byKey := map[string]*path{}
		for _, p := range paths {
			byKey[p.key] = p
		}
		for _, p := range paths[1:] {
			d := byKey[cmp(p.base, "direct")]
			if d == p {
				continue
			}
			for i := range cells {
				if len(p.mbps[i]) == run+1 && len(d.mbps[i]) == run+1 {
					p.ratio[i] = append(p.ratio[i], p.mbps[i][run]/d.mbps[i][run])
				}
			}
			for i := range p.rate {
				if len(p.rate[i]) == run+1 && len(d.rate[i]) == run+1 {
					p.rateRat[i] = append(p.rateRat[i], p.rate[i][run]/d.rate[i][run])
				}
			}
		}
	}
	gwState.stop()

	stray, strayErr := h.StrayPackets()
	cleanup()

	good := true
	for _, p := range paths {
		if p.err != nil {
			good = false
		}
	}
	table := render(paths, o)
	fmt.Println()
	fmt.Print(table)
	fmt.Println()
	o.runs, o.load1 = runs, loadAvg()
	notes := targetNotes(paths) + busyNote(o)
	if runs < 3 {
		notes += fmt.Sprintf("Note: only %d run(s) fit in the %s budget, fewer than the 3 a median needs to mean much.\n", runs, o.budget)
	}
	fmt.Print(notes)
	for _, p := range paths {
		if p.err != nil {
			fmt.Printf("FAIL %s: %v\n", p.title, p.err)
		}
	}
	if strayErr != nil || stray > 0 {
		fmt.Printf("%d packets were sent to addresses outside the test space (err %v)\n", stray, strayErr)
		good = false
	}
	fmt.Printf("(%d runs in %s; load average at the start %s, at the end %s)\n", runs, time.Since(start).Round(time.Second), o.load0, o.load1)
	if o.doc != "" {
		if err := writeDoc(o.doc, table, notes, paths, o); err != nil {
			fmt.Fprintln(os.Stderr, "bench: writing", o.doc+":", err)
			return 1
		}
		fmt.Println("Written to", o.doc)
	}
	if !good {
		return 1
	}
	return 0
}

// runOnce is one run: each transfer on each path in order, then each
// session rate on each path that measures it. A path that fails is not run
// again, and what it measured in this run is dropped, so that every figure
// of a path covers the same runs.
func runOnce(g *gateway, order []*path, run int, o options) {
	live := func(p *path) bool { return p.na == "" && p.err == nil }
	fail := func(p *path, err error) {
		p.err = err
		fmt.Fprintf(os.Stderr, "bench: %s: %v\n", p.title, err)
		for i := range cells {
			p.mbps[i] = p.mbps[i][:min(len(p.mbps[i]), run)]
		}
		for i := range p.rate {
			p.rate[i] = p.rate[i][:min(len(p.rate[i]), run)]
		}
		p.cpuPerGB = p.cpuPerGB[:min(len(p.cpuPerGB), run)]
	}
	cpu, moved := map[*path]float64{}, map[*path]int{}
	for i, c := range cells {
		for _, p := range order {
			if !live(p) || p.onlyRate || p.passiveOnly && !c.passive {
				continue
			}
			progress("run %d/%d: %s, %s", run+1, o.runs, c, p.title)
			gw, err := g.use(p)
			if err != nil {
				fail(p, err)
				continue
			}
			var cpu0, cpu1 float64
			if gw != nil {
				cpu0, err = cpuSeconds(gw.PID(), o.clkTck)
			}
			var v float64
			if err == nil {
				v, err = transfer(g.h, o, p, c, fmt.Sprintf("%s-%d-%d", p.key, run, i))
			}
			if err == nil && gw != nil {
				cpu1, err = cpuSeconds(gw.PID(), o.clkTck)
			}
			if err != nil {
				fail(p, fmt.Errorf("%s: %w%s", c, err, ftpgateTail(gw)))
				continue
			}
			p.mbps[i] = append(p.mbps[i], v)
			cpu[p] += cpu1 - cpu0
			moved[p]++
		}
	}
	for _, p := range order {
		if live(p) && p.data != "" && !p.onlyRate && moved[p] > 0 {
			p.cpuPerGB = append(p.cpuPerGB, cpu[p]/(float64(moved[p])*float64(g.o.size)/GiB))
		}
	}
	for i, conc := range []int{1, o.conc} {
		for _, p := range order {
			if !live(p) || !p.sessions {
				continue
			}
			progress("run %d/%d: %d sessions from %d client(s), %s", run+1, o.runs, o.sessions, conc, p.title)
			gw, err := g.use(p)
			if err != nil {
				fail(p, err)
				continue
			}
			v, err := sessionRate(g.h, o, p, conc)
			if err != nil {
				fail(p, fmt.Errorf("sessions with %d client(s): %w%s", conc, err, ftpgateTail(gw)))
				continue
			}
			p.rate[i] = append(p.rate[i], v)
		}
	}
}

// gateway switches the gateway between paths: its firewall, and ftpgate
// (started afresh for each measurement, so that each starts alike).
type gateway struct {
	h  *netlab.HomeRouter
	o  options
	gw *netlab.Proc // the running ftpgate, if any
}

// use sets the gateway up for p and returns the ftpgate it started (nil
// for the paths without ftpgate).
func (g *gateway) use(p *path) (*netlab.Proc, error) {
	g.stop()
	if err := g.h.ResetGatewayFirewall(p.firewall); err != nil {
		return nil, err
	}
	if p.data == "" {
		return nil, nil
	}
	gw, err := g.h.StartFtpgate(g.o.bin, ftpgateConfig(p, g.o.tls), 21)
	if err != nil {
		return nil, err
	}
	g.gw = gw
	return gw, nil
}

// stop stops ftpgate (SIGTERM: it removes its chains) if it runs.
func (g *gateway) stop() {
	if g.gw == nil {
		return
	}
	if err := g.gw.Signal(syscall.SIGTERM, 10*time.Second); err != nil {
		fmt.Fprintf(os.Stderr, "bench: stopping ftpgate: %v\n", err)
	}
	g.gw = nil
}

// transfer runs one 1 GiB transfer with curl in the client namespace and
// returns its throughput in MiB/s over the data phase: from the moment the
// transfer begins (curl's time_pretransfer: logged in, the data connection
// negotiated and the RETR or STOR sent) to the end (the 226 reply).
func transfer(h *netlab.HomeRouter, o options, p *path, c cell, name string) (float64, error) {
	args := []string{"-sS", "--max-time", "120", "--connect-timeout", "10", "-u", "anonymous:bench@",
		"-o", "/dev/null", "-w", "%{size_download} %{size_upload} %{time_pretransfer} %{time_total}\n"}
	if c.passive {
		args = append(args, "--ftp-pasv") // EPSV (curl's default)
	} else {
		args = append(args, "--ftp-port", netlab.ClientAddr) // EPRT
	}
	if p.tls != "" {
		args = append(args, "--ssl-reqd", "--cacert", o.tls.CA)
	}
	url := fmt.Sprintf("ftp://%s:%d/", p.host, cmp(p.port, 21))
	remote := ""
	if c.op == "RETR" {
		args = append(args, url+bigFile)
	} else {
		remote = filepath.Join(h.FTPRoot, "upload", "bench-"+name+".bin")
		args = append(args, "-T", filepath.Join(h.FTPRoot, bigFile), url+"upload/bench-"+name+".bin")
		defer os.Remove(remote)
	}
	stdout, stderr, err := h.Client.Exec(150*time.Second, nil, "curl", args...)
	if err != nil {
		return 0, fmt.Errorf("curl: %w: %s", err, strings.TrimSpace(stderr))
	}
	var down, up int64
	var pre, total float64
	if _, err := fmt.Sscan(stdout, &down, &up, &pre, &total); err != nil {
		return 0, fmt.Errorf("curl printed %q: %w", stdout, err)
	}
	moved := down
	if c.op == "STOR" {
		moved = up
		fi, err := os.Stat(remote)
		if err != nil {
			return 0, err
		}
		if fi.Size() != o.size {
			return 0, fmt.Errorf("the server stored %d bytes, want %d", fi.Size(), o.size)
		}
	}
	if moved != o.size {
		return 0, fmt.Errorf("curl moved %d bytes, want %d", moved, o.size)
	}
	if total-pre <= 0 {
		return 0, fmt.Errorf("curl reported no data phase (pretransfer %gs, total %gs)", pre, total)
	}
	return float64(o.size) / (1 << 20) / (total - pre), nil
}

// sessionRate runs o.sessions sessions from conc concurrent clients in the
// client namespace and returns sessions per second.
func sessionRate(h *netlab.HomeRouter, o options, p *path, conc int) (float64, error) {
	args := []string{"-session-client", fmt.Sprintf("%s:%d", p.host, cmp(p.port, 21)), "-session-file", smallFile, "-session-size", strconv.Itoa(smallSize),
		"-sessions", strconv.Itoa(o.sessions), "-concurrency", strconv.Itoa(conc)}
	if p.tls != "" {
		args = append(args, "-session-tls-ca", o.tls.CA)
	}
	stdout, stderr, err := h.Client.Exec(120*time.Second, nil, o.exe, args...)
	if err != nil {
		return 0, fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr))
	}
	return parseSessionResult(stdout)
}

// checkConfig runs "ftpgate check" on p's configuration.
func checkConfig(h *netlab.HomeRouter, o options, p *path) (string, error) {
	path := filepath.Join(h.Dir, "check-"+p.key+".yaml")
	if err := os.WriteFile(path, []byte(ftpgateConfig(p, o.tls)), 0o644); err != nil {
		return "", err
	}
	stdout, stderr, err := h.Gateway.Exec(30*time.Second, nil, o.bin, "check", "--config", path)
	return stdout + stderr, err
}

// cpuSeconds returns the user plus system CPU time of pid
// (/proc/PID/stat fields 14 and 15, in clock ticks).
func cpuSeconds(pid int, clkTck string) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	hz, err3 := strconv.ParseFloat(clkTck, 64)
	if err := errors.Join(err1, err2, err3); err != nil || hz <= 0 {
		return 0, fmt.Errorf("/proc/%d/stat: %v (CLK_TCK %s)", pid, err, clkTck)
	}
	return (utime + stime) / hz, nil
}

// helperMissing reports why the kernel's FTP helper cannot be used in a
// namespace without loading a module in the host ("" if it can). The
// helper, its NAT part and the CT target must be built in or already
// loaded: adding "-j CT --helper ftp" would otherwise make the kernel load
// them for the whole machine, which the bench does not do.
func helperMissing() string {
	for _, m := range []struct{ module, config string }{
		{"nf_conntrack_ftp", "CONFIG_NF_CONNTRACK_FTP"},
		{"nf_nat_ftp", "CONFIG_NF_NAT_FTP"},
		{"xt_CT", "CONFIG_NETFILTER_XT_TARGET_CT"},
	} {
		if !kernelHas(m.module, m.config) {
			return "n/a (" + m.module + " not loaded)"
		}
	}
	return ""
}

// kernelHas reports whether module is loaded (/proc/modules, /sys/module)
// or built into the kernel (/sys/module for modules with parameters,
// modules.builtin, or "=y" in /proc/config.gz).
func kernelHas(module, config string) bool {
	if _, err := os.Stat("/sys/module/" + module); err == nil {
		return true
	}
	if b, err := os.ReadFile("/proc/modules"); err == nil {
		for line := range strings.Lines(string(b)) {
			if strings.HasPrefix(line, module+" ") {
				return true
			}
		}
	}
	if rel, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		b, err := os.ReadFile("/lib/modules/" + strings.TrimSpace(string(rel)) + "/modules.builtin")
		if err == nil && strings.Contains(string(b), "/"+module+".ko") {
			return true
		}
	}
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		return false
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		return false
	}
	b, err := io.ReadAll(io.LimitReader(z, 16<<20))
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(b)) {
		if strings.TrimSpace(line) == config+"=y" {
			return true
		}
	}
	return false
}

// writeRandom writes size random bytes to path, readable by vsftpd.
func writeRandom(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(f, io.LimitReader(rand.Reader, size), make([]byte, 1<<20)); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ftpgateTail is the end of ftpgate's log, for an error message.
func ftpgateTail(gw *netlab.Proc) string {
	if gw == nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(gw.Stderr.String()), "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return "\nftpgate's log ends with:\n  " + strings.Join(lines, "\n  ")
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// progStart is when the program started, for progress lines.
var progStart = time.Now()

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: %5.0fs "+format+"\n", append([]any{time.Since(progStart).Seconds()}, args...)...)
}

// loadAvg is the first three fields of /proc/loadavg (1, 5 and 15 minutes).
func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
