//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// spareConfig runs one listener in server_mode same on portSpare.
const spareConfig = `
listeners:
  - name: spare
    listen: 198.19.0.1:2123
    upstream: 198.18.1.2:21
    data: {client_ports: 40300-40399, server_ports: 50300-50399}
limits: {idle_timeout: 2m, data_timeout: 5s}
log: {level: debug, format: text}
`

// TestBadInput sends hostile commands on one session against the real
// vsftpd, while another session transfers a file: each gets a clear reply,
// the overlong line ends that session alone, the transfer is unharmed, and
// nothing stays behind.
func TestBadInput(t *testing.T) {
	gw := startFtpgate(t, spareConfig, portSpare)
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
	log := gw.Stderr.String()
	for _, reason := range []string{"reason=bounce", "reason=low_port", "reason=family", "reason=line_too_long"} {
		if !strings.Contains(log, reason) {
			t.Errorf("ftpgate logged no %s", reason)
		}
	}
	assertNoLeftovers(t, gw, baseline)
}

// TestPortTheft: a fourth host connects to the data port that ftpgate
// advertised before the client does. ftpgate closes that connection without
// sending a byte, logs it, and the client's transfer still works.
func TestPortTheft(t *testing.T) {
	gw := startFtpgate(t, spareConfig, portSpare)
	baseline := openFDs(t, gw)
	local := filepath.Join(net4.Dir, "client", "theft.bin")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client := net4.Client.Command(ctx, "python3", net4.PythonClient(),
		netlab.GatewayOut, strconv.Itoa(portSpare), "passive", "thief", netlab.BigFile, local, "--strict")
	client.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := client.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := client.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	client.Stderr = &stderr
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(-client.Process.Pid, syscall.SIGKILL)
	port := ""
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "DATAPORT" {
			port = f[1]
			break
		}
	}
	if port == "" {
		t.Fatalf("client printed no DATAPORT: %s", stderr.String())
	}

	thief := fmt.Sprintf(`
import socket
s = socket.create_connection((%q, %s), timeout=10)
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
	got, errOut, err := net4.Thief.Exec(30*time.Second, nil, "python3", "-c", thief)
	if err != nil {
		t.Fatalf("thief: %v: %s", err, errOut)
	}
	if strings.TrimSpace(got) != "0" {
		t.Errorf("the thief received %q bytes, want 0", strings.TrimSpace(got))
	}

	fmt.Fprintln(stdin) // now the client connects and retrieves
	go func() {
		for sc.Scan() {
		}
	}()
	if err := client.Wait(); err != nil {
		t.Fatalf("client: %v\n%s", err, stderr.String())
	}
	if sum, err := netlab.FileSHA256(local); err != nil || sum != net4.BigSHA256 {
		t.Errorf("retrieved file: sha256 %.12s, err %v; want %.12s", sum, err, net4.BigSHA256)
	}
	if !strings.Contains(gw.Stderr.String(), "reason=theft") {
		t.Error("ftpgate did not log the stolen connection (reason=theft)")
	}
	assertNoLeftovers(t, gw, baseline)
}

// TestPeerVanishes kills the client, then the server's session process, in
// the middle of a transfer: the session ends, nothing stays behind, and the
// next transfer works.
func TestPeerVanishes(t *testing.T) {
	gw := startFtpgate(t, spareConfig, portSpare)
	baseline := openFDs(t, gw)
	slow := slowClient()

	t.Run("client", func(t *testing.T) {
		start := time.Now()
		// Killed after 2 s of a transfer that would take 100 s.
		argv := []string{"curl", "-sS", "--limit-rate", "100K", "-o", filepath.Join(net4.Dir, "client", "vanish.bin"),
			fmt.Sprintf("ftp://%s:%d/%s", netlab.GatewayOut, portSpare, netlab.BigFile)}
		_, _, err := net4.Client.Exec(2*time.Second, nil, argv[0], argv[1:]...)
		if err == nil || time.Since(start) > 10*time.Second {
			t.Fatalf("the slow transfer was not cut off: %v", err)
		}
		waitLog(t, gw, "session ended", 1)
	})

	t.Run("server", func(t *testing.T) {
		done := make(chan netlab.Cell, 1)
		go func() { done <- net4.Do(slow, netlab.GatewayOut, portSpare, netlab.OpRetr) }()
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
		waitLog(t, gw, "session ended", 2)
	})

	if cell := net4.Do(netlab.ClientByName("curl EPSV"), netlab.GatewayOut, portSpare, netlab.OpRetr); cell.Err != nil {
		t.Errorf("transfer after the peers vanished: %v", cell.Err)
	}
	assertNoLeftovers(t, gw, baseline)
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
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Count(p.Stderr.String(), s) >= n {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("ftpgate logged %q %d times, want %d", s, strings.Count(p.Stderr.String(), s), n)
}
