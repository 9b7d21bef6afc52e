// Package config loads and validates ftpgate's YAML configuration file.
//
// The file is decoded strictly: unknown keys, wrong types, floats where an
// integer is expected, durations without a unit and extra YAML documents
// are errors. Defaults come from Default and, for each listener, from the
// Default* constants; Validate then checks the values. Parse and Load
// report every problem at once, sorted by line, each naming the line and
// the path of the field it concerns, e.g.
//
//	line 3: listeners[0] (public): listen: invalid address "198.19.0.1": missing port
//
// (only a syntax error, which leaves nothing to check, comes alone).
//
// Validate also parses the addresses, port ranges, networks and rates
// into each Listener's Parsed values: those are the values the daemon runs
// with, at the start and on reload, so that nothing is parsed twice.
//
// Only this package knows YAML. The rest of ftpgate takes the plain values
// of Config.
package config

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/ftpgate/ftpgate/nat"
	"github.com/ftpgate/ftpgate/proxy"
)

// Listener modes (Listener.Mode).
const (
	// ModeReverse accepts control connections on Listen and relays each to
	// the single server Upstream.
	ModeReverse = "reverse"
	// ModeTransparent serves connections that the firewall diverted to the
	// proxy (REDIRECT or TPROXY), relaying each to its original
	// destination, within AllowDestinations.
	ModeTransparent = "transparent"
	// ModeForward is an explicit proxy: the client names the server, as in
	// "USER user@host[:port]", within AllowDestinations.
	ModeForward = "forward"
)

// Data-connection paths (Data.Path).
const (
	// PathRelay copies data connections through the proxy's own sockets.
	PathRelay = "relay"
	// PathKernel lets the kernel forward data connections through DNAT and
	// ACCEPT pinholes: the data never enters the proxy.
	PathKernel = "kernel"
)

// Interception methods of transparent listeners (Listener.Intercept).
const (
	// InterceptRedirect: the firewall REDIRECTs port 21 to the listener;
	// the original destination comes from SO_ORIGINAL_DST.
	InterceptRedirect = "redirect"
	// InterceptTPROXY: the firewall diverts port 21 with TPROXY to a
	// listener with IP_TRANSPARENT; the original destination is the
	// accepted connection's local address.
	InterceptTPROXY = "tproxy"
)

// Orders of several upstreams (Listener.UpstreamPolicy).
const (
	UpstreamInOrder    = "in_order"
	UpstreamRoundRobin = "round_robin"
)

// UpstreamList is the listener's upstreams: Upstreams, or Upstream alone.
func (l *Listener) UpstreamList() []string {
	if len(l.Upstreams) > 0 {
		return l.Upstreams
	}
	if l.Upstream == "" {
		return nil
	}
	return []string{l.Upstream}
}

// primaryUpstream is the first upstream, whose address family the data
// settings are checked against (all are of one family).
func (l *Listener) primaryUpstream() string {
	if list := l.UpstreamList(); len(list) > 0 {
		return list[0]
	}
	return ""
}

// Server modes (Data.ServerMode): how the proxy opens data connections
// towards the server.
const (
	// ServerModeSame uses the mode the client chose: passive towards the
	// server when the client sent PASV or EPSV, active when it sent PORT or
	// EPRT.
	ServerModeSame = "same"
	// ServerModePassive always sends PASV or EPSV to the server.
	ServerModePassive = "passive"
	// ServerModeActive always sends PORT or EPRT to the server.
	ServerModeActive = "active"
)

