//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// spareConfig is one listener in server_mode same on portSpare, with the
// given firewall section.
func spareConfig(firewall string) string {
	return `
listeners:
  - name: spare
    listen: 198.19.0.1:2123
    upstream: 198.18.1.2:21
    data: {client_ports: 40300-40399, server_ports: 50300-50399}
limits: {idle_timeout: 2m, data_timeout: 5s}
log: {level: debug, format: text}
firewall: ` + firewall + "\n"
}

// TestBadInput sends hostile commands on one session against the real
// vsftpd, while another session transfers a file: each gets a clear reply,
// the overlong line ends that session alone, the transfer is unharmed, and
// nothing stays behind.
func TestBadInput(t *testing.T) {
	gw := startFtpgate(t, spareConfig(withPinholes), portSpare)
	baseline := openFDs(t, gw)

	transfer := make(chan netlab.Cell, 1)
	go func() {
		transfer <- net4.Do(slowClient(), netlab.GatewayOut, portSpare, netlab.OpRetr)
	}()

	stdout, stderr, err := net4.Client.Exec(60*time.Second, nil, "python3",
		net4.PythonClient(), netlab.GatewayOut, strconv.Itoa(portSpare), "passive", "badinput", "-", "-")
	if err != nil {
		t.Fatalf("badinput client: %v\n%s%s", err, stdout, stderr)
	}
	var replies []string
	for line := range strings.Lines(stdout) {
		replies = append(replies, strings.TrimSpace(line))
	}
	want := []string{
		"REPLY 220",                 // greeting, from vsftpd
		"REPLY 230",                 // USER (vsftpd: no_anon_password)
		"REPLY 230",                 // PASS
		"REPLY 501 Illegal address", // PORT to a third party: FTP bounce refused
		"REPLY 504",                 // PORT to port 21
		"REPLY 522",                 // EPRT with an unknown network protocol
		"REPLY 200",                 // NOOP: the session still works
		"REPLY 500 Line too long.",  // the 1 MiB line
		"CLOSED",                    // and the session is closed
	}
	var got []string
	for _, r := range replies {
		if !strings.HasPrefix(r, "SENDERR") { // the proxy may close before all is sent
			got = append(got, r)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("replies:\n%s\nwant prefixes:\n%s", strings.Join(replies, "\n"), strings.Join(want, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("reply %d = %q, want prefix %q", i, got[i], want[i])
		}
	}
	if cell := <-transfer; cell.Err != nil {
		t.Errorf("the concurrent transfer failed: %v\n%s", cell.Err, tail(cell.Log, 30))
	}
	for _, reason := range []string{"reason=bounce", "reason=low_port", "reason=family", "reason=line_too_long"} {
		if logCount(gw, reason, 1) == 0 {
			t.Errorf("ftpgate logged no %s", reason)
		}
	}
	assertNoLeftovers(t, gw, baseline)
}

// TestPortTheft: a fourth host connects to the data port that ftpgate
// advertised, before the client does.
//
// With a firewall backend (iptables, netlink) the kernel drops it: the
// pinhole admits the client alone. With no firewall managed (a Kubernetes
// sidecar; here the test opens the port range statically) ftpgate itself
// resets it without sending a byte and logs it. Either way the client's
// transfer works.
func TestPortTheft(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		gw := startFtpgate(t, spareConfig(pinholeFirewall(backend)), portSpare)
		baseline := openFDs(t, gw)
		c := startPaused(t, portSpare)
		if n := len(pinholes(t)); n != 1 {
			t.Errorf("%d pinholes while the client holds the 227, want 1", n)
		}
		if got := thief(t, c.Port); got != "timeout" {
			t.Errorf("the thief's connection: %s, want a timeout (SYN dropped by the kernel)", got)
		}
		c.Resume(t)
		if strings.Contains(gw.Stderr.String(), "reason=theft") {
			t.Error("the thief reached ftpgate through the firewall")
		}
		waitNoPinholes(t)
		assertNoLeftovers(t, gw, baseline)
	})
	t.Run("none", func(t *testing.T) {
		rule := "INPUT -p tcp --dport 40300:40399 -m conntrack --ctstate NEW -j ACCEPT"
		if _, err := net4.Gateway.Run("sh", "-c", "iptables -I "+rule); err != nil {
			t.Fatal(err)
		}
		defer net4.Gateway.Run("sh", "-c", "iptables -D "+rule)
		gw := startFtpgate(t, spareConfig("{backend: none}"), portSpare)
		baseline := openFDs(t, gw)
		c := startPaused(t, portSpare)
		if got := thief(t, c.Port); got != "0" {
			t.Errorf("the thief received %q bytes, want 0", got)
		}
		c.Resume(t)
		if logCount(gw, "reason=theft", 1) == 0 {
			t.Error("ftpgate did not log the stolen connection (reason=theft)")
		}
		assertNoLeftovers(t, gw, baseline)
	})
}

