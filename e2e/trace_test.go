//go:build e2e

package e2e

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// traceTestdata is where TestTrace keeps its small captures, for the unit
// tests of cmd/ftpgate/trace. Set FTPGATE_TRACE_UPDATE=1 to rewrite them.
const traceTestdata = "../cmd/ftpgate/trace/testdata"

// traceReport is the part of "ftpgate trace --json" the test reads.
type traceReport struct {
	Sessions []struct {
		Client   string `json:"client"`
		Server   string `json:"server"`
		Closed   bool   `json:"closed"`
		Failed   int    `json:"failed"`
		Findings []struct {
			Kind    string `json:"kind"`
			Message string `json:"message"`
		} `json:"findings"`
		Data []struct {
			Command     string `json:"command"`
			Endpoint    string `json:"endpoint"`
			Verdict     string `json:"verdict"`
			Explanation string `json:"explanation"`
			Transfer    *struct {
				Command   string `json:"command"`
				FinalCode int    `json:"final_code"`
			} `json:"transfer"`
			Connections []struct {
				From               string `json:"from"`
				To                 string `json:"to"`
				SYNs               int    `json:"syns"`
				Answer             string `json:"answer"`
				BytesFromInitiator uint64 `json:"bytes_from_initiator"`
				BytesFromResponder uint64 `json:"bytes_from_responder"`
			} `json:"connections"`
		} `json:"data_connections"`
	} `json:"sessions"`
	Summary struct {
		Packets int `json:"packets"`
		Failed  int `json:"failed"`
	} `json:"summary"`
}

// TestTrace records real transfers on the home router's outside interface
// with "ftpgate trace --interface" itself, and checks what it says: a
// transfer through the plain DNAT fails, and trace explains why (the SYN to
// the private address from the 227, dropped; the SYN to the 229's port,
// dropped); the same transfers through ftpgate are reported transferred.
// The captures are analysed live and again from the files trace wrote.
func TestTrace(t *testing.T) {
	t.Run("plain DNAT", func(t *testing.T) {
		pcap := filepath.Join(t.TempDir(), "dnat.pcap")
		rep, code := traceLive(t, pcap, func() {
			for _, name := range []string{"curl PASV strict", "curl EPSV"} {
				cell := net4.Do(netlab.ClientByName(name), netlab.GatewayDNAT, 21, netlab.OpList)
				if cell.Err == nil {
					t.Fatalf("%s: LIST through the plain DNAT worked; the firewall should drop it\n%s", name, cell.Log)
				}
			}
		})
		if code != 1 {
			t.Errorf("trace exited %d, want 1 (a data connection failed)", code)
		}
		if len(rep.Sessions) != 2 {
			t.Fatalf("%d sessions reported, want 2: %+v", len(rep.Sessions), rep)
		}
		// Sessions are reported as they end: find each by its first
		// negotiation.
		pasv, epsv := rep.Sessions[0], rep.Sessions[1]
		if len(epsv.Data) > 0 && epsv.Data[0].Command == "PASV" {
			pasv, epsv = epsv, pasv
		}
		for _, s := range rep.Sessions {
			if s.Server != netlab.GatewayDNAT+":21" || !strings.HasPrefix(s.Client, netlab.ClientAddr+":") {
				t.Errorf("session %s -> %s", s.Client, s.Server)
			}
		}
		// curl PASV strict: the 227 names the server's private address,
		// the client connects there, and nothing answers.
		if len(pasv.Data) != 1 {
			t.Fatalf("PASV session: %+v", pasv)
		}
		d := pasv.Data[0]
		if d.Command != "PASV" || d.Verdict != "syn_unanswered" || !strings.HasPrefix(d.Endpoint, netlab.ServerAddr+":") ||
			len(d.Connections) == 0 || d.Connections[0].To != d.Endpoint || d.Connections[0].Answer != "none" {
			t.Errorf("PASV data connection: %+v", d)
		}
		if !hasFinding(pasv.Findings, "nat_address", "wrote "+netlab.ServerAddr+" in its 227 reply") {
			t.Errorf("PASV session findings: %+v", pasv.Findings)
		}
		// curl EPSV: the 229's port on the public address, dropped too.
		// (curl then falls back to PASV by itself.)
		if len(epsv.Data) == 0 || epsv.Data[0].Command != "EPSV" || epsv.Data[0].Verdict != "syn_unanswered" ||
			!strings.HasPrefix(epsv.Data[0].Endpoint, netlab.GatewayDNAT+":") {
			t.Errorf("EPSV session: %+v", epsv)
		}
		text, code := traceFile(t, pcap)
		for _, want := range []string{"FAILED SYN without answer: " + netlab.ClientAddr, "-> " + netlab.ServerAddr,
			"firewall without a pinhole", "NAT without ALG", "result: FAILED, 2 failures"} {
			if !strings.Contains(text, want) {
				t.Errorf("trace of the file lacks %q:\n%s", want, text)
			}
		}
		if code != 1 {
			t.Errorf("trace of the file exited %d, want 1", code)
		}
		keepTraceCapture(t, pcap, "dnat-pasv-epsv.pcap", text)
	})

	t.Run("through ftpgate", func(t *testing.T) {
		startFtpgate(t, matrixConfig(defaultBackend), portSame, portPassive, portActive, portKernel)
		pcap := filepath.Join(t.TempDir(), "ftpgate.pcap")
		rep, code := traceLive(t, pcap, func() {
			for _, name := range []string{"curl PASV strict", "curl EPSV"} {
				if cell := net4.Do(netlab.ClientByName(name), netlab.GatewayOut, portSame, netlab.OpList); cell.Err != nil {
					t.Fatalf("%s: LIST through ftpgate: %v\n%s", name, cell.Err, tail(cell.Log, 40))
				}
			}
		})
		if code != 0 {
			t.Errorf("trace exited %d, want 0", code)
		}
		if len(rep.Sessions) != 2 || rep.Summary.Failed != 0 {
			t.Fatalf("report: %+v", rep)
		}
		for _, s := range rep.Sessions {
			if s.Server != netlab.GatewayOut+":21" || len(s.Data) != 1 || len(s.Findings) != 0 || !s.Closed {
				t.Fatalf("session: %+v", s)
			}
			d := s.Data[0]
			if d.Verdict != "transferred" || !strings.HasPrefix(d.Endpoint, netlab.GatewayOut+":") || d.Transfer == nil ||
				d.Transfer.FinalCode != 226 || len(d.Connections) != 1 || d.Connections[0].BytesFromResponder == 0 {
				t.Errorf("data connection: %+v", d)
			}
		}
		text, code := traceFile(t, pcap)
		if code != 0 || !strings.Contains(text, "result: OK, every data connection succeeded") {
			t.Errorf("trace of the file exited %d:\n%s", code, text)
		}
		keepTraceCapture(t, pcap, "ftpgate-pasv-epsv.pcap", text)

		// A 10 MiB RETR, analysed live only: every byte counted, whatever
		// segmentation offload did to the packets on the veth.
		rep, code = traceLive(t, "", func() {
			if cell := net4.Do(netlab.ClientByName("curl EPSV"), netlab.GatewayOut, portSame, netlab.OpRetr); cell.Err != nil {
				t.Fatalf("RETR through ftpgate: %v\n%s", cell.Err, tail(cell.Log, 40))
			}
		})
		if code != 0 || len(rep.Sessions) != 1 || len(rep.Sessions[0].Data) != 1 {
			t.Fatalf("exit %d, report %+v", code, rep)
		}
		d := rep.Sessions[0].Data[0]
		if d.Verdict != "transferred" || d.Transfer == nil || d.Transfer.Command != "RETR "+filepath.Base(netlab.BigFile) ||
			d.Connections[0].BytesFromResponder != netlab.BigSize {
			t.Errorf("RETR data connection: %+v", d)
		}
	})
}