// Defaults applied by Default and, per listener, by Parse.
const (
	// DefaultMode is the default Listener.Mode.
	DefaultMode = ModeReverse
	// DefaultPath is the default Data.Path.
	DefaultPath = PathRelay
	// DefaultServerMode is the default Data.ServerMode.
	DefaultServerMode = ServerModeSame
	// DefaultClientPorts is the default Data.ClientPorts.
	DefaultClientPorts = "40000-40999"
	// DefaultServerPorts is the default Data.ServerPorts.
	DefaultServerPorts = "50000-50999"

	// DefaultMaxSessions is the default Limits.MaxSessions.
	DefaultMaxSessions = 10000
	// DefaultMaxSessionsPerClient is the default Limits.MaxSessionsPerClient.
	DefaultMaxSessionsPerClient = 64
	// DefaultIdleTimeout is the default Limits.IdleTimeout.
	DefaultIdleTimeout = proxy.DefaultIdleTimeout // the proxy's own default: defined once
	// DefaultDataTimeout is the default Limits.DataTimeout.
	DefaultDataTimeout = proxy.DefaultDataTimeout // the proxy's own default: defined once
	// DefaultDrainTimeout is the default Limits.DrainTimeout.
	DefaultDrainTimeout = 30 * time.Second
	// DefaultMaxLineBytes is the default Limits.MaxLineBytes.
	DefaultMaxLineBytes = proxy.DefaultMaxLineBytes // the proxy's own default: defined once
	// DefaultLoginTimeout is the default Limits.LoginTimeout.
	DefaultLoginTimeout = proxy.DefaultLoginTimeout // the proxy's own default: defined once
	// DefaultDataIdleTimeout is the default Limits.DataIdleTimeout.
	DefaultDataIdleTimeout = 5 * time.Minute
	// DefaultUpstreamHoldDown is the default Listener.UpstreamHoldDown.
	DefaultUpstreamHoldDown = proxy.DefaultUpstreamHoldDown // the proxy's own default: defined once
	// DefaultLoginFailureWindow and DefaultLoginBan are the defaults of
	// Limits.LoginFailureWindow and Limits.LoginBan.
	DefaultLoginFailureWindow = 5 * time.Minute
	DefaultLoginBan           = 15 * time.Minute
	// DefaultClientAddressRefresh is the default
	// Data.ClientAddressRefresh.
	DefaultClientAddressRefresh = time.Minute
	// DefaultClientIPv6Prefix is the default Limits.ClientIPv6Prefix.
	DefaultClientIPv6Prefix = proxy.DefaultClientIPv6Prefix // the proxy's own default: defined once
	// DefaultClientPortShare is the default Limits.ClientPortShare.
	DefaultClientPortShare = 50

	// DefaultLogLevel is the default Log.Level.
	DefaultLogLevel = "info"
	// DefaultLogFormat is the default Log.Format.
	DefaultLogFormat = "text"

	// DefaultBackend is the default Firewall.Backend.
	DefaultBackend = BackendAuto
	// DefaultChainPrefix is the default Firewall.ChainPrefix.
	DefaultChainPrefix = "FTPGATE"
	// DefaultPinholeTTL is the default Firewall.PinholeTTL.
	DefaultPinholeTTL = 30 * time.Second
)

// Bounds checked by Validate.
const (
	// MinDataPort is the lowest port allowed in Data.ClientPorts and
	// Data.ServerPorts: data connections never use privileged ports.
	MinDataPort = 1024
	// MinLineBytes is the smallest allowed Limits.MaxLineBytes.
	MinLineBytes = 512
	// MaxLineBytes is the largest allowed Limits.MaxLineBytes.
	MaxLineBytes = 1 << 20
	// MaxFileSize is the largest configuration file Load and Parse
	// accept, 4 MiB: a listener takes a few hundred bytes, so a larger file
	// is not a configuration, and refusing it before decoding bounds the
	// memory and time decoding takes.
	MaxFileSize = 4 << 20
)

// Config is the whole configuration file.
type Config struct {
	// Listeners are the control-channel listeners, at least one. Their names
	// and listen addresses are unique.
	Listeners []Listener `yaml:"listeners"`
	// Limits bounds sessions, timeouts and line lengths, for all listeners.
	Limits Limits `yaml:"limits"`
	// Log sets the level and format of the daemon's log.
	Log Log `yaml:"log"`
	// Firewall says whether and how ftpgate opens pinholes for data
	// connections.
	Firewall Firewall `yaml:"firewall"`
	// Metrics configures the HTTP listener for /metrics, /healthz and
	// /readyz.
	Metrics Metrics `yaml:"metrics"`
}

// Metrics configures the observability endpoint.
type Metrics struct {
	// Listen is the address of the HTTP listener for /metrics (Prometheus),
	// /healthz and /readyz, separate from the FTP listeners, e.g.
	// "127.0.0.1:9121". Empty (the default): not served.
	Listen string `yaml:"listen"`
}

// Firewall backends (Firewall.Backend).
const (
	// BackendAuto is BackendNetlink where the kernel supports it, checked
	// at start, and BackendIPTables, with a warning saying why, where it
	// does not.
	BackendAuto = "auto"
	// BackendNetlink keeps pinholes as ipset elements (filter) and
	// nftables map elements (NAT) with kernel timeouts, added over
	// netlink; static rules in ftpgate's own iptables chains match the
	// sets. Open and close cost the same however many are open.
	BackendNetlink = "netlink"
	// BackendIPTables keeps exact, short-lived pinholes in ftpgate's own
	// iptables and ip6tables chains, one iptables process per rule.
	BackendIPTables = "iptables"
	// BackendNftables is for hosts whose firewall is native nftables
	// (a table inet filter with policy drop, firewalld): pinholes are
	// elements with timeouts of sets that ftpgate keeps in the operator's
	// table (see Nftables), and of NAT maps in ftpgate's own tables; no
	// iptables, no ipset.
	BackendNftables = "nftables"
	// BackendNone manages no firewall: the data ports must be reachable
	// (a Kubernetes sidecar, or ports opened statically).
	BackendNone = "none"
)

