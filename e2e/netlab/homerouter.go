package netlab

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Addresses of the home-router network.
const (
	ClientAddr   = "198.19.0.2"  // the FTP client, on the Internet side
	GatewayOut   = "198.19.0.1"  // the router's public address: ftpgate listens here
	GatewayDNAT  = "198.19.0.10" // a second public address: plain DNAT of port 21 to the server, no ALG
	GatewayIn    = "198.18.1.1"  // the router's inside address
	ServerAddr   = "198.18.1.2"  // the FTP server, behind NAT
	GatewayThief = "198.19.1.1"  // the router's address towards the thief
	ThiefAddr    = "198.19.1.2"  // a fourth host that tries to steal data connections
)

// IPv6 addresses of the home-router network: every host is dual-stack.
const (
	ClientAddr6   = "2001:db8:19::2"
	GatewayOut6   = "2001:db8:19::1"
	GatewayIn6    = "2001:db8:18:1::1"
	ServerAddr6   = "2001:db8:18:1::2"
	GatewayThief6 = "2001:db8:19:1::1"
	ThiefAddr6    = "2001:db8:19:1::2"
)

// Files on the FTP server.
const (
	BigFile = "pub/big.bin" // 10 MiB of random bytes
	BigSize = 10 << 20
)

// Network is a test network of ftpgate's end-to-end tests, demo and
// benchmarks: an FTP client, a Linux gateway with a stateful firewall and
// NAT, where ftpgate runs, and an FTP server (vsftpd). NewHomeRouter and
// NewCorporateEdge build the two shapes.
type Network struct {
	*Lab
	Client, Gateway, Server *NS
	// Thief is a fourth host that tries to steal data connections; nil in
	// networks without one.
	Thief *NS

	// ClientIP and ServerIP are the client's and the server's addresses;
	// ListenIP is the gateway address where ftpgate listens. The ...6
	// fields are their IPv6 counterparts, empty in an IPv4-only network.
	ClientIP, ServerIP, ListenIP    string
	ClientIP6, ServerIP6, ListenIP6 string

	// FTPRoot is vsftpd's anonymous root: pub/ to read, upload/ to write.
	FTPRoot string
	// BigSHA256 is the hash of BigFile.
	BigSHA256 string
	// FtpgateNS is where StartFtpgate runs ftpgate: the gateway, or in
	// the sidecar network the pod.
	FtpgateNS *NS

	// IPTables is the gateway's iptables binary: "iptables" (Debian's
	// default, the nf_tables variant) or "iptables-legacy".
	IPTables string

	vsftpd   *Proc
	vsftpd6  *Proc        // the IPv6 vsftpd, in dual-stack networks
	cellSeq  atomic.Int64 // names the files of each cell
	uploadMu sync.Mutex   // guards writing the upload source once
}

// HomeRouter is the network of NewHomeRouter: a client on the Internet side,
// a Linux home router with a stateful firewall and NAT, and an FTP server
// behind it that advertises its private address. A fourth host, the thief,
// sits on another Internet-side link.
//
//	client 198.19.0.2 --- 198.19.0.1 (+ .10) gateway 198.18.1.1 --- 198.18.1.2 server (vsftpd)
//	thief  198.19.1.2 --- 198.19.1.1 gateway
type HomeRouter = Network

// HomeRouterListeners are ftpgate's IPv4 listeners on the home router (the
// items of a "listeners:" list): one per server_mode on the relay path
// (ports 21, 2121, 2122) and the kernel path (2124).
const HomeRouterListeners = `
  - name: same
    listen: 198.19.0.1:21
    upstream: 198.18.1.2:21
    data: {server_mode: same, client_ports: 40000-40099, server_ports: 50000-50099}
  - name: passive
    listen: 198.19.0.1:2121
    upstream: 198.18.1.2:21
    data: {server_mode: passive, client_ports: 40100-40199, server_ports: 50100-50199}
  - name: active
    listen: 198.19.0.1:2122
    upstream: 198.18.1.2:21
    data: {server_mode: active, client_ports: 40200-40299, server_ports: 50200-50299}
  - name: kernel
    listen: 198.19.0.1:2124
    upstream: 198.18.1.2:21
    data: {path: kernel, client_ports: 40400-40499, server_ports: 50400-50499}
`