// thief connects from the thief's namespace to the gateway's port and
// returns how many bytes it received before the connection closed, or
// "timeout" if the connection could not be made within 2 s.
func thief(t *testing.T, port string) string {
	t.Helper()
	script := fmt.Sprintf(`
import socket
try:
    s = socket.create_connection((%q, %s), timeout=2)
except (TimeoutError, socket.timeout):
    print("timeout")
    raise SystemExit
except ConnectionResetError:
    print(0)  # reset by ftpgate before connect() returned: nothing received
    raise SystemExit
n = 0
try:
    while True:
        b = s.recv(65536)
        if not b:
            break
        n += len(b)
except (ConnectionResetError, TimeoutError):
    pass
print(n)
`, netlab.GatewayOut, port)
	got, errOut, err := net4.Thief.Exec(30*time.Second, nil, "python3", "-c", script)
	if err != nil {
		t.Fatalf("thief: %v: %s", err, errOut)
	}
	return strings.TrimSpace(got)
}

// pausedClient is ftplib in passive mode, stopped between the 227 reply and
// its data connection.
type pausedClient struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Scanner
	stderr strings.Builder
	local  string
	Port   string          // the data port from the 227 reply
	nw     *netlab.Network // where it runs
}

// startPaused logs in to ftpgate's listener at port, sends PASV and waits
// until the client has the data port. The client is killed when the test
// ends.
func startPaused(t *testing.T, port int) *pausedClient {
	t.Helper()
	return startPausedOn(t, net4, port)
}

// startPausedOn is startPaused on the network nw.
func startPausedOn(t *testing.T, nw *netlab.Network, port int) *pausedClient {
	t.Helper()
	c := &pausedClient{nw: nw, local: filepath.Join(nw.Dir, "client", fmt.Sprintf("paused-%d.bin", time.Now().UnixNano()))}
	if err := os.MkdirAll(filepath.Dir(c.local), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	c.cmd = nw.Client.Command(ctx, "python3", nw.PythonClient(),
		netlab.GatewayOut, strconv.Itoa(port), "passive", "pause", netlab.BigFile, c.local, "--strict")
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.cmd.Stderr = &c.stderr
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL) })
	c.out = bufio.NewScanner(out)
	for c.out.Scan() {
		if f := strings.Fields(c.out.Text()); len(f) == 2 && f[0] == "DATAPORT" {
			c.Port = f[1]
			return c
		}
	}
	t.Fatalf("client printed no DATAPORT: %s", c.stderr.String())
	return nil
}

// Resume lets the client connect and retrieve the big file, and checks it.
func (c *pausedClient) Resume(t *testing.T) {
	t.Helper()
	fmt.Fprintln(c.stdin)
	go func() {
		for c.out.Scan() {
		}
	}()
	if err := c.cmd.Wait(); err != nil {
		t.Fatalf("client: %v\n%s", err, c.stderr.String())
	}
	if sum, err := netlab.FileSHA256(c.local); err != nil || sum != c.nw.BigSHA256 {
		t.Errorf("retrieved file: sha256 %.12s, err %v; want %.12s", sum, err, c.nw.BigSHA256)
	}
}