// How the nftables backend reaches the operator's filter chains
// (Nftables.Attach).
const (
	// AttachChain: ftpgate adds a chain of its own to the operator's
	// table and one jump to it at the top of each of Nftables.Chains;
	// it removes exactly these at stop and at ftpgate cleanup.
	AttachChain = "chain"
	// AttachSets: ftpgate keeps only its sets in the operator's table and
	// never touches a chain; the operator's own rules match the sets.
	AttachSets = "sets"
)

// Defaults of the nftables section.
const (
	DefaultNftablesTable  = "inet filter"
	DefaultNftablesAttach = AttachChain
)

// DefaultNftablesChains are the base chains that jump to ftpgate's chain
// when Nftables.Chains is empty and Attach is AttachChain.
var DefaultNftablesChains = []string{"input", "forward"}

// Nftables configures the nftables backend (Firewall.Backend "nftables");
// other backends ignore it.
type Nftables struct {
	// Table is the operator's filter table, "FAMILY NAME" with family
	// inet, ip or ip6. Default "inet filter". It must exist when ftpgate
	// starts: ftpgate adds to it, never creates it.
	Table string `yaml:"table"`
	// Attach is "chain" (default) or "sets" (AttachChain, AttachSets).
	Attach string `yaml:"attach"`
	// Chains are the base chains of Table that jump to ftpgate's chain
	// with attach "chain". Empty means DefaultNftablesChains (input,
	// forward); must be empty with attach "sets".
	Chains []string `yaml:"chains"`
}

// EffectiveChains is Chains, or DefaultNftablesChains if it is empty, with
// attach "chain"; nil with attach "sets".
func (n Nftables) EffectiveChains() []string {
	if n.Attach == AttachSets {
		return nil
	}
	if len(n.Chains) == 0 {
		return DefaultNftablesChains
	}
	return n.Chains
}

// Firewall configures the pinholes ftpgate opens for data connections.
type Firewall struct {
	// Backend is "auto" (default: "netlink" where the kernel supports
	// it, else "iptables"), "netlink", "iptables", "nftables" or "none".
	Backend string `yaml:"backend"`
	// ChainPrefix names ftpgate's chains (PREFIX-INPUT, PREFIX-FORWARD,
	// PREFIX-PREROUTING, PREFIX-POSTROUTING, PREFIX-OUTPUT; with backend
	// nftables its chain PREFIX and sets PREFIX-in4 ... in the operator's
	// table). Default "FTPGATE"; letters, digits, "_" and "-", at most 16
	// characters.
	ChainPrefix string `yaml:"chain_prefix"`
	// PinholeTTL is the longest a pinhole stays open waiting for its
	// connection. Default 30s; must be positive.
	PinholeTTL time.Duration `yaml:"pinhole_ttl"`
	// Variant chooses the iptables variant for ftpgate's chains (the
	// iptables backend's pinholes, the netlink backend's static rules):
	// "auto" (default: the iptables and ip6tables commands on PATH, as the
	// system's alternatives select them), "nft" (iptables-nft) or
	// "legacy" (iptables-legacy). Use the variant the host's own firewall
	// uses: rules of one are invisible to the other.
	Variant string `yaml:"variant"`
	// Nftables configures backend nftables.
	Nftables Nftables `yaml:"nftables"`
}

// iptables variants (Firewall.Variant).
const (
	VariantAuto   = "auto"
	VariantNFT    = "nft"
	VariantLegacy = "legacy"
)