// GatewayFirewall is the router's base rule set: policy DROP, ESTABLISHED
// accepted, the control ports (%[2]s) accepted, nothing else. Data
// connections get through only by ftpgate's pinholes. %[1]s is the iptables
// binary.
const GatewayFirewall = `
sysctl -qw net.ipv4.ip_forward=1
%[1]s -P INPUT DROP
%[1]s -P FORWARD DROP
%[1]s -A INPUT -i lo -j ACCEPT
%[1]s -A INPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT
%[1]s -A INPUT -p tcp -m multiport --dports %[2]s -m conntrack --ctstate NEW -j ACCEPT
%[1]s -A FORWARD -m conntrack --ctstate ESTABLISHED -j ACCEPT
# The plain port forward, without an ALG: public .10:21 to the server.
%[1]s -t nat -A PREROUTING -d ` + GatewayDNAT + ` -p tcp --dport 21 -j DNAT --to-destination ` + ServerAddr + `:21
%[1]s -A FORWARD -d ` + ServerAddr + ` -p tcp --dport 21 -m conntrack --ctstate NEW -j ACCEPT
%[1]s -t nat -A POSTROUTING -o out -j MASQUERADE
`

// GatewayFirewall6 is GatewayFirewall for IPv6 (no NAT: the server has a
// global address, but the firewall admits no new connection to it).
// ICMPv6 is accepted: neighbour discovery needs it. %[1]s is the ip6tables
// binary.
const GatewayFirewall6 = `
sysctl -qw net.ipv6.conf.all.forwarding=1
%[1]s -P INPUT DROP
%[1]s -P FORWARD DROP
%[1]s -A INPUT -i lo -j ACCEPT
%[1]s -A INPUT -p ipv6-icmp -j ACCEPT
%[1]s -A INPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT
%[1]s -A INPUT -p tcp -m multiport --dports %[2]s -m conntrack --ctstate NEW -j ACCEPT
%[1]s -A FORWARD -p ipv6-icmp -j ACCEPT
%[1]s -A FORWARD -m conntrack --ctstate ESTABLISHED -j ACCEPT
`

// hostHygiene makes every host reject (and count) traffic to anything but
// the test address space, so a stray packet fails a test instead of leaving.
const hostHygiene = `
iptables -A OUTPUT -o lo -j ACCEPT
iptables -A OUTPUT -d 198.18.0.0/15 -j ACCEPT
iptables -A OUTPUT -j REJECT
ip6tables -A OUTPUT -o lo -j ACCEPT
ip6tables -A OUTPUT -d 2001:db8::/32 -j ACCEPT
# Link-local traffic (neighbour discovery, MLD) stays on the test links.
ip6tables -A OUTPUT -d fe80::/10 -j ACCEPT
ip6tables -A OUTPUT -d ff02::/16 -j ACCEPT
ip6tables -A OUTPUT -j REJECT
`

