package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCommandLine(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("listeners:\n  - name: a\n    listen: nowhere\n    upstream: 198.18.1.2:21\n    colour: red\n"), 0o644)
	for _, tc := range []struct {
		args       []string
		code       int
		out, errIn string
	}{
		{args: []string{"version"}, code: 0, out: "ftpgate "},
		{args: []string{"check", "--config", "../../deploy/config.example.yaml"}, code: 0, out: "OK: 1 listener: public 198.19.0.1:21 -> 198.18.1.2:21"},
		{args: []string{"check", "--config", bad}, code: 1, errIn: `line 5: listeners[0] (a): unknown key "colour"`},
		{args: []string{"check", "--config", filepath.Join(dir, "missing.yaml")}, code: 1, errIn: "missing.yaml"},
		{args: []string{"run", "--config", bad}, code: 1, errIn: "unknown key"},
		{args: []string{"check", "stray"}, code: 2, errIn: "unexpected argument"},
		{args: []string{"frobnicate"}, code: 2, errIn: `unknown command "frobnicate"`},
		{args: nil, code: 2, errIn: "usage:"},
		{args: []string{"run", "--help"}, code: 0, out: "ftpgate run runs the gateway"},
		{args: []string{"check", "-h"}, code: 0, out: "ftpgate check checks the configuration"},
		{args: []string{"cleanup", "--help"}, code: 0, out: "-config file"},
		{args: []string{"run", "--colour"}, code: 2, errIn: "flag provided but not defined"},
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