// Listener is one control-channel listener and where its sessions go.
type Listener struct {
	// Name labels the listener in logs and metrics. Required, unique, made
	// of a-z, 0-9, "_" and "-".
	Name string `yaml:"name"`
	// Listen is the control-channel address to listen on, an IP and a port:
	// "198.19.0.1:21" or "[2001:db8::1]:21" ("0.0.0.0:21" or "[::]:21" for
	// all addresses). Required.
	Listen string `yaml:"listen"`
	// Mode is how the server of a session is chosen. Only "reverse" (the
	// default) is supported so far; "transparent" and "forward" are planned.
	Mode string `yaml:"mode"`
	// Upstream is the server every session of a reverse listener connects
	// to: host:port, where host is an IP address or a DNS name and port is
	// 1..65535. Required in reverse mode, not allowed in transparent mode.
	Upstream string `yaml:"upstream"`
	// Upstreams, instead of Upstream, are several servers (a legacy pair,
	// say), of one IP version: a session tries them in UpstreamPolicy's
	// order until one answers, and one that could not be reached is tried
	// last for UpstreamHoldDown.
	Upstreams []string `yaml:"upstreams"`
	// UpstreamPolicy is "in_order" (default: the first is the primary, the
	// others stand in while it fails) or "round_robin" (each session
	// starts at the next one).
	UpstreamPolicy string `yaml:"upstream_policy"`
	// UpstreamHoldDown is how long an upstream that could not be reached
	// is tried after the others. Default 30s.
	UpstreamHoldDown time.Duration `yaml:"upstream_hold_down"`
	// UpstreamProxyProtocol, "v1" or "v2", sends a PROXY protocol header
	// first on each connection to the server, with the client's address,
	// so that a server that reads it (ProFTPD's mod_proxy_protocol, say)
	// logs and limits by the real client rather than by ftpgate. Empty:
	// none (default).
	UpstreamProxyProtocol string `yaml:"upstream_proxy_protocol"`
	// AllowDestinations are the networks (CIDR) a transparent or forward
	// listener may connect to. Required in forward mode (else ftpgate
	// would relay to any host on the Internet). In transparent mode, empty
	// means any public address. Addresses are judged by IANA's
	// special-purpose registries: loopback, link-local, multicast,
	// broadcast, "this network", reserved and discard-only addresses are
	// never dialled; the other special-purpose ones (private, shared
	// 100.64/10, unique-local, documentation, benchmarking, ...) only when
	// listed; an address that embeds an IPv4 address (NAT64, 6to4,
	// IPv4-mapped or -compatible) is judged by that IPv4 address. The
	// gateway's own addresses are never dialled.
	AllowDestinations []string `yaml:"allow_destinations"`
	// AllowPorts are the destination ports a transparent or forward
	// listener may connect to: ports ("21") or ranges ("2121-2130").
	// Default: 21 only.
	AllowPorts []string `yaml:"allow_ports"`
	// Intercept is how a transparent listener receives its connections:
	// "redirect" (default) or "tproxy". Transparent mode only.
	Intercept string `yaml:"intercept"`
	// ProxyProtocol makes the listener read a PROXY protocol header (v1 or
	// v2) from the load balancers in TrustedProxies, so that sessions see
	// the real client address. A header from any other source is refused.
	ProxyProtocol bool `yaml:"proxy_protocol"`
	// TrustedProxies are the networks (CIDR) whose PROXY protocol headers
	// are believed; required with ProxyProtocol.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// ExtraVerbs are command verbs the listener forwards besides those
	// ftpgate knows (RFC 959 and its extensions, SITE, the X-verbs, MFMT,
	// CLNT, ...), for a server with commands of its own: letters only, at
	// most 16, case does not matter. Every other verb is refused with 502.
	// ftpgate forwards such a command and its reply as they are: list no
	// verb whose command or reply carries an address.
	ExtraVerbs []string `yaml:"extra_verbs"`
	// AllowClients, if set, are the only networks (CIDR) whose clients may
	// open a session (after the PROXY protocol, if any); others get 421.
	AllowClients []string `yaml:"allow_clients"`
	// ReadOnly refuses, with 550, every command that changes the server's
	// files: STOR, STOU, APPE, DELE, RMD, MKD, RNFR, RNTO, MFMT, MFCT,
	// MFF, MDTM with a time (which sets it), and SITE but SITE HELP.
	ReadOnly bool `yaml:"read_only"`
	// DenyCommands are verbs refused with 502, case does not matter.
	DenyCommands []string `yaml:"deny_commands"`
	// RateLimit bounds the bandwidth of relayed data connections.
	RateLimit RateLimit `yaml:"rate_limit"`
	// TLS configures TLS towards the listener's clients (FTPS).
	TLS TLS `yaml:"tls"`
	// UpstreamTLS configures TLS towards the listener's server.
	UpstreamTLS UpstreamTLS `yaml:"upstream_tls"`
	// Data configures the data connections of this listener's sessions.
	Data Data `yaml:"data"`

	// Parsed holds the values above parsed, filled by Validate (and so by
	// Parse and Load); it is not read from the file.
	Parsed ListenerValues `yaml:"-"`
}

