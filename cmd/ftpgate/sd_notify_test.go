package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// notifySocket listens on a unixgram socket at name (a path, or @name for
// an abstract one), as systemd does, and sets NOTIFY_SOCKET to it.
func notifySocket(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return conn
}

// nextMessage reads one datagram from conn, within a few seconds.
func nextMessage(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

// noMessage checks that conn receives nothing for a moment.
func noMessage(t *testing.T, conn *net.UnixConn) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	buf := make([]byte, 4096)
	if n, err := conn.Read(buf); err == nil {
		t.Errorf("unexpected notification %q", buf[:n])
	}
}

func monotonicUsec(t *testing.T) int64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano() / 1000
}

var reloadingMessage = regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=([0-9]+)$`)

// checkReloading checks a RELOADING=1 message sent between the
// CLOCK_MONOTONIC times before and after (microseconds).
func checkReloading(t *testing.T, msg string, before, after int64) {
	t.Helper()
	m := reloadingMessage.FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("reload notification %q, want RELOADING=1 and MONOTONIC_USEC", msg)
	}
	usec, _ := strconv.ParseInt(m[1], 10, 64)
	if usec < before || usec > after {
		t.Errorf("MONOTONIC_USEC=%d, not between %d and %d: not CLOCK_MONOTONIC now", usec, before, after)
	}
}

func TestNotifier(t *testing.T) {
	for kind, name := range map[string]string{
		"path":     filepath.Join(t.TempDir(), "notify"),
		"abstract": fmt.Sprintf("@ftpgate-test-notify-%d-%d", os.Getpid(), time.Now().UnixNano()),
	} {
		t.Run(kind, func(t *testing.T) {
			conn := notifySocket(t, name)
			var logs bytes.Buffer
			n := newNotifier(os.Getenv("NOTIFY_SOCKET"), slog.New(slog.NewTextHandler(&logs, nil)))
			for _, state := range []string{"READY=1", "STOPPING=1", "STATUS=draining\nREADY=1"} {
				if err := n.notify(state); err != nil {
					t.Fatal(err)
				}
				if got := nextMessage(t, conn); got != state {
					t.Errorf("received %q, want %q", got, state)
				}
			}
			before := monotonicUsec(t)
			n.reloading()
			msg := nextMessage(t, conn)
			checkReloading(t, msg, before, monotonicUsec(t))
			if logs.Len() > 0 {
				t.Errorf("logged: %s", logs.String())
			}
		})
	}
}

func TestNotifierOff(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n := newNotifier(os.Getenv("NOTIFY_SOCKET"), nil)
	if err := n.notify("READY=1"); err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v, want nothing done", err)
	}
	n.reloading() // nothing to send it to, and no logger: must not panic

	// A socket that is neither a path nor abstract, or that nobody listens
	// on: an error, which send logs.
	for _, socket := range []string{"vsock:2:1234", filepath.Join(t.TempDir(), "nobody")} {
		var logs bytes.Buffer
		n := newNotifier(socket, slog.New(slog.NewTextHandler(&logs, nil)))
		if err := n.notify("READY=1"); err == nil {
			t.Errorf("NOTIFY_SOCKET=%s: no error", socket)
		}
		n.send("READY=1")
		if !strings.Contains(logs.String(), "cannot notify systemd") {
			t.Errorf("NOTIFY_SOCKET=%s: send logged %q", socket, logs.String())
		}
	}
}

// TestRunNotifies runs "ftpgate run" under a NOTIFY_SOCKET and sends it
// SIGHUP and SIGTERM: READY=1 comes once the listener accepts, RELOADING=1
// and READY=1 around the reload, STOPPING=1 at SIGTERM.
func TestRunNotifies(t *testing.T) {
	conn := notifySocket(t, filepath.Join(t.TempDir(), "notify"))
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := free.Addr().String()
	free.Close()
	path := filepath.Join(t.TempDir(), "ftpgate.yaml")
	conf := fmt.Sprintf("listeners:\n  - name: notify\n    listen: %s\n    upstream: 127.0.0.1:9\n    data: {path: relay, client_ports: 47000-47009, server_ports: 48000-48009}\nfirewall:\n  backend: none\nlimits:\n  drain_timeout: 0s\n", addr)
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run([]string{"run", "--config", path}, &stdout, &stderr) }()
	// cmdRun handles SIGHUP and SIGTERM from before it binds anything:
	// once READY=1 has come, they go to it, not to the test's process.
	if got := nextMessage(t, conn); got != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("READY=1, but the listener does not accept: %v", err)
	}
	c.Close()

	before := monotonicUsec(t)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	checkReloading(t, nextMessage(t, conn), before, monotonicUsec(t))
	if got := nextMessage(t, conn); got != "READY=1" {
		t.Errorf("after the reload %q, want READY=1", got)
	}

	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := nextMessage(t, conn); got != "STOPPING=1" {
		t.Errorf("at SIGTERM %q, want STOPPING=1", got)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("ftpgate run: exit %d\n%s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("ftpgate run did not stop\n%s", stderr.String())
	}
	noMessage(t, conn)
}
