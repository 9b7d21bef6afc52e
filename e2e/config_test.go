//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBrokenConfig: the built ftpgate, given a file with many mistakes,
// refuses it in check and in run alike, lists every problem at once, each
// with its line, and starts nothing.
func TestBrokenConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broken.yaml")
	broken := `listeners:
  - name: public
    listen: 198.19.0.1
    upstream: 198.18.1.2:21
    data:
      server_mode: pasv
      client_ports: 80-90
  - name: public
    listen: 198.19.0.1:21
    uptream: 198.18.1.2:21
limits:
  max_sessions: 8.5
  idle_timeout: 30
`
	if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`line 3: listeners[0] (public): listen: invalid address "198.19.0.1": missing port`,
		`line 6: listeners[0] (public): data.server_mode: unknown value "pasv"`,
		`line 7: listeners[0] (public): data.client_ports: 80-90 starts below port 1024`,
		`line 8: listeners[1] (public): name: "public" is already used by listeners[0]`,
		`line 10: listeners[1] (public): unknown key "uptream"`,
		`line 12: limits.max_sessions: 8.5 is not an integer`,
		`line 13: limits.idle_timeout: invalid duration 30`,
	}
	for _, cmd := range []string{"check", "run"} {
		out, err := exec.Command(ftpgateBin, cmd, "--config", path).CombinedOutput()
		if code := exitCode(err); code != 1 {
			t.Errorf("ftpgate %s on a broken file: exit %d (%v), want 1\n%s", cmd, code, err, out)
		}
		if !strings.Contains(string(out), "7 problems:") {
			t.Errorf("ftpgate %s: want \"7 problems:\" in\n%s", cmd, out)
		}
		for _, w := range want {
			if !strings.Contains(string(out), w) {
				t.Errorf("ftpgate %s: want %q in\n%s", cmd, w, out)
			}
		}
	}
}

// exitCode is a finished command's exit status (0 if err is nil, -1 if it
// did not run).
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}