// ListenerValues are a listener's addresses, port ranges, networks and
// rates, parsed once, by Validate, as it checks them. They are the values
// the daemon runs with, at the start and on reload: it parses none of the
// strings again, so no parse error can appear after the check. They are
// complete only when Validate returned nil (a field that is not valid is
// left zero); Validate recomputes them from the strings each time.
type ListenerValues struct {
	// Listen is Listener.Listen; an IPv4-mapped address is unmapped.
	Listen netip.AddrPort
	// ClientAddress is Data.ClientAddress when it is an IP address
	// (IPv4, unmapped); zero when it is empty or a DNS name.
	ClientAddress netip.Addr
	// ClientAddressName is Data.ClientAddress when it is a DNS name, to
	// resolve every Data.ClientAddressRefresh; empty otherwise.
	ClientAddressName string
	// ClientPorts, ServerPorts are Data.ClientPorts and Data.ServerPorts.
	ClientPorts, ServerPorts nat.PortRange
	// AdvertisePorts is Data.AdvertisePorts; zero when not set.
	AdvertisePorts nat.PortRange
	// ServerAddress is Data.ServerAddress (unmapped); zero when not set.
	ServerAddress netip.Addr
	// AllowClients, AllowDestinations and TrustedProxies are the
	// networks of Listener's fields of those names, masked (10.1.2.3/8 is
	// 10.0.0.0/8).
	AllowClients, AllowDestinations, TrustedProxies []netip.Prefix
	// AllowPorts are Listener.AllowPorts; empty when not set (port 21
	// alone).
	AllowPorts []nat.PortRange
	// SessionRate and ListenerRate are RateLimit.Session and
	// RateLimit.Listener in bytes per second (ParseByteRate); 0: no limit.
	SessionRate, ListenerRate int64
}

// TLS modes (TLS.Mode, UpstreamTLS.Mode).
const (
	// TLSOff speaks plain FTP.
	TLSOff = "off"
	// TLSExplicit upgrades the control connection with AUTH TLS (RFC
	// 4217) on the control port.
	TLSExplicit = "explicit"
	// TLSImplicit speaks TLS from the first byte (usually port 990).
	TLSImplicit = "implicit"
)

// Values of TLS.SessionReuse.
const (
	// ReuseRequired: a TLS data connection must resume its control
	// connection's TLS session.
	ReuseRequired = "required"
	// ReuseOptional: it may, or may not (Python's ftplib does not).
	ReuseOptional = "optional"
)

// TLS configures TLS towards a listener's clients.
type TLS struct {
	// Mode is "off" (default), "explicit" or "implicit".
	Mode string `yaml:"mode"`
	// Cert and Key are the PEM files of the certificate chain and its
	// private key; required with a mode other than off. Re-read on SIGHUP.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// Required refuses USER before AUTH TLS and any transfer without PROT
	// P (explicit mode; implicit mode is TLS from the start).
	Required bool `yaml:"required"`
	// SessionReuse is "required" (default) or "optional": whether a
	// client's TLS data connection must resume its control connection's
	// TLS session.
	SessionReuse string `yaml:"session_reuse"`
	// MinVersion is the lowest TLS version: "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version"`
}

// UpstreamTLS configures TLS towards a listener's server.
type UpstreamTLS struct {
	// Mode is "off" (default), "explicit" or "implicit".
	Mode string `yaml:"mode"`
	// CA is a PEM file of the certificates that may sign the server's;
	// default: the system's roots. The server's certificate is always
	// verified.
	CA string `yaml:"ca"`
	// ServerName is the name the server's certificate must hold; default:
	// the upstream's host.
	ServerName string `yaml:"server_name"`
	// MinVersion is the lowest TLS version: "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version"`
	// PlainClients allows tls off with upstream_tls on (legacy plain
	// clients reaching an FTPS-only server): their passwords cross the
	// client side in clear, so the operator must say that the client side
	// is trusted.
	PlainClients bool `yaml:"plain_clients"`
}

