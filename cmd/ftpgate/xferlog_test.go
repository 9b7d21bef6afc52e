package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/proxy"
)

func TestXferlogLine(t *testing.T) {
	now := time.Date(2026, 12, 6, 8, 5, 9, 0, time.UTC)
	client := netip.MustParseAddrPort("198.18.0.2:40000")
	for _, tt := range []struct {
		name string
		t    proxy.Transfer
		want string // "" for no line
	}{
		{"anonymous download", proxy.Transfer{Client: client, User: "anonymous", Command: "RETR", Path: "pub/big.bin",
			Direction: "download", BytesToClient: 10485760, Seconds: 2.4, Code: 226, Outcome: "ok"},
			"Sun Dec  6 08:05:09 2026 2 198.18.0.2 10485760 pub/big.bin b _ o a anonymous ftp 0 * c\n"},
		{"real user ASCII upload, aborted", proxy.Transfer{Client: client, User: "alice", Command: "STOR", Path: "my notes.txt",
			Direction: "upload", ASCII: true, BytesToServer: 100, Seconds: 0.1, Code: 426, Outcome: "aborted"},
			"Sun Dec  6 08:05:09 2026 1 198.18.0.2 100 my_notes.txt a _ i r alice ftp 0 * i\n"},
		{"kernel path, IPv4-mapped client", proxy.Transfer{Client: netip.MustParseAddrPort("[::ffff:198.18.0.2]:1"), User: "ftp",
			Command: "RETR", Path: "f", Direction: "download", DataPath: proxy.KernelPath, Seconds: 7.6, Code: 226, Outcome: "forwarded"},
			"Sun Dec  6 08:05:09 2026 8 198.18.0.2 0 f b _ o a ftp ftp 0 * c\n"},
		{"no reply", proxy.Transfer{Client: client, Command: "APPE", Path: "a\tb\r\nc", Direction: "upload", Outcome: "ok"},
			"Sun Dec  6 08:05:09 2026 1 198.18.0.2 0 a_b__c b _ i r * ftp 0 * i\n"},
		{"listing", proxy.Transfer{Client: client, Command: "LIST", Direction: "listing", Code: 226, Outcome: "ok"}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := xferlogLine(tt.t, now)
			if ok != (tt.want != "") || got != tt.want {
				t.Errorf("got %q (%v)\nwant %q", got, ok, tt.want)
			}
			if ok && len(strings.Fields(got)) != 18 {
				t.Errorf("%d fields, want 18 (5 of the date, 13 more)", len(strings.Fields(got)))
			}
		})
	}
}

// TestXferlogReopen: lines are appended; after the file is moved away
// (log rotation), reopen starts a new one, and nothing is lost.
func TestXferlogReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xferlog")
	x, err := openXferlog(path)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	tr := proxy.Transfer{Client: netip.MustParseAddrPort("198.18.0.2:1"), User: "u", Command: "RETR", Path: "f",
		Direction: "download", Code: 226, Outcome: "ok"}
	if err := x.record(tr); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	x.record(tr) // still to the moved file
	if err := x.reopen(); err != nil {
		t.Fatal(err)
	}
	x.record(tr)
	for name, want := range map[string]int{path + ".1": 2, path: 1} {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(b), " f b _ o r u ftp 0 * c\n"); n != want {
			t.Errorf("%s holds %d lines, want %d:\n%s", name, n, want, b)
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("xferlog mode %v (%v), want 0640", fi.Mode().Perm(), err)
	}
}
