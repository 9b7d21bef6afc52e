package main

import (
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ftpgate/ftpgate/proxy"
)

// xferlog writes the file transfers to a file in the classic xferlog format
// (xferlog(5) of wu-ftpd; vsftpd's xferlog_std_format and ProFTPD's
// TransferLog write the same), which existing log tooling parses:
//
//	current-time transfer-time remote-host file-size filename transfer-type
//	special-action-flag direction access-mode username service-name
//	authentication-method authenticated-user-id completion-status
//
// for example
//
//	Sun Dec  6 18:26:43 2026 2 198.18.0.2 10485760 pub/big.bin b _ o a anonymous ftp 0 * c
//
// Only RETR, STOR, APPE and STOU are written (servers leave listings out).
// The filename is the path as the client sent it, with white space
// replaced by "_" so that the fields stay apart. On the kernel path the
// data does not pass ftpgate, and file-size is 0.
type xferlog struct {
	mu   sync.Mutex
	path string
	f    *os.File
	now  func() time.Time
}

// openXferlog opens (creates, appends to) the file at path.
func openXferlog(path string) (*xferlog, error) {
	x := &xferlog{path: path, now: time.Now}
	if err := x.reopen(); err != nil {
		return nil, err
	}
	return x, nil
}

// reopen opens the file again, after log rotation moved it away.
func (x *xferlog) reopen() error {
	f, err := os.OpenFile(x.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("opening the xferlog: %w", err)
	}
	x.mu.Lock()
	old := x.f
	x.f = f
	x.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// Close closes the file.
func (x *xferlog) Close() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.f == nil {
		return nil
	}
	err := x.f.Close()
	x.f = nil
	return err
}

// record writes t's line, if t is a file transfer (proxy.Server.OnTransfer:
// one write, no waiting). A failed write is returned for the caller to log.
func (x *xferlog) record(t proxy.Transfer) error {
	line, ok := xferlogLine(t, x.now())
	if !ok {
		return nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.f == nil {
		return nil
	}
	if _, err := x.f.WriteString(line); err != nil {
		return fmt.Errorf("writing the xferlog: %w", err)
	}
	return nil
}

// xferlogLine formats t as one xferlog line, written at now; ok is false
// for what xferlog does not record (listings).
func xferlogLine(t proxy.Transfer, now time.Time) (line string, ok bool) {
	var direction string
	switch t.Direction {
	case "download":
		direction = "o"
	case "upload":
		direction = "i"
	default:
		return "", false
	}
	kind := "b"
	if t.ASCII {
		kind = "a"
	}
	access, user := "r", t.User
	switch strings.ToLower(user) {
	case "anonymous", "ftp":
		access = "a"
	}
	if user == "" {
		user = "*"
	}
	complete := "i"
	if t.Code >= 200 && t.Code < 300 && (t.Outcome == "ok" || t.Outcome == "forwarded") {
		complete = "c"
	}
	seconds := max(1, int64(math.Round(t.Seconds)))
	return fmt.Sprintf("%s %d %s %d %s %s _ %s %s %s ftp 0 * %s\n",
		now.Format("Mon Jan _2 15:04:05 2006"), seconds, t.Client.Addr().Unmap(), t.Bytes(),
		xferlogField(t.Path), kind, direction, access, xferlogField(user), complete), true
}

// xferlogField keeps a field one field: white space and control
// characters become "_"; an empty one is "-".
func xferlogField(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f {
			return '_'
		}
		return r
	}, s)
}
