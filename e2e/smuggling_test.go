//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// smuggled are command lines that real servers execute as PASV, EPSV, PORT
// or EPRT, though they are not "VERB" or "VERB SP arguments": ProFTPD
// splits the verb at any white space, vsftpd and pure-ftpd take "P@SW"
// for PASV. Written with Python escapes (the raw client decodes them). The
// PORT and EPRT name the gateway's inside address and a port of another
// listener's server-side range: through a proxy that forwarded them, the
// server would connect there (cross-session data theft or injection).
var smuggled = []string{
	`P@SW`,
	`PASV\t`,
	`EPSV\t`,
	`PORT\t198,18,1,1,195,80`,
	`EPRT\t|1|198.18.1.1|50000|`,
	`PASS\tsmuggled-secret`,
}

// TestSmuggledCommands sends those lines to vsftpd, pure-ftpd and proftpd,
// first straight from the gateway (what each server makes of them: at
// least one is executed by each, else the test would prove nothing), then
// through ftpgate, which refuses every one with 500 and forwards none; the
// session goes on, and the password never reaches ftpgate's log.
func TestSmuggledCommands(t *testing.T) {
	lines := filepath.Join(t.TempDir(), "smuggled.txt")
	if err := os.WriteFile(lines, []byte(strings.Join(append(smuggled, "NOOP"), "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, s := range interopServers {
		srv, err := net4.StartServer(s.kind, s.port)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := srv.Stop(); err != nil {
				t.Error(err)
			}
		})
	}
	openInteropPorts(t)
	var listeners []int
	for _, s := range interopServers {
		listeners = append(listeners, s.listener)
	}
	gw := startFtpgate(t, interopConfig(), listeners...)
	// raw sends the lines to host:port from ns and returns the replies to
	// them; each gets a session of its own with each.
	raw := func(t *testing.T, ns *netlab.NS, host string, port int, each bool) []string {
		t.Helper()
		args := []string{net4.PythonClient(), host, strconv.Itoa(port), "-", "raw", lines, "-"}
		if each {
			args = append(args, "--each")
		}
		stdout, stderr, err := ns.Exec(2*time.Minute, nil, "python3", args...)
		if err != nil {
			t.Fatalf("raw client to %s:%d: %v\n%s%s", host, port, err, stdout, stderr)
		}
		var replies []string
		for line := range strings.Lines(stdout) {
			replies = append(replies, strings.TrimPrefix(strings.TrimSpace(line), "REPLY "))
		}
		var mine []string // without greeting, USER and PASS
		for len(replies) > 0 {
			if len(replies) < 4 {
				t.Fatalf("replies from %s:%d cut short:\n%s", host, port, stdout)
			}
			n := 1
			if !each {
				n = len(replies) - 3
			}
			mine, replies = append(mine, replies[3:3+n]...), replies[3+n:]
		}
		if len(mine) != len(smuggled)+1 {
			t.Fatalf("%d replies from %s:%d, want %d:\n%s", len(mine), host, port, len(smuggled)+1, stdout)
		}
		return mine
	}
	for _, s := range interopServers {
		t.Run(string(s.kind), func(t *testing.T) {
			direct := raw(t, net4.Gateway, netlab.ServerAddr, s.port, true)
			executed := 0
			for i, line := range smuggled {
				t.Logf("%s straight to %s: %s", line, s.kind, direct[i])
				if strings.HasPrefix(direct[i], "2") && !strings.HasPrefix(line, "PASS") {
					executed++
				}
			}
			if executed == 0 {
				t.Errorf("%s executed none of the smuggled data commands: the test shows nothing", s.kind)
			}
			through := raw(t, net4.Client, netlab.GatewayOut, s.listener, false)
			for i, line := range smuggled {
				if !strings.HasPrefix(through[i], "500 Syntax error") {
					t.Errorf("%s through ftpgate to %s: %q, want ftpgate's 500", line, s.kind, through[i])
				}
			}
			if got := through[len(smuggled)]; !strings.HasPrefix(got, "200") {
				t.Errorf("NOOP after the smuggled lines: %q, want 200", got)
			}
		})
	}
	if n := logCount(gw, "reason=command_syntax", len(smuggled)*len(interopServers)); n != len(smuggled)*len(interopServers) {
		t.Errorf("ftpgate logged %d refusals, want %d", n, len(smuggled)*len(interopServers))
	}
	if strings.Contains(gw.Stderr.String(), "smuggled-secret") {
		t.Error("the password of PASS<TAB> reached ftpgate's log")
	}
}