// NewHomeRouter builds the network with the gateway's firewall written by
// the iptables binary iptables ("iptables" or "iptables-legacy"), writes the
// server's files and starts vsftpd. listenPorts are the control ports that
// the gateway accepts. On error, everything built so far is removed.
func NewHomeRouter(iptables string, listenPorts ...int) (_ *HomeRouter, err error) {
	h, err := newNetwork(iptables, true)
	if err != nil {
		return nil, err
	}
	h.ClientIP, h.ServerIP, h.ListenIP = ClientAddr, ServerAddr, GatewayOut
	h.ClientIP6, h.ServerIP6, h.ListenIP6 = ClientAddr6, ServerAddr6, GatewayOut6
	defer func() {
		if err != nil {
			h.Close()
		}
	}()
	if err := Link(h.Client, "eth0", []string{ClientAddr + "/24", ClientAddr6 + "/64"},
		h.Gateway, "out", []string{GatewayOut + "/24", GatewayDNAT + "/24", GatewayOut6 + "/64"}); err != nil {
		return nil, err
	}
	if err := Link(h.Server, "eth0", []string{ServerAddr + "/24", ServerAddr6 + "/64"},
		h.Gateway, "in", []string{GatewayIn + "/24", GatewayIn6 + "/64"}); err != nil {
		return nil, err
	}
	if err := Link(h.Thief, "eth0", []string{ThiefAddr + "/24", ThiefAddr6 + "/64"},
		h.Gateway, "thief", []string{GatewayThief + "/24", GatewayThief6 + "/64"}); err != nil {
		return nil, err
	}
	if err := h.setupHosts(map[*NS][]string{
		h.Client: {GatewayOut, GatewayOut6}, h.Server: {GatewayIn, GatewayIn6}, h.Thief: {GatewayThief, GatewayThief6},
	}); err != nil {
		return nil, err
	}
	ports := make([]string, len(listenPorts))
	for i, p := range listenPorts {
		ports[i] = strconv.Itoa(p)
	}
	if err := h.Gateway.Script(fmt.Sprintf(GatewayFirewall, iptables, strings.Join(ports, ","))); err != nil {
		return nil, err
	}
	if err := h.Gateway.Script(fmt.Sprintf(GatewayFirewall6, ip6tables(iptables), strings.Join(ports, ","))); err != nil {
		return nil, err
	}
	if err := h.startVsftpd(); err != nil {
		return nil, err
	}
	return h, nil
}

// newNetwork makes the lab and the namespaces of a network: client,
// gateway, server and, if thief, the thief.
func newNetwork(iptables string, thief bool) (*Network, error) {
	lab, err := New()
	if err != nil {
		return nil, err
	}
	h := &Network{Lab: lab, IPTables: iptables}
	roles := []struct {
		p    **NS
		role string
	}{{&h.Client, "client"}, {&h.Gateway, "gw"}, {&h.Server, "server"}}
	if thief {
		roles = append(roles, struct {
			p    **NS
			role string
		}{&h.Thief, "thief"})
	}
	for _, ns := range roles {
		if *ns.p, err = lab.AddNS(ns.role); err != nil {
			lab.Close()
			return nil, err
		}
	}
	return h, nil
}

// setupHosts gives each host its default routes through the gateway (one
// address per family) and the hygiene rules.
func (h *Network) setupHosts(gateways map[*NS][]string) error {
	for ns, gws := range gateways {
		for _, gw := range gws {
			family := "-4"
			if strings.Contains(gw, ":") {
				family = "-6"
			}
			if _, err := ns.Run("ip", family, "route", "add", "default", "via", gw); err != nil {
				return err
			}
		}
		if err := ns.Script(hostHygiene); err != nil {
			return err
		}
	}
	return nil
}

// ip6tables is the ip6tables binary of the same variant as iptables.
func ip6tables(iptables string) string {
	return strings.Replace(iptables, "iptables", "ip6tables", 1)
}