// traceLive runs "ftpgate trace --interface out --json" in the gateway
// (saving the packets to pcap unless it is empty) while do runs, stops it
// with SIGINT and returns its report and exit status.
func traceLive(t *testing.T, pcap string, do func()) (traceReport, int) {
	t.Helper()
	args := []string{"trace", "--interface", "out", "--duration", "90s", "--json"}
	if pcap != "" {
		args = append(args, "--write", pcap)
	}
	p, err := net4.Gateway.Start(ftpgateBin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !p.Exited() {
			p.Signal(syscall.SIGKILL, 5*time.Second)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.Stderr.String(), "capturing on out") {
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("trace did not start capturing: %s", p.Stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	do()
	time.Sleep(500 * time.Millisecond) // the last packets
	err = p.Signal(syscall.SIGINT, 20*time.Second)
	code := p.Cmd.ProcessState.ExitCode()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("trace: %v\n%s", err, p.Stderr.String())
	}
	var rep traceReport
	if err := json.Unmarshal([]byte(p.Stdout.String()), &rep); err != nil {
		t.Fatalf("trace's JSON: %v\n%s\n%s", err, p.Stdout.String(), p.Stderr.String())
	}
	if t.Failed() || code > 1 {
		t.Logf("trace exited %d; stderr:\n%s\nreport:\n%s", code, p.Stderr.String(), p.Stdout.String())
	}
	return rep, code
}

// traceFile runs "ftpgate trace FILE" and returns its text report and exit
// status.
func traceFile(t *testing.T, pcap string) (string, int) {
	t.Helper()
	cmd := exec.Command(ftpgateBin, "trace", pcap)
	out, err := cmd.Output()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("ftpgate trace %s: %v", pcap, err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

// keepTraceCapture copies a capture into the trace package's testdata when
// FTPGATE_TRACE_UPDATE is set (then run its unit tests with -update to
// rewrite the reports they compare against).
func keepTraceCapture(t *testing.T, pcap, name, report string) {
	t.Helper()
	if os.Getenv("FTPGATE_TRACE_UPDATE") == "" {
		return
	}
	data, err := os.ReadFile(pcap)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(traceTestdata, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes) to %s; its report:\n%s", name, len(data), traceTestdata, report)
}

// hasFinding reports whether findings hold one of kind whose message
// contains text.
func hasFinding(findings []struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
}, kind, text string) bool {
	for _, f := range findings {
		if f.Kind == kind && strings.Contains(f.Message, text) {
			return true
		}
	}
	return false
}