// TestPeerVanishes kills the client, then the server's session process, in
// the middle of a transfer: the session ends, nothing stays behind, and the
// next transfer works.
func TestPeerVanishes(t *testing.T) {
	gw := startFtpgate(t, spareConfig(withPinholes), portSpare)
	baseline := openFDs(t, gw)
	slow := slowClient()

	t.Run("client", func(t *testing.T) {
		start := time.Now()
		local := filepath.Join(net4.Dir, "client", "vanish.bin")
		if err := os.MkdirAll(filepath.Dir(local), 0o755); err != nil {
			t.Fatal(err)
		}
		// Killed after 2 s of a download paced by the client, of a file
		// much larger than the socket buffers between them: ftpgate is
		// still relaying when the client goes.
		big := sparseFile(t, "pub/vanish-256m.bin", 256<<20)
		argv := []string{"curl", "-sS", "--limit-rate", "1M", "-o", "/dev/null",
			fmt.Sprintf("ftp://%s:%d/%s", netlab.GatewayOut, portSpare, big)}
		_, _, err := net4.Client.Exec(2*time.Second, nil, argv[0], argv[1:]...)
		if err == nil || time.Since(start) > 10*time.Second {
			t.Fatalf("the slow transfer was not cut off: %v", err)
		}
		waitLog(t, gw, "outcome=aborted", 1)
		waitLog(t, gw, "session ended", 1)
	})

	t.Run("server", func(t *testing.T) {
		done := make(chan netlab.Cell, 1)
		// An upload: curl paces what it sends, and the server reads as it
		// goes, so the server really is mid-transfer when it dies.
		go func() { done <- net4.Do(slow, netlab.GatewayOut, portSpare, netlab.OpStor) }()
		waitLog(t, gw, "session started", 2)
		time.Sleep(time.Second)
		// vsftpd runs two processes per session below the listening one:
		// kill those descendants of the vsftpd this network started.
		if n, err := net4.KillVsftpdSessions(); err != nil || n == 0 {
			t.Fatalf("no vsftpd session process killed (%d): %v", n, err)
		}
		if cell := <-done; cell.Err == nil {
			t.Fatal("the transfer succeeded although the server vanished")
		}
		waitLog(t, gw, "outcome=aborted", 2)
		waitLog(t, gw, "session ended", 2)
	})

	if cell := net4.Do(netlab.ClientByName("curl EPSV"), netlab.GatewayOut, portSpare, netlab.OpRetr); cell.Err != nil {
		t.Errorf("transfer after the peers vanished: %v", cell.Err)
	}
	assertNoLeftovers(t, gw, baseline)
}

// sparseFile makes a sparse file of size bytes on the FTP server, removed
// when the test ends, and returns its path relative to the FTP root.
func sparseFile(t *testing.T, rel string, size int64) string {
	t.Helper()
	path := filepath.Join(net4.FTPRoot, rel)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o644)
	t.Cleanup(func() { os.Remove(path) })
	return rel
}

// slowBigRetr starts curl retrieving a 256 MiB sparse file rel through
// ftpgate's spare listener at 64 MB/s: about 4 s, far more than the socket
// buffers between them hold, so ftpgate is relaying throughout. The channel
// receives the outcome (the byte count checked).
func slowBigRetr(t *testing.T, rel string) <-chan error {
	t.Helper()
	big := sparseFile(t, rel, 256<<20)
	done := make(chan error, 1)
	go func() {
		url := fmt.Sprintf("ftp://%s:%d/%s", netlab.GatewayOut, portSpare, big)
		out, errOut, err := net4.Client.Exec(time.Minute, nil, "curl", "-sS", "--limit-rate", "64M",
			"-o", "/dev/null", "-w", "%{size_download}", url)
		if err == nil && strings.TrimSpace(out) != strconv.Itoa(256<<20) {
			err = fmt.Errorf("got %q bytes: %s", out, errOut)
		}
		done <- err
	}()
	return done
}

// slowClient is curl in passive mode limited to 500 kB/s: a 10 MiB transfer
// takes about twenty seconds.
func slowClient() netlab.Client {
	c := netlab.ClientByName("curl EPSV")
	c.Name = "curl EPSV slow"
	c.Args = []string{"--limit-rate", "500K"}
	return c
}

// waitLog waits (at most 10 s) until ftpgate's log holds at least n lines
// containing s.
func waitLog(t *testing.T, p *netlab.Proc, s string, n int) {
	t.Helper()
	if got := logCount(p, s, n); got < n {
		t.Fatalf("ftpgate logged %q %d times, want %d", s, got, n)
	}
}

// logCount returns how many times ftpgate's log holds s, once that is at
// least n or 10 seconds have passed: its standard error reaches the test
// through a pipe, some time after ftpgate wrote it.
func logCount(p *netlab.Proc, s string, n int) int {
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := strings.Count(p.Stderr.String(), s)
		if got >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
}