// startVsftpd writes vsftpd's files and configuration and runs it in the
// foreground in the server namespace.
func (h *Network) startVsftpd() error {
	h.FTPRoot = filepath.Join(h.Dir, "ftproot")
	empty := filepath.Join(h.Dir, "vsftpd-empty")
	for _, d := range []string{h.FTPRoot, filepath.Join(h.FTPRoot, "pub"), filepath.Join(h.FTPRoot, "upload"), empty} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// The anonymous user writes to upload/ only.
	if out, err := exec.Command("chown", "ftp:ftp", filepath.Join(h.FTPRoot, "upload")).CombinedOutput(); err != nil {
		return fmt.Errorf("chown upload: %w: %s", err, out)
	}
	sum, err := WriteRandomFile(filepath.Join(h.FTPRoot, BigFile), BigSize)
	if err != nil {
		return err
	}
	h.BigSHA256 = sum
	conf := filepath.Join(h.Dir, "vsftpd.conf")
	// pasv_address is left unset: vsftpd advertises its private address,
	// as a server behind NAT does. pasv_promiscuous and port_promiscuous
	// stay NO: data connections must come from the control peer's address,
	// which is what a proxy must get right.
	text := `listen=YES
listen_ipv6=NO
listen_address=` + h.ServerIP + `
listen_port=21
background=NO
anonymous_enable=YES
local_enable=NO
no_anon_password=YES
write_enable=YES
anon_upload_enable=YES
anon_mkdir_write_enable=YES
anon_other_write_enable=YES
anon_umask=022
anon_root=` + h.FTPRoot + `
ftp_username=ftp
secure_chroot_dir=` + empty + `
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
pasv_enable=YES
pasv_min_port=30000
pasv_max_port=30999
port_enable=YES
connect_from_port_20=NO
pasv_promiscuous=NO
port_promiscuous=NO
dirmessage_enable=NO
hide_ids=YES
syslog_enable=NO
xferlog_enable=YES
log_ftp_protocol=YES
vsftpd_log_file=` + filepath.Join(h.Dir, "vsftpd.log") + `
idle_session_timeout=300
data_connection_timeout=60
accept_timeout=30
connect_timeout=30
max_clients=0
max_per_ip=0
async_abor_enable=YES
`
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return err
	}
	p, err := h.Server.Start("vsftpd", conf)
	if err != nil {
		return err
	}
	h.vsftpd = p
	if err := h.WaitListening(h.Server, h.ServerIP+":21", 10*time.Second); err != nil {
		return fmt.Errorf("vsftpd did not start: %w: %s", err, p.Stderr.String())
	}
	if h.ServerIP6 == "" {
		return nil
	}
	// A vsftpd listens on one address family: a second one serves IPv6,
	// from the same files.
	conf6 := filepath.Join(h.Dir, "vsftpd6.conf")
	text6 := strings.Replace(text, "listen=YES\nlisten_ipv6=NO\nlisten_address="+h.ServerIP,
		"listen=NO\nlisten_ipv6=YES\nlisten_address6="+h.ServerIP6, 1)
	text6 = strings.Replace(text6, "vsftpd.log", "vsftpd6.log", 1)
	if err := os.WriteFile(conf6, []byte(text6), 0o600); err != nil {
		return err
	}
	p6, err := h.Server.Start("vsftpd", conf6)
	if err != nil {
		return err
	}
	h.vsftpd6 = p6
	if err := h.WaitListening(h.Server, "["+h.ServerIP6+"]:21", 10*time.Second); err != nil {
		return fmt.Errorf("vsftpd (IPv6) did not start: %w: %s", err, p6.Stderr.String())
	}
	return nil
}

// WaitListening waits until something listens on addr (host:port) in ns,
// polling at most every 50 ms until d has passed.
func (h *Network) WaitListening(ns *NS, addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		out, err := ns.Run("ss", "-Hltn", "src", addr)
		if err == nil && strings.TrimSpace(out) != "" {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on %s in %s after %s", addr, ns.Name, d)
}

// Listening returns the TCP ports that listen in ns on addr (an IP; "" for
// any address).
func (h *Network) Listening(ns *NS, ip string) ([]int, error) {
	out, err := ns.Run("ss", "-Hltn")
	if err != nil {
		return nil, err
	}
	var ports []int
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		host, port, err := net.SplitHostPort(f[3])
		if err != nil || (ip != "" && host != ip) {
			continue
		}
		if n, err := strconv.Atoi(port); err == nil {
			ports = append(ports, n)
		}
	}
	return ports, nil
}

