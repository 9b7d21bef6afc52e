package netlab

import (
	"fmt"
	"strings"
)

// Addresses of the Kubernetes-sidecar network.
const (
	SidecarClientAddr = "198.19.0.2" // a client outside the cluster
	SidecarService    = "198.19.0.1" // the node's address: the Service (LoadBalancer/NodePort)
	SidecarNodeIn     = "198.18.5.1" // the node's side of the pod network
	SidecarPodAddr    = "198.18.5.2" // the pod: ftpgate, and vsftpd on its 127.0.0.1
)

// SidecarService maps these ports of the Service to the pod, port for port:
// the control port, and a passive range that it remaps (as a NodePort or a
// load balancer does), so ftpgate advertises other ports than it binds.
const (
	SidecarServicePorts = 30000 // .. +SidecarPorts-1 on the Service
	SidecarPodPorts     = 40000 // .. +SidecarPorts-1 in the pod (client_ports)
	SidecarPorts        = 10
)

// sidecarNode is the node's rule set, as kube-proxy would write it for a
// Service with externalTrafficPolicy: Local: DNAT of port 21 and of each
// Service port of the passive range to the pod, nothing else forwarded in,
// the pod's own connections out masqueraded. %[1]s is the iptables binary.
const sidecarNode = `
sysctl -qw net.ipv4.ip_forward=1
%[1]s -P INPUT DROP
%[1]s -P FORWARD DROP
%[1]s -A INPUT -i lo -j ACCEPT
%[1]s -A INPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT
%[1]s -A FORWARD -m conntrack --ctstate ESTABLISHED -j ACCEPT
%[1]s -A FORWARD -m conntrack --ctstate DNAT -j ACCEPT
%[1]s -A FORWARD -i in -o out -j ACCEPT
%[1]s -t nat -A POSTROUTING -o out -j MASQUERADE
%[1]s -t nat -A PREROUTING -d ` + SidecarService + ` -p tcp --dport 21 -j DNAT --to-destination ` + SidecarPodAddr + `:21
`

// NewSidecar builds the network of a Kubernetes sidecar deployment: a
// client outside; a node that plays the Service by DNAT; a pod where vsftpd
// listens on 127.0.0.1 only and ftpgate (started with StartFtpgate, in the
// pod, without firewall privileges) fronts it.
//
//	client 198.19.0.2 --- 198.19.0.1 node (Service) 198.18.5.1 --- 198.18.5.2 pod [ftpgate, vsftpd on 127.0.0.1]
func NewSidecar(iptables string) (_ *Network, err error) {
	h, err := newNetwork(iptables, false)
	if err != nil {
		return nil, err
	}
	h.ClientIP, h.ServerIP, h.ListenIP = SidecarClientAddr, "127.0.0.1", SidecarPodAddr
	h.FtpgateNS = h.Server
	defer func() {
		if err != nil {
			h.Close()
		}
	}()
	if err := Link(h.Client, "eth0", []string{SidecarClientAddr + "/24"}, h.Gateway, "out", []string{SidecarService + "/24"}); err != nil {
		return nil, err
	}
	if err := Link(h.Server, "eth0", []string{SidecarPodAddr + "/24"}, h.Gateway, "in", []string{SidecarNodeIn + "/24"}); err != nil {
		return nil, err
	}
	if err := h.setupHosts(map[*NS][]string{h.Client: {SidecarService}, h.Server: {SidecarNodeIn}}); err != nil {
		return nil, err
	}
	var rules strings.Builder
	rules.WriteString(fmt.Sprintf(sidecarNode, iptables))
	for i := range SidecarPorts {
		fmt.Fprintf(&rules, "%s -t nat -A PREROUTING -d %s -p tcp --dport %d -j DNAT --to-destination %s:%d\n",
			iptables, SidecarService, SidecarServicePorts+i, SidecarPodAddr, SidecarPodPorts+i)
	}
	if err := h.Gateway.Script(rules.String()); err != nil {
		return nil, err
	}
	if err := h.startVsftpd(); err != nil {
		return nil, err
	}
	return h, nil
}
