package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"golang.org/x/sys/unix"
)

// notifier tells systemd the service's state, as sd_notify(3) does: one
// datagram per message to the unix socket that NOTIFY_SOCKET names, a path
// or, starting with '@', an abstract socket. Under a unit with Type=notify
// (deploy/systemd/ftpgate.service) ftpgate sends READY=1 once every listener
// is bound and the firewall chains are in place, RELOADING=1 and READY=1
// around a SIGHUP reload, and STOPPING=1 at SIGTERM. Without NOTIFY_SOCKET
// (not under systemd, or another Type) it sends nothing.
type notifier struct {
	socket string       // NOTIFY_SOCKET; empty: send nothing
	log    *slog.Logger // where send reports a message that could not go
}

// newNotifier returns the notifier for the NOTIFY_SOCKET value socket.
func newNotifier(socket string, log *slog.Logger) notifier {
	return notifier{socket: socket, log: log}
}

// notify sends state, newline-separated VARIABLE=value assignments such as
// "READY=1", in one datagram.
func (n notifier) notify(state string) error {
	if n.socket == "" {
		return nil
	}
	if !strings.HasPrefix(n.socket, "/") && !strings.HasPrefix(n.socket, "@") {
		return fmt.Errorf("sd_notify: NOTIFY_SOCKET %q is neither a path nor an abstract socket (@name)", n.socket)
	}
	// Go's net package turns a leading '@' into the NUL byte that names an
	// abstract socket on Linux.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.socket, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	_, werr := conn.Write([]byte(state))
	if err := errors.Join(werr, conn.Close()); err != nil {
		return fmt.Errorf("sd_notify %q: %w", state, err)
	}
	return nil
}

// send is notify for the service's life cycle: a failure is logged, and
// ftpgate goes on (systemd then times the start or reload out itself).
func (n notifier) send(state string) {
	if err := n.notify(state); err != nil && n.log != nil {
		n.log.Warn("cannot notify systemd", "state", state, "err", err)
	}
}

// reloading tells systemd that a reload begins: RELOADING=1 with the
// CLOCK_MONOTONIC time that systemd (253 and later) requires with it. A
// READY=1 must follow when the reload is done, whatever its outcome.
func (n notifier) reloading() {
	if n.socket == "" {
		return
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		n.send("RELOADING=1")
		return
	}
	n.send(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", ts.Nano()/1000))
}