// Data configures how a listener's data connections are set up.
type Data struct {
	// Path is how data connections are carried. Only "relay" (the default),
	// through the proxy's own sockets, is supported so far; "kernel" is
	// planned.
	Path string `yaml:"path"`
	// ServerMode is how the proxy opens data connections towards the
	// server: "same" as the client chose (default), always "passive", or
	// always "active".
	ServerMode string `yaml:"server_mode"`
	// ServerCommands is which data commands the proxy sends the server:
	// "auto" (default: as the client, extended towards IPv6), "classic"
	// (PASV/PORT, for IPv4-only servers that do not know EPSV/EPRT: an IPv6
	// client's EPSV/EPRT is translated) or "extended" (EPSV/EPRT).
	ServerCommands string `yaml:"server_commands"`
	// ClientAddress is the IPv4 address written in 227 replies to clients.
	// If empty, the address the client connected to is used. Set it when
	// clients reach the proxy through NAT. A DNS name (a home router's
	// dynamic DNS name) is resolved to its IPv4 address at the start and
	// again every ClientAddressRefresh; when a resolution fails, the last
	// good address stays.
	ClientAddress string `yaml:"client_address"`
	// ClientAddressRefresh is how often a ClientAddress that is a DNS name
	// is resolved again. Default 1m.
	ClientAddressRefresh time.Duration `yaml:"client_address_refresh"`
	// ClientPorts is the range of ports, "first-last", on which the proxy
	// accepts data connections from clients (the ports written in 227 and
	// 229 replies). Default "40000-40999"; ports below 1024 are refused.
	ClientPorts string `yaml:"client_ports"`
	// AdvertisePorts, if set, are the ports written in 227/229 replies in
	// place of ClientPorts, port for port (a load balancer or NodePort that
	// remaps them); same length as ClientPorts.
	AdvertisePorts string `yaml:"advertise_ports"`
	// SourceCheck is which sources a data connection is accepted from:
	// "strict" (default: the control peer's address), "trusted" (also the
	// listener's trusted_proxies: load balancers that change the source),
	// or "off" (the pinholes alone guard; warned about at start).
	SourceCheck string `yaml:"source_check"`
	// ServerAddress is the IP address written in PORT and EPRT commands to
	// the server. If empty, the local address of the connection to the
	// server is used.
	ServerAddress string `yaml:"server_address"`
	// ServerPorts is the range of ports, "first-last", on which the proxy
	// accepts data connections from the server (the ports written in PORT
	// and EPRT). Default "50000-50999"; ports below 1024 are refused.
	ServerPorts string `yaml:"server_ports"`
}

// Limits bounds the resources sessions may use.
type Limits struct {
	// MaxSessions is the most control sessions open at once, over all
	// listeners. Default 10000; at least 1.
	MaxSessions int `yaml:"max_sessions"`
	// MaxSessionsPerClient is the most sessions open at once from one client
	// IP address. Default 64; at least 1 and at most MaxSessions.
	MaxSessionsPerClient int `yaml:"max_sessions_per_client"`
	// IdleTimeout closes a session whose control channel has been silent
	// this long while no data connection is in use. Default 15m; must be
	// positive. In YAML a duration needs a unit: "90s", "15m", "1h".
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// DataTimeout is how long an announced data connection may take to be
	// opened, counted from the reply that announced it and again from the
	// transfer command; it also bounds dialing the server. Default 30s; must
	// be positive.
	DataTimeout time.Duration `yaml:"data_timeout"`
	// DrainTimeout is how long, after SIGTERM or SIGINT, running transfers
	// may go on before their sessions are closed; sessions without one are
	// closed at once. Default 30s; 0 closes every session at once.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// MaxLineBytes is the longest control-channel line accepted, in bytes,
	// line ending included; a session sending a longer one is closed.
	// Default 4096; 512..1048576.
	MaxLineBytes int `yaml:"max_line_bytes"`
	// LoginTimeout closes a session that has not logged in (no 230 from
	// the server) this long after it started: before, it may hold its
	// upstream connection for idle_timeout. Default 30s; must be positive.
	LoginTimeout time.Duration `yaml:"login_timeout"`
	// DataIdleTimeout closes a relayed data connection that has received
	// no byte, in either direction, for this long (a stalled peer would
	// hold its port and pinhole until TCP gives up). Default 5m; 0 turns
	// it off.
	DataIdleTimeout time.Duration `yaml:"data_idle_timeout"`
	// ClientIPv6Prefix is the prefix length by which IPv6 clients count as
	// one for max_sessions_per_client and client_port_share: a host picks
	// any address of its /64. Default 64; 1..128.
	ClientIPv6Prefix int `yaml:"client_ipv6_prefix"`
	// ClientPortShare is the most of each data port range one client may
	// hold at once, in percent (at least one port). Default 50; 1..100
	// (100: no limit).
	ClientPortShare int `yaml:"client_port_share"`
	// LoginFailures, if above 0, is how many failed logins (530 after USER
	// or PASS) one client address may have within LoginFailureWindow;
	// after that its new sessions are refused with 421 for LoginBan.
	// Default 0 (off).
	LoginFailures int `yaml:"login_failures"`
	// LoginFailureWindow is the window of LoginFailures. Default 5m.
	LoginFailureWindow time.Duration `yaml:"login_failure_window"`
	// LoginBan is how long a client over LoginFailures is refused.
	// Default 15m.
	LoginBan time.Duration `yaml:"login_ban"`
}

