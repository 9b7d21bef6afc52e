package trace

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the reports of testdata/*.pcap")

// TestRealCaptures analyses captures recorded in the end-to-end network (by
// TestTrace in e2e/, with "ftpgate trace --interface out --write") on the
// home router's outside interface, and compares the text report with
// testdata/NAME.txt (rewrite with -update).
//
//   - dnat-pasv-epsv.pcap: curl through the router's plain DNAT of port 21,
//     first PASV strict (the 227 names the server's private address
//     198.18.1.2; the SYNs there are dropped), then EPSV (the SYNs to the
//     229's port on the public address are dropped; curl falls back to PASV
//     and gives up).
//   - ftpgate-pasv-epsv.pcap: the same two clients through ftpgate; both
//     listings arrive.
func TestRealCaptures(t *testing.T) {
	for _, tt := range []struct {
		file     string
		verdicts []Verdict // of every listed data connection, in order
		findings []string  // of each session, in order
		failed   int
	}{
		{"dnat-pasv-epsv.pcap", []Verdict{SYNUnanswered, SYNUnanswered, Unused}, []string{FindingNATAddress, FindingNATAddress}, 2},
		{"ftpgate-pasv-epsv.pcap", []Verdict{Transferred, Transferred}, nil, 0},
	} {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			col, err := analyze(t, data, Config{})
			if err != nil {
				t.Fatal(err)
			}
			var verdicts []Verdict
			var findings []string
			for _, s := range col.sessions {
				if s.Server.Port() != 21 || !s.Closed {
					t.Errorf("session %v -> %v, closed %v", s.Client, s.Server, s.Closed)
				}
				for _, d := range s.Data {
					verdicts = append(verdicts, d.Verdict)
				}
				for _, f := range s.Findings {
					findings = append(findings, f.Kind)
				}
			}
			if !equal(verdicts, tt.verdicts) || !equal(findings, tt.findings) || col.summary.Failed != tt.failed {
				t.Fatalf("verdicts %v, findings %v, failed %d; want %v, %v, %d",
					verdicts, findings, col.summary.Failed, tt.verdicts, tt.findings, tt.failed)
			}

			src, err := OpenFile(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			a := New(Config{}, NewTextReporter(&out))
			if err := Run(t.Context(), src, a, RunOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := a.Finish(path); err != nil {
				t.Fatal(err)
			}
			golden := strings.TrimSuffix(path, ".pcap") + ".txt"
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if out.String() != string(want) {
				t.Errorf("report differs from %s:\n%s", golden, out.String())
			}
		})
	}
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
