package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTraceCommand checks "ftpgate trace" on the captures recorded in the
// end-to-end network: its exit status (0 all data connections succeeded, 1
// one failed, 2 bad file or usage), its text and JSON reports.
func TestTraceCommand(t *testing.T) {
	dir := t.TempDir()
	notCapture := filepath.Join(dir, "notes.txt")
	os.WriteFile(notCapture, []byte("220 (vsFTPd 3.0.3)\r\n"), 0o644)
	dnat, err := os.ReadFile("trace/testdata/dnat-pasv-epsv.pcap")
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(dir, "truncated.pcap")
	os.WriteFile(truncated, dnat[:len(dnat)-30], 0o644)

	for _, tc := range []struct {
		args       []string
		code       int
		out, errIn string
	}{
		{args: []string{"trace", "trace/testdata/dnat-pasv-epsv.pcap"}, code: 1, out: "FAILED SYN without answer: 198.19.0.2:45968 -> 198.18.1.2:30690"},
		{args: []string{"trace", "trace/testdata/ftpgate-pasv-epsv.pcap"}, code: 0, out: "result: OK, every data connection succeeded"},
		{args: []string{"trace", "trace/testdata/ftpgate-pasv-epsv.pcap", "--ports", "2121"}, code: 0, out: "no FTP control session"},
		{args: []string{"trace", "--ports", "21,2121", "trace/testdata/dnat-pasv-epsv.pcap"}, code: 1, out: "result: FAILED, 2 failures"},
		{args: []string{"trace", truncated}, code: 1, out: "warning: the capture is truncated"},
		{args: []string{"trace", "--count", "10", "trace/testdata/dnat-pasv-epsv.pcap"}, code: 0, out: "10 packets"},
		{args: []string{"trace", notCapture}, code: 2, errIn: "not a pcap or pcapng capture"},
		{args: []string{"trace", filepath.Join(dir, "missing.pcap")}, code: 2, errIn: "missing.pcap"},
		{args: []string{"trace"}, code: 2, errIn: "give a capture file or --interface"},
		{args: []string{"trace", "a.pcap", "b.pcap"}, code: 2, errIn: "one capture file at a time"},
		{args: []string{"trace", "--interface", "lo", "a.pcap"}, code: 2, errIn: "not both"},
		{args: []string{"trace", "--write", "x.pcap", "a.pcap"}, code: 2, errIn: "--write goes with --interface"},
		{args: []string{"trace", "--ports", "21,x", "a.pcap"}, code: 2, errIn: `"x" is not a port`},
		{args: []string{"trace", "--interface", "no-such-if0"}, code: 2, errIn: "no-such-if0"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tc.args, &stdout, &stderr)
		if code != tc.code {
			t.Errorf("ftpgate %v: exit %d, want %d\nstdout: %s\nstderr: %s", tc.args, code, tc.code, stdout.String(), stderr.String())
		}
		if !strings.Contains(stdout.String(), tc.out) {
			t.Errorf("ftpgate %v: stdout %q lacks %q", tc.args, stdout.String(), tc.out)
		}
		if !strings.Contains(stderr.String(), tc.errIn) {
			t.Errorf("ftpgate %v: stderr %q lacks %q", tc.args, stderr.String(), tc.errIn)
		}
	}
}

func TestTraceJSON(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"trace", "--json", "trace/testdata/dnat-pasv-epsv.pcap"}, &stdout, &stderr); code != 1 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var doc struct {
		Sessions []struct {
			Data []struct {
				Verdict string `json:"verdict"`
			} `json:"data_connections"`
		} `json:"sessions"`
		Summary struct {
			Failed int `json:"failed"`
		} `json:"summary"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &doc); err != nil {
		t.Fatalf("%v\n%s", err, stdout.String())
	}
	if len(doc.Sessions) != 2 || doc.Sessions[0].Data[0].Verdict != "syn_unanswered" || doc.Summary.Failed != 2 {
		t.Fatalf("%+v", doc)
	}
}
