// Command benchsessions measures what an idle session costs ftpgate (sudo
// make bench-sessions): it opens -sessions concurrent, logged-in, idle
// sessions through ftpgate to a minimal FTP responder, and reports
// ftpgate's resident memory, descriptors and goroutines per session; then
// every session quits, and it checks that nothing is left: it exits 1 if
// ftpgate holds more descriptors or goroutines than before the sessions.
//
// It runs in a network namespace of its own (it re-executes itself under
// unshare --net), whose loopback interface gets 198.18.0.1 (ftpgate) and
// 198.18.0.2 (the responder and the clients); ftpgate manages no firewall.
// Nothing outlives it: the namespace goes with the process, and ftpgate is
// stopped by PID.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	gatewayAddr  = "198.18.0.1"
	responder    = "198.18.0.2:21"
	listenAddr   = gatewayAddr + ":2121"
	metricsAddr  = gatewayAddr + ":9121"
	inNamespace  = "FTPGATE_BENCH_SESSIONS_NETNS"
	fdsPerClient = 3 // the client's socket here, ftpgate's two
)

// httpClient reads ftpgate's /metrics without keeping connections: one
// kept open would count among ftpgate's descriptors.
var httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

func main() {
	bin := flag.String("ftpgate", "bin/ftpgate", "the ftpgate binary")
	n := flag.Int("sessions", 10000, "concurrent sessions (lowered to what the file limit allows)")
	doc := flag.String("doc", "docs/session-cost.md", "the file the report is written to as well (empty: none)")
	flag.Parse()
	if os.Getenv(inNamespace) == "" {
		os.Exit(reexec())
	}
	var report strings.Builder
	err := run(*bin, *n, &report)
	fmt.Print(report.String())
	if err == nil && *doc != "" {
		err = writeDoc(*doc, report.String())
	}
	if err != nil {
		log.Fatalf("bench-sessions: %v", err)
	}
}

// writeDoc writes the report to path, with what produced it.
func writeDoc(path, report string) error {
	kernel, _ := exec.Command("uname", "-r").Output()
	head := fmt.Sprintf(`# What an idle session costs

Written by `+"`sudo make bench-sessions`"+` ([e2e/benchsessions](../e2e/benchsessions/main.go));
running it again overwrites it. A measurement, not an assertion: no test
times anything. The figures are ftpgate's own process, read from /proc and
its /metrics; "per session" is the difference to before the sessions,
divided by their number.

- date: %s
- kernel: %s
- CPU: %d cores

`, time.Now().UTC().Format("2006-01-02 15:04 UTC"), strings.TrimSpace(string(kernel)), runtime.NumCPU())
	return os.WriteFile(path, []byte(head+report), 0o644)
}

// reexec runs this program again in a new network namespace.
func reexec() int {
	exe, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command("unshare", append([]string{"--net", "--", exe}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), inNamespace+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		log.Fatalf("bench-sessions: unshare --net: %v", err)
	}
	return 0
}

// sample is what ftpgate holds at one moment.
type sample struct {
	rss        int64 // bytes
	fds        int
	goroutines int
}