// StrayPackets returns how many packets the hosts' hygiene rules rejected
// (traffic to addresses outside the test space). It must stay zero.
func (h *Network) StrayPackets() (int, error) {
	total := 0
	for _, ns := range []*NS{h.Client, h.Server, h.Thief} {
		if ns == nil {
			continue
		}
		for _, tool := range []string{"iptables", "ip6tables"} {
			out, err := ns.Run(tool, "-L", "OUTPUT", "-v", "-x", "-n")
			if err != nil {
				return 0, err
			}
			for line := range strings.Lines(out) {
				f := strings.Fields(line)
				if len(f) > 2 && f[2] == "REJECT" {
					n, _ := strconv.Atoi(f[0])
					total += n
				}
			}
		}
	}
	return total, nil
}

// VsftpdPID is the process ID of the listening vsftpd; its children are the
// per-session processes.
func (h *Network) VsftpdPID() int { return h.vsftpd.PID() }

// KillVsftpdSessions kills (SIGKILL) every descendant of the listening
// vsftpd, that is every FTP session the server runs, and returns how many
// processes it killed.
func (h *Network) KillVsftpdSessions() (int, error) {
	out, err := exec.Command("ps", "-e", "-o", "pid=,ppid=").Output()
	if err != nil {
		return 0, fmt.Errorf("listing processes: %w", err)
	}
	children := map[int][]int{}
	for line := range strings.Lines(string(out)) {
		var pid, ppid int
		if _, err := fmt.Sscan(line, &pid, &ppid); err == nil {
			children[ppid] = append(children[ppid], pid)
		}
	}
	n := 0
	var kill func(int)
	kill = func(parent int) {
		for _, pid := range children[parent] {
			syscall.Kill(pid, syscall.SIGKILL)
			n++
			kill(pid)
		}
	}
	kill(h.vsftpd.PID())
	if h.vsftpd6 != nil {
		kill(h.vsftpd6.PID())
	}
	return n, nil
}

// GatewayRules returns the gateway's rules as iptables-save prints them
// (all tables), in the variant the network was built with.
func (h *Network) GatewayRules() (string, error) {
	return h.Gateway.Run(h.IPTables + "-save")
}

// Close stops vsftpd and removes the network.
func (h *Network) Close() error {
	return h.Lab.Close()
}

// WriteRandomFile writes size random bytes to path and returns their
// SHA-256 in hex.
func WriteRandomFile(path string, size int64) (string, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	hash := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, hash), rand.Reader, size); err != nil {
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		return "", err
	}
	return hex.EncodeToString(hash.Sum(nil)), f.Close()
}

// FileSHA256 returns the SHA-256 of a file in hex.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	hash := sha256.New()
	if _, err := io.Copy(hash, f); err != nil {
		return "", fmt.Errorf("hashing %s: %w", path, err)
	}
	return hex.EncodeToString(hash.Sum(nil)), nil
}

// errMismatch reports a file whose hash is not the expected one.
var errMismatch = errors.New("sha256 mismatch")

// StartFtpgate writes config into the lab and runs the ftpgate binary with it
// in the gateway namespace, waiting until it listens on each of ports.
func (h *Network) StartFtpgate(binary, config string, ports ...int) (*Proc, error) {
	path := filepath.Join(h.Dir, fmt.Sprintf("ftpgate-%d.yaml", h.cellSeq.Add(1)))
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		return nil, err
	}
	ns := h.FtpgateNS
	if ns == nil {
		ns = h.Gateway
	}
	p, err := ns.Start(binary, "run", "--config", path)
	if err != nil {
		return nil, err
	}
	for _, port := range ports {
		if err := h.WaitListening(ns, fmt.Sprintf("%s:%d", h.ListenIP, port), 10*time.Second); err != nil {
			p.Signal(syscall.SIGKILL, time.Second)
			return nil, fmt.Errorf("ftpgate did not start: %w: %s", err, p.Stderr.String())
		}
	}
	return p, nil
}
