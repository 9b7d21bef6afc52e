package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"syscall"
)

// Telnet bytes of the Synch signal that precedes ABOR (RFC 959 section
// 4.1.3, RFC 854): IAC IP, then IAC DM with the DM sent as TCP urgent data.
const (
	telnetIAC = 0xFF
	telnetDM  = 0xF2
)

// telnetAbort is ABOR preceded by the Telnet IP and Synch.
var telnetAbort = []byte("\xff\xf4\xff\xf2ABOR\r\n")

// writeCommand writes a command line to the server. A line that starts
// with the Telnet Synch (IAC IP IAC DM, as clients send before ABOR) is
// written with its DM byte as TCP urgent data again, as the client sent it:
// servers such as vsftpd notice an ABOR during a transfer only by the
// urgent signal (SIGURG). The client's urgent byte reached ftpgate inline
// (SO_OOBINLINE), so the line is intact.
func writeCommand(c net.Conn, line, telnet []byte) error {
	dm := bytes.Index(telnet, []byte{telnetIAC, telnetDM})
	tc, ok := c.(*net.TCPConn)
	if dm < 0 || !ok {
		_, err := c.Write(line)
		return err
	}
	at := dm + 1 // the DM byte
	if _, err := c.Write(line[:at]); err != nil {
		return err
	}
	if err := sendUrgent(tc, line[at]); err != nil {
		return fmt.Errorf("sending the Telnet DM as urgent data: %w", err)
	}
	_, err := c.Write(line[at+1:])
	return err
}

// sendUrgent sends one byte with MSG_OOB: TCP marks it as urgent data.
func sendUrgent(c *net.TCPConn, b byte) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	werr := raw.Write(func(fd uintptr) bool {
		serr = syscall.Sendto(int(fd), []byte{b}, syscall.MSG_OOB, nil)
		return !errors.Is(serr, syscall.EAGAIN)
	})
	return errors.Join(werr, serr)
}
