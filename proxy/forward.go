package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/ftpgate/ftpgate/nat"
)

// maxForwardPreLogin bounds the commands a forward-mode client may send
// before its USER.
const maxForwardPreLogin = 16

// forwardLogin runs the start of a forward-mode session: ftpgate's own
// greeting, then the client's commands up to "USER name@host[:port]",
// answered by ftpgate itself. It returns where to connect and the user name
// to log in there with. A refused destination ends the session with 421.
func (ss *session) forwardLogin() (netip.AddrPort, string, error) {
	ss.replyNow(220, "ftpgate ready: log in as USER name@host[:port].")
	for range maxForwardPreLogin {
		ss.client.SetReadDeadline(time.Now().Add(ss.srv.idleTimeout()))
		line, err := ss.lr.ReadLine()
		if err != nil {
			return netip.AddrPort{}, "", fmt.Errorf("reading the login: %w", err)
		}
		cmd, refusal := ss.parseCommand(line)
		if refusal != nil {
			ss.replyNow(refusal.code, refusal.text)
			if refusal.end {
				return netip.AddrPort{}, "", errRefused
			}
			continue
		}
		if r := ss.tlsRequiredRefusal(cmd); r != nil {
			ss.reject("command refused", "tls_required", "verb", cmd.Verb)
			ss.replyNow(r.code, r.text)
			continue
		}
		if ss.srv.ClientTLSMode != TLSOff {
			if handled, err := ss.tlsCommand(cmd); handled {
				if err != nil {
					return netip.AddrPort{}, "", err
				}
				continue
			}
		}
		switch cmd.Verb {
		case "USER":
		case "QUIT":
			ss.replyNow(221, "Goodbye.")
			return netip.AddrPort{}, "", errors.New("client quit before logging in")
		case "AUTH":
			ss.refuseAuth(cmd)
			continue
		case "FEAT":
			ss.replyNow(211, "No features before login.")
			continue
		default:
			ss.replyNow(530, "Log in first, as USER name@host[:port].")
			continue
		}
		user, host, ok := splitUserHost(cmd.Arg)
		if !ok {
			ss.replyNow(530, "Log in as USER name@host[:port].")
			continue
		}
		dst, err := ss.resolveDestination(host)
		if err != nil {
			ss.refused = true
			ss.reject("session refused", "allow_list", "destination", host, "err", err)
			ss.replyNow(421, "Service not available, destination not allowed.")
			return netip.AddrPort{}, "", err
		}
		return dst, user, nil
	}
	ss.replyNow(421, "Too many commands before login.")
	return netip.AddrPort{}, "", errors.New("no USER name@host within the first commands")
}

// splitUserHost splits "name@host[:port]" at its last "@": names may hold
// one (an e-mail address as the anonymous password's user, say).
func splitUserHost(arg string) (user, host string, ok bool) {
	i := strings.LastIndexByte(arg, '@')
	if i <= 0 || i == len(arg)-1 {
		return "", "", false
	}
	return arg[:i], arg[i+1:], true
}

// resolveDestination resolves "host[:port]" (port 21 when absent) within
// DataTimeout and returns its first address that the policy allows.
func (ss *session) resolveDestination(hostport string) (netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		host, portStr = strings.Trim(hostport, "[]"), "21"
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return netip.AddrPort{}, fmt.Errorf("destination %q: bad port: %w", hostport, nat.ErrDestination)
	}
	ctx, cancel := context.WithTimeout(ss.ctx, ss.srv.dataTimeout())
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("resolving %q: %w", host, err)
	}
	var errs []error
	for _, a := range addrs {
		a = a.Unmap()
		// SECURITY: the same policy as transparent mode
		// (docs/security.md, "Open proxy"), and never the gateway itself.
		if ss.srv.isLocal(a) {
			errs = append(errs, fmt.Errorf("destination %s is the gateway itself: %w", a, nat.ErrDestination))
			continue
		}
		dst := netip.AddrPortFrom(a, uint16(port))
		if err := nat.CheckDestination(dst, ss.srv.AllowDestinations, ss.srv.AllowPorts); err != nil {
			errs = append(errs, err)
			continue
		}
		return dst, nil
	}
	return netip.AddrPort{}, errors.Join(errs...)
}
