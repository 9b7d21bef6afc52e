package rules

import (
	"fmt"
	"net"
	"syscall"
)

// TransparentListenConfig returns a net.ListenConfig whose listening sockets have IP_TRANSPARENT (and IPV6_TRANSPARENT for IPv6),
// so that a listener can accept connections diverted to it by an iptables TPROXY rule; the accepted connection's LocalAddr is then
// the original destination. Needs CAP_NET_ADMIN.
//
// (The kernel accepts CAP_NET_RAW instead of CAP_NET_ADMIN for these
// options.) Listen fails with EPERM without either. Every socket gets
// IP_TRANSPARENT; an IPv6 socket ("tcp6", which includes a dual-stack
// listener on [::]) gets IPV6_TRANSPARENT too. The caller may set the other
// fields of the returned value (KeepAlive, ...); its Control must stay.
//
// TPROXY diverts without NAT: the connection keeps its original destination,
// so OriginalDestination reports ErrNotExist for it and LocalAddr is the
// answer. The rules an operator adds for a listener on port 2121 (ftpgate
// does not install them):
//
//	# Divert new connections to port 21 to the local listener on 2121, and mark them.
//	iptables  -t mangle -A PREROUTING -p tcp --dport 21 -j TPROXY --on-port 2121 --on-ip 0.0.0.0 --tproxy-mark 0x1/0x1
//	ip6tables -t mangle -A PREROUTING -p tcp --dport 21 -j TPROXY --on-port 2121 --on-ip :: --tproxy-mark 0x1/0x1
//	# Deliver marked packets locally, whatever their destination address.
//	ip rule add fwmark 0x1/0x1 lookup 100
//	ip route add local 0.0.0.0/0 dev lo table 100
//	ip -6 rule add fwmark 0x1/0x1 lookup 100
//	ip -6 route add local ::/0 dev lo table 100
//
// Later packets of a diverted connection match the TPROXY rule again,
// which finds the established socket and marks them. The kernel's
// Documentation/networking/tproxy.rst puts a socket match ahead of it, so
// that they skip the rule's lookups:
//
//	iptables -t mangle -N DIVERT
//	iptables -t mangle -A DIVERT -j MARK --set-mark 0x1/0x1
//	iptables -t mangle -A DIVERT -j ACCEPT
//	iptables -t mangle -I PREROUTING -p tcp -m socket --transparent -j DIVERT
//
// (and the same with ip6tables). Diverted connections traverse filter
// INPUT, not FORWARD: admit them there. Replies leave from the listener's
// socket with the original destination as their source, so the gateway
// must be on the return path (it is, when it routes the clients), and
// rp_filter must not drop the marked packets (net.ipv4.conf.*.rp_filter=0
// or 2 on the inside interface). TPROXY works in PREROUTING only: it does
// not divert connections made on the gateway itself.
func TransparentListenConfig() net.ListenConfig {
	return net.ListenConfig{Control: setTransparent}
}

// setTransparent is the Control func of TransparentListenConfig.
func setTransparent(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if err := syscall.SetsockoptInt(int(fd), syscall.SOL_IP, syscall.IP_TRANSPARENT, 1); err != nil {
			serr = fmt.Errorf("setting IP_TRANSPARENT on %s listener %s: %w", network, address, err)
			return
		}
		if network == "tcp6" || network == "udp6" {
			if err := syscall.SetsockoptInt(int(fd), syscall.SOL_IPV6, ipv6Transparent, 1); err != nil {
				serr = fmt.Errorf("setting IPV6_TRANSPARENT on %s listener %s: %w", network, address, err)
			}
		}
	})
	if err != nil {
		return fmt.Errorf("setting transparent mode on %s listener %s: %w", network, address, err)
	}
	return serr
}

// ipv6Transparent is IPV6_TRANSPARENT (linux/in6.h), which package syscall
// does not define.
const ipv6Transparent = 75