// RateLimit bounds a listener's relayed data, in bytes per second, both
// directions together: "10MB", "512KiB", "1GB" or a number of bytes (a
// "/s" suffix may be written). Empty: no limit. The kernel data path
// cannot be limited (its data never enters ftpgate).
type RateLimit struct {
	// Session is the limit of each session.
	Session string `yaml:"session"`
	// Listener is the limit of all the listener's sessions together.
	Listener string `yaml:"listener"`
}

// Log configures the daemon's log.
type Log struct {
	// Level is the lowest level logged: "debug", "info" (default), "warn"
	// or "error". At "debug" every control line is logged.
	Level string `yaml:"level"`
	// Format is "text" (default) for key=value lines or "json" for one JSON
	// object per line.
	Format string `yaml:"format"`
	// Xferlog, if set, is a file (an absolute path) that receives one line
	// per file transfer (RETR, STOR, APPE, STOU) in the classic xferlog
	// format of wu-ftpd, vsftpd and ProFTPD, beside the "transfer" log
	// line. ftpgate appends to it and reopens it on SIGHUP (log rotation).
	Xferlog string `yaml:"xferlog"`
}

// Default returns the configuration used for everything a file leaves out.
// It has no listeners, so it does not pass Validate by itself.
func Default() Config {
	return Config{
		Limits: Limits{
			MaxSessions:          DefaultMaxSessions,
			MaxSessionsPerClient: DefaultMaxSessionsPerClient,
			IdleTimeout:          DefaultIdleTimeout,
			DataTimeout:          DefaultDataTimeout,
			DrainTimeout:         DefaultDrainTimeout,
			MaxLineBytes:         DefaultMaxLineBytes,
			LoginTimeout:         DefaultLoginTimeout,
			DataIdleTimeout:      DefaultDataIdleTimeout,
			ClientIPv6Prefix:     DefaultClientIPv6Prefix,
			ClientPortShare:      DefaultClientPortShare,
			LoginFailureWindow:   DefaultLoginFailureWindow,
			LoginBan:             DefaultLoginBan,
		},
		Log: Log{
			Level:  DefaultLogLevel,
			Format: DefaultLogFormat,
		},
		Firewall: Firewall{
			Backend:     DefaultBackend,
			ChainPrefix: DefaultChainPrefix,
			PinholeTTL:  DefaultPinholeTTL,
			Variant:     VariantAuto,
			Nftables:    Nftables{Table: DefaultNftablesTable, Attach: DefaultNftablesAttach},
		},
	}
}

