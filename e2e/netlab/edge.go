package netlab

import (
	"fmt"
	"strconv"
)

// Addresses of the corporate-edge network.
const (
	EdgeClientAddr = "198.18.1.2"  // a client inside the company
	EdgeGatewayIn  = "198.18.1.1"  // the gateway's inside address: ftpgate listens here
	EdgeGatewayOut = "198.19.0.1"  // the gateway's outside address: inside traffic is masqueraded to it
	EdgeServerAddr = "198.19.0.10" // an FTP server on the Internet

	EdgeClientAddr6 = "2001:db8:18:1::2"
	EdgeGatewayIn6  = "2001:db8:18:1::1"
	EdgeGatewayOut6 = "2001:db8:19::1"
	EdgeServerAddr6 = "2001:db8:19::10"
)

// EdgeFirewall is the corporate edge's base rule set: policy DROP,
// ESTABLISHED accepted, new connections from inside to outside port 21
// accepted and masqueraded, nothing else. %[1]s is the iptables binary.
const EdgeFirewall = `
sysctl -qw net.ipv4.ip_forward=1
%[1]s -P INPUT DROP
%[1]s -P FORWARD DROP
%[1]s -A INPUT -i lo -j ACCEPT
%[1]s -A INPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT
%[1]s -A FORWARD -m conntrack --ctstate ESTABLISHED -j ACCEPT
%[1]s -A FORWARD -i in -o out -p tcp --dport 21 -m conntrack --ctstate NEW -j ACCEPT
%[1]s -t nat -A POSTROUTING -o out -j MASQUERADE
`

// EdgeFirewall6 is EdgeFirewall for IPv6, without NAT (the inside has
// global addresses) and with ICMPv6, which neighbour discovery needs.
const EdgeFirewall6 = `
sysctl -qw net.ipv6.conf.all.forwarding=1
%[1]s -P INPUT DROP
%[1]s -P FORWARD DROP
%[1]s -A INPUT -i lo -j ACCEPT
%[1]s -A INPUT -p ipv6-icmp -j ACCEPT
%[1]s -A INPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT
%[1]s -A FORWARD -p ipv6-icmp -j ACCEPT
%[1]s -A FORWARD -m conntrack --ctstate ESTABLISHED -j ACCEPT
%[1]s -A FORWARD -i in -o out -p tcp --dport 21 -m conntrack --ctstate NEW -j ACCEPT
`

// EdgeIntercept diverts the inside's FTP control connections to ftpgate
// listening on port %[2]d (transparent mode):
const EdgeIntercept = `
%[1]s -t nat -A PREROUTING -i in -p tcp --dport 21 -j REDIRECT --to-ports %[2]d
%[1]s -A INPUT -i in -p tcp --dport %[2]d -m conntrack --ctstate NEW -j ACCEPT
`

// NewCorporateEdge builds the corporate-edge network: clients inside,
// the gateway with a stateful firewall and MASQUERADE on its outside
// interface, and vsftpd outside. Until Intercept, FTP crosses it as through
// any such firewall: the control connection passes, data connections do
// not.
//
//	client 198.18.1.2 --- 198.18.1.1 gateway 198.19.0.1 --- 198.19.0.10 server (vsftpd)
func NewCorporateEdge(iptables string) (_ *Network, err error) {
	h, err := newNetwork(iptables, false)
	if err != nil {
		return nil, err
	}
	h.ClientIP, h.ServerIP, h.ListenIP = EdgeClientAddr, EdgeServerAddr, EdgeGatewayIn
	h.ClientIP6, h.ServerIP6, h.ListenIP6 = EdgeClientAddr6, EdgeServerAddr6, EdgeGatewayIn6
	defer func() {
		if err != nil {
			h.Close()
		}
	}()
	if err := Link(h.Client, "eth0", []string{EdgeClientAddr + "/24", EdgeClientAddr6 + "/64"},
		h.Gateway, "in", []string{EdgeGatewayIn + "/24", EdgeGatewayIn6 + "/64"}); err != nil {
		return nil, err
	}
	if err := Link(h.Server, "eth0", []string{EdgeServerAddr + "/24", EdgeServerAddr6 + "/64"},
		h.Gateway, "out", []string{EdgeGatewayOut + "/24", EdgeGatewayOut6 + "/64"}); err != nil {
		return nil, err
	}
	if err := h.setupHosts(map[*NS][]string{
		h.Client: {EdgeGatewayIn, EdgeGatewayIn6}, h.Server: {EdgeGatewayOut, EdgeGatewayOut6},
	}); err != nil {
		return nil, err
	}
	if err := h.Gateway.Script(fmt.Sprintf(EdgeFirewall, iptables)); err != nil {
		return nil, err
	}
	if err := h.Gateway.Script(fmt.Sprintf(EdgeFirewall6, ip6tables(iptables))); err != nil {
		return nil, err
	}
	if err := h.startVsftpd(); err != nil {
		return nil, err
	}
	return h, nil
}

// Intercept adds the rules of EdgeIntercept for port, with iptables (IPv4)
// or, if ipv6, ip6tables, and returns a func that removes them.
func (h *Network) Intercept(port int, ipv6 bool) (undo func() error, err error) {
	tool := h.IPTables
	if ipv6 {
		tool = ip6tables(tool)
	}
	if err := h.Gateway.Script(fmt.Sprintf(EdgeIntercept, tool, port)); err != nil {
		return nil, err
	}
	p := strconv.Itoa(port)
	return func() error {
		return h.Gateway.Script(tool + " -t nat -D PREROUTING -i in -p tcp --dport 21 -j REDIRECT --to-ports " + p + "\n" +
			tool + " -D INPUT -i in -p tcp --dport " + p + " -m conntrack --ctstate NEW -j ACCEPT\n")
	}, nil
}