func run(bin string, n int, out io.Writer) error {
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", gatewayAddr + "/32", "dev", "lo"},
		{"addr", "add", "198.18.0.2/32", "dev", "lo"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	n, err := raiseFileLimit(n, out)
	if err != nil {
		return err
	}
	stopResponder, err := startResponder()
	if err != nil {
		return err
	}
	defer stopResponder()

	dir, err := os.MkdirTemp("", "ftpgate-bench-sessions-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	config := filepath.Join(dir, "ftpgate.yaml")
	if err := os.WriteFile(config, fmt.Appendf(nil, `listeners:
  - name: bench
    listen: %s
    upstream: %s
    data: {client_ports: 40000-40999, server_ports: 50000-50999}
limits: {max_sessions: %d, max_sessions_per_client: %d, idle_timeout: 1h, login_timeout: 10m}
log: {level: warn}
firewall: {backend: none}
metrics: {listen: %q}
`, listenAddr, responder, n+10, n+10, metricsAddr), 0o644); err != nil {
		return err
	}
	var stderr strings.Builder
	gw := exec.Command(bin, "run", "--config", config)
	gw.Stderr = &stderr
	if err := gw.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", bin, err)
	}
	defer func() {
		gw.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- gw.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			gw.Process.Kill()
			<-done
		}
	}()
	if err := waitReady(30 * time.Second); err != nil {
		return fmt.Errorf("%w\n%s", err, stderr.String())
	}
	pid := gw.Process.Pid

	base, err := measure(pid)
	if err != nil {
		return err
	}
	start := time.Now()
	conns, err := openSessions(n)
	if err != nil {
		closeAll(conns)
		return err
	}
	opened := time.Since(start)
	time.Sleep(2 * time.Second) // settle
	loaded, err := measure(pid)
	if err != nil {
		closeAll(conns)
		return err
	}
	active, err := metric("ftpgate_sessions_active")
	if err != nil {
		closeAll(conns)
		return err
	}
	quitAll(conns)
	after, err := settle(pid, base)
	if err != nil {
		return err
	}

	fmt.Fprintf(out, "%d concurrent logged-in idle sessions through ftpgate (relay path, no firewall), opened in %s; ftpgate_sessions_active %v.\n\n",
		n, opened.Round(time.Millisecond), active)
	fmt.Fprintln(out, "| | before | with the sessions | per session | after all quit |")
	fmt.Fprintln(out, "|---|---|---|---|---|")
	fmt.Fprintf(out, "| resident memory | %.1f MiB | %.1f MiB | %.1f KiB | %.1f MiB |\n",
		mib(base.rss), mib(loaded.rss), float64(loaded.rss-base.rss)/1024/float64(n), mib(after.rss))
	fmt.Fprintf(out, "| descriptors | %d | %d | %.2f | %d |\n",
		base.fds, loaded.fds, float64(loaded.fds-base.fds)/float64(n), after.fds)
	fmt.Fprintf(out, "| goroutines | %d | %d | %.2f | %d |\n",
		base.goroutines, loaded.goroutines, float64(loaded.goroutines-base.goroutines)/float64(n), after.goroutines)
	if after.fds > base.fds || after.goroutines > base.goroutines {
		return fmt.Errorf("left after every session quit: %d descriptors and %d goroutines more than before",
			after.fds-base.fds, after.goroutines-base.goroutines)
	}
	fmt.Fprintln(out, "\nNothing left after every session quit: as many descriptors and goroutines as before. (Resident memory stays with the Go runtime until it returns it to the system.)")
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// raiseFileLimit raises this process's descriptor limit (ftpgate inherits
// it) for n sessions, and returns n, lowered to what the limit allows.
func raiseFileLimit(n int, out io.Writer) (int, error) {
	want := uint64(n*fdsPerClient + 1024)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Max < want {
		lim.Max = want // root may raise it, up to fs.nr_open
	}
	lim.Cur = min(want, lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	if allowed := int((lim.Cur - 1024) / fdsPerClient); allowed < n {
		fmt.Fprintf(out, "The file limit (%d descriptors) allows %d sessions, not %d.\n\n", lim.Cur, allowed, n)
		n = allowed
	}
	return n, nil
}

// startResponder serves a minimal FTP server on responder: 220, then 331
// to USER, 230 to PASS, 221 to QUIT, 200 to anything else.
func startResponder() (func(), error) {
	ln, err := net.Listen("tcp", responder)
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				io.WriteString(c, "220 bench responder\r\n")
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					switch verb, _, _ := strings.Cut(strings.TrimSpace(line), " "); strings.ToUpper(verb) {
					case "USER":
						io.WriteString(c, "331 password\r\n")
					case "PASS":
						io.WriteString(c, "230 logged in\r\n")
					case "QUIT":
						io.WriteString(c, "221 bye\r\n")
						return
					default:
						io.WriteString(c, "200 ok\r\n")
					}
				}
			})
		}
	})
	return func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}, nil
}

// openSessions opens n logged-in sessions, 256 at a time.
func openSessions(n int) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	var failed atomic.Value
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 256 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || failed.Load() != nil {
					return
				}
				c, err := login()
				if err != nil {
					failed.CompareAndSwap(nil, fmt.Errorf("session %d: %w", i, err))
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		return conns, err
	}
	return conns, nil
}

// login opens one session and logs in.
func login() (net.Conn, error) {
	d := net.Dialer{Timeout: 30 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("198.18.0.2")}}
	c, err := d.Dial("tcp", listenAddr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	r := bufio.NewReader(c)
	for _, step := range []struct{ send, want string }{{"", "220"}, {"USER bench\r\n", "331"}, {"PASS bench\r\n", "230"}} {
		if step.send != "" {
			if _, err := io.WriteString(c, step.send); err != nil {
				c.Close()
				return nil, err
			}
		}
		line, err := r.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, step.want) {
			c.Close()
			return nil, fmt.Errorf("want %s, got %q, %v", step.want, line, err)
		}
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// quitAll sends QUIT on every session, reads the 221, and closes it.
func quitAll(conns []net.Conn) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	for _, c := range conns {
		if c == nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			io.WriteString(c, "QUIT\r\n")
			bufio.NewReader(c).ReadString('\n')
			c.Close()
		})
	}
	wg.Wait()
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// settle waits (60 s at most) until ftpgate has no session and holds no
// more descriptors and goroutines than base, and returns what it holds.
func settle(pid int, base sample) (sample, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		s, err := measure(pid)
		if err != nil {
			return s, err
		}
		active, err := metric("ftpgate_sessions_active")
		if err != nil {
			return s, err
		}
		if (active == 0 && s.fds <= base.fds && s.goroutines <= base.goroutines) || time.Now().After(deadline) {
			return s, nil
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// measure reads ftpgate's resident memory and descriptors from /proc, and
// its goroutines from /metrics.
func measure(pid int) (sample, error) {
	var s sample
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			s.rss = kb << 10
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.fds = len(fds)
	g, err := metric("go_goroutines")
	s.goroutines = int(g)
	return s, err
}

// metric reads one unlabelled series (or the sum of a labelled one's
// series) from ftpgate's /metrics.
func metric(name string) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+metricsAddr+"/metrics", nil)
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	sum, found := 0.0, false
	for line := range strings.Lines(string(body)) {
		if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			fields := strings.Fields(line)
			v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
			if err == nil {
				sum, found = sum+v, true
			}
		}
	}
	if !found {
		return 0, fmt.Errorf("/metrics has no %s", name)
	}
	return sum, nil
}

// waitReady waits until ftpgate's /readyz answers 200.
func waitReady(d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if resp, err := httpClient.Get("http://" + metricsAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("ftpgate was not ready within its deadline")
}