// Load reads the configuration file at path and parses it with Parse. Its
// errors start with the file's name, and, when there are several problems,
// their number: "ftpgate.yaml: 2 problems:\nline 3: ...\nline 9: ...".
// A file larger than MaxFileSize is refused before it is decoded.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%s: larger than %d MiB: not a configuration file", path, MaxFileSize>>20)
	}
	cfg, err := Parse(data)
	if err != nil {
		if j, ok := err.(interface{ Unwrap() []error }); ok && len(j.Unwrap()) > 1 {
			return nil, fmt.Errorf("%s: %d problems:\n%w", path, len(j.Unwrap()), err)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes a configuration file's contents over Default, strictly (see
// the package documentation), fills in each listener's empty fields with
// their defaults, and validates the result, filling each listener's
// Parsed values.
//
// The error lists every problem, decoding and validation alike, as
// *Error values joined with errors.Join, one per line, sorted by line:
// those of the file as a whole (no line) first, and those on one line in
// the order they were found. Each names the line of the offending key, or
// that of the mapping or list item lacking it when the value is a default.
// Validation problems that follow from a decoding problem, which names the
// cause, are left out: those about a value that could not be decoded (it
// kept its default, or was truncated) or that is compared with one, those
// in a list one of whose items could not be decoded (yaml.v3 leaves the
// item out, so the items after it are misnumbered), and those about a key
// absent from a mapping that holds an unknown key (likely that key
// misspelt). A syntax error, a second YAML document, a mapping of more
// than 100 keys, excessive aliasing, or data larger than MaxFileSize is
// reported alone.
func Parse(data []byte) (*Config, error) {
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%d bytes, larger than %d MiB: not a configuration file", len(data), MaxFileSize>>20)
	}
	cfg := Default()
	idx, errs, err := decode(data, &cfg)
	if err != nil {
		return nil, err
	}
	for i := range cfg.Listeners {
		cfg.Listeners[i].applyDefaults()
	}
	for _, e := range cfg.check() {
		if idx.locate(e) {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		sortByLine(errs)
		return nil, joinErrors(errs)
	}
	return &cfg, nil
}

// applyDefaults fills in the empty fields that have a default.
func (l *Listener) applyDefaults() {
	setDefault(&l.Mode, DefaultMode)
	if l.Mode == ModeTransparent {
		setDefault(&l.Intercept, InterceptRedirect)
	}
	setDefault(&l.Data.Path, DefaultPath)
	setDefault(&l.Data.ServerMode, DefaultServerMode)
	setDefault(&l.Data.ServerCommands, "auto")
	setDefault(&l.Data.SourceCheck, "strict")
	setDefault(&l.Data.ClientPorts, DefaultClientPorts)
	setDefault(&l.Data.ServerPorts, DefaultServerPorts)
	setDefault(&l.TLS.Mode, TLSOff)
	setDefault(&l.TLS.SessionReuse, ReuseRequired)
	setDefault(&l.TLS.MinVersion, "1.2")
	setDefault(&l.UpstreamTLS.Mode, TLSOff)
	setDefault(&l.UpstreamPolicy, UpstreamInOrder)
	if l.Data.ClientAddressRefresh == 0 {
		l.Data.ClientAddressRefresh = DefaultClientAddressRefresh
	}
	if l.UpstreamHoldDown == 0 {
		l.UpstreamHoldDown = DefaultUpstreamHoldDown
	}
	setDefault(&l.UpstreamTLS.MinVersion, "1.2")
}

func setDefault(s *string, def string) {
	if *s == "" {
		*s = def
	}
}

// Summary describes c in one line for the start-up log, e.g.
//
//	1 listener: public 198.19.0.1:21 -> 198.18.1.2:21 (relay, server_mode same); limits max_sessions=10000 max_sessions_per_client=64 idle_timeout=15m0s data_timeout=30s max_line_bytes=4096; log level=info format=text; firewall iptables (auto) chains FTPGATE-* pinhole_ttl=30s
func (c *Config) Summary() string {
	var b strings.Builder
	if len(c.Listeners) == 1 {
		b.WriteString("1 listener: ")
	} else {
		fmt.Fprintf(&b, "%d listeners: ", len(c.Listeners))
	}
	for _, l := range c.Listeners {
		to := strings.Join(l.UpstreamList(), ", ")
		switch l.Mode {
		case ModeTransparent:
			to = "original destination (" + l.Intercept + ")"
		case ModeForward:
			to = "USER name@host"
		}
		fmt.Fprintf(&b, "%s %s -> %s (%s, server_mode %s); ",
			l.Name, l.Listen, to, l.Data.Path, l.Data.ServerMode)
	}
	fmt.Fprintf(&b, "limits max_sessions=%d max_sessions_per_client=%d idle_timeout=%s data_timeout=%s drain_timeout=%s max_line_bytes=%d; ",
		c.Limits.MaxSessions, c.Limits.MaxSessionsPerClient, c.Limits.IdleTimeout, c.Limits.DataTimeout, c.Limits.DrainTimeout, c.Limits.MaxLineBytes)
	fmt.Fprintf(&b, "log level=%s format=%s; ", c.Log.Level, c.Log.Format)
	switch c.Firewall.Backend {
	case BackendNone:
		b.WriteString("firewall none")
	case BackendNftables:
		n := c.Firewall.Nftables
		fmt.Fprintf(&b, "firewall nftables (table %s, attach %s", n.Table, n.Attach)
		if ch := n.EffectiveChains(); len(ch) > 0 {
			fmt.Fprintf(&b, " from %s", strings.Join(ch, ", "))
		}
		fmt.Fprintf(&b, ") prefix %s pinhole_ttl=%s", c.Firewall.ChainPrefix, c.Firewall.PinholeTTL)
	default:
		fmt.Fprintf(&b, "firewall %s (%s) chains %s-* pinhole_ttl=%s", c.Firewall.Backend, c.Firewall.Variant, c.Firewall.ChainPrefix, c.Firewall.PinholeTTL)
	}
	return b.String()
}

// listenerPath is the prefix of errors about the listener at index i:
// "listeners[0] (public)", "listeners[0]" if it has no name, and the name
// quoted if it is not a valid name.
func listenerPath(i int, name string) string {
	switch {
	case name == "":
		return fmt.Sprintf("listeners[%d]", i)
	case validName(name):
		return fmt.Sprintf("listeners[%d] (%s)", i, name)
	default:
		return fmt.Sprintf("listeners[%d] (%q)", i, name)
	}
}
