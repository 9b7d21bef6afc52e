package config

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/ftpgate/ftpgate/nat"
	"github.com/ftpgate/ftpgate/proxy/ftp"
)

// Validate reports every problem with c at once, joined with errors.Join,
// one per line. Each is an *Error naming the field concerned, e.g.
// `listeners[0] (public): listen: invalid address "198.19.0.1": missing port`.
// Validate knows no file, so its errors have no line (Parse's have one),
// and they come in the order of the checks: each listener's (with the
// checks against the listeners before it), the data port ranges, then
// limits, log, firewall and metrics. It does not apply defaults: fields
// that Parse fills in are required here.
//
// Validate fills each listener's Parsed values (see ListenerValues) as it
// checks them. Its cost grows as n·log n with the number of listeners:
// every check across listeners goes through maps or sorted ranges.
func (c *Config) Validate() error {
	return joinErrors(c.check())
}

// check is Validate, with its problems not joined yet.
func (c *Config) check() []*Error {
	var errs []*Error
	if len(c.Listeners) == 0 {
		errs = append(errs, &Error{Err: errors.New("at least one listener is required"), key: "listeners"})
	}
	names := make(map[string]int, len(c.Listeners))
	listens := newListenIndex()
	for i := range c.Listeners {
		l := &c.Listeners[i]
		p := l.check()
		if l.Name != "" {
			if j, dup := names[l.Name]; dup {
				p.add("name", fmt.Errorf("%q is already used by listeners[%d]", l.Name, j))
			} else {
				names[l.Name] = i
			}
		}
		if ap := l.Parsed.Listen; ap.IsValid() {
			switch j, exact := listens.conflict(ap); {
			case j < 0:
			case exact:
				p.add("listen", fmt.Errorf("%s is already used by %s", ap, listenerPath(j, c.Listeners[j].Name)))
			default:
				p.add("listen", fmt.Errorf("%s overlaps %s of %s", ap, c.Listeners[j].Parsed.Listen, listenerPath(j, c.Listeners[j].Name)))
			}
			listens.add(i, ap)
		}
		for _, fe := range p {
			errs = append(errs, listenerError(i, l.Name, fe))
		}
	}
	if c.Firewall.Backend == BackendNone {
		for i, l := range c.Listeners {
			if l.Data.Path == PathKernel {
				errs = append(errs, listenerError(i, l.Name, fieldError{field: "data.path",
					err: fmt.Errorf("%q needs a firewall backend other than %q: its data connections cross only through pinholes", PathKernel, BackendNone)}))
			}
		}
	}
	errs = append(errs, c.checkPortPools()...)
	var top problems
	c.Limits.check(&top)
	c.Log.check(&top)
	c.Firewall.check(&top)
	if c.Metrics.Listen != "" {
		if _, err := parseListen(c.Metrics.Listen); err != nil {
			top.add("metrics.listen", err)
		}
	}
	for _, fe := range top {
		errs = append(errs, topError(fe))
	}
	return errs
}

// listenIndex finds, in constant time, the first listener whose listen
// address collides with a new one: the same address and port, or one
// that a wildcard covers on the same port (0.0.0.0 covers IPv4, [::]
// covers both, as Go listens dual-stack). A listener that collides with
// several is reported once, against the first.
type listenIndex struct {
	exact map[netip.AddrPort]int
	// By port, the first listener on an IPv4 address, on an IPv6 address,
	// on 0.0.0.0, on [::].
	v4, v6, any4, any6 map[uint16]int
}

func newListenIndex() *listenIndex {
	return &listenIndex{exact: map[netip.AddrPort]int{},
		v4: map[uint16]int{}, v6: map[uint16]int{}, any4: map[uint16]int{}, any6: map[uint16]int{}}
}

// conflict returns the first listener added whose address collides with
// ap (-1 if none), and whether it is ap itself.
func (x *listenIndex) conflict(ap netip.AddrPort) (int, bool) {
	if j, ok := x.exact[ap]; ok {
		return j, true
	}
	a, port := ap.Addr(), ap.Port()
	switch {
	case a.IsUnspecified() && a.Is6():
		return first(port, x.v4, x.v6), false
	case a.IsUnspecified():
		return first(port, x.v4, x.any6), false
	case a.Is4():
		return first(port, x.any4, x.any6), false
	default:
		return first(port, x.any6), false
	}
}

// add records listener i on ap (unmapped, as parseListen returns it).
func (x *listenIndex) add(i int, ap netip.AddrPort) {
	setFirst := func(m map[uint16]int) {
		if _, ok := m[ap.Port()]; !ok {
			m[ap.Port()] = i
		}
	}
	if _, ok := x.exact[ap]; !ok {
		x.exact[ap] = i
	}
	if ap.Addr().Is4() {
		setFirst(x.v4)
	} else {
		setFirst(x.v6)
	}
	if ap.Addr().IsUnspecified() {
		if ap.Addr().Is4() {
			setFirst(x.any4)
		} else {
			setFirst(x.any6)
		}
	}
}

// first returns the lowest listener index that maps hold for port, -1 if
// none does.
func first(port uint16, maps ...map[uint16]int) int {
	j := -1
	for _, m := range maps {
		if i, ok := m[port]; ok && (j < 0 || i < j) {
			j = i
		}
	}
	return j
}

// check checks l on its own and fills l.Parsed with the values it parses;
// Config.check adds the checks across listeners. The fields of the
// problems are relative to the listener.
func (l *Listener) check() problems {
	var p problems
	add := p.add
	l.Parsed = ListenerValues{}
	v := &l.Parsed

	switch {
	case l.Name == "":
		add("name", errors.New("required"))
	case !validName(l.Name):
		add("name", fmt.Errorf("%q may contain only a-z, 0-9, \"_\" and \"-\"", l.Name))
	}

	if ap, err := parseListen(l.Listen); err != nil {
		add("listen", err)
	} else {
		v.Listen = ap
	}

	switch l.Mode {
	case "":
		add("mode", errors.New("required"))
	case ModeReverse:
		switch {
		case l.Upstream == "" && len(l.Upstreams) == 0:
			add("upstream", errors.New("required in reverse mode (or upstreams, a list)"))
		case l.Upstream != "" && len(l.Upstreams) > 0:
			add("upstreams", errors.New("upstream and upstreams both set; write the list in upstreams alone"))
		case l.Upstream != "":
			if err := checkUpstream(l.Upstream); err != nil {
				add("upstream", err)
			}
		default:
			l.checkUpstreams(&p)
		}
		if len(l.AllowDestinations) > 0 {
			add("allow_destinations", errors.New("only for transparent and forward modes; a reverse listener connects to its upstream"))
		}
		if len(l.AllowPorts) > 0 {
			add("allow_ports", errors.New("only for transparent and forward modes; a reverse listener connects to its upstream"))
		}
		if l.Intercept != "" {
			add("intercept", errors.New("only for transparent mode"))
		}
	case ModeTransparent:
		if len(l.Upstreams) > 0 {
			add("upstreams", errors.New("not allowed in transparent mode: each session goes to its original destination"))
		}
		if l.Upstream != "" {
			add("upstream", errors.New("not allowed in transparent mode: each session goes to its original destination"))
		}
		v.AllowDestinations = parsePrefixes(&p, "allow_destinations", l.AllowDestinations)
		switch l.Intercept {
		case InterceptRedirect, InterceptTPROXY:
		default:
			add("intercept", fmt.Errorf("unknown value %q; use %q or %q", l.Intercept, InterceptRedirect, InterceptTPROXY))
		}
	case ModeForward:
		if len(l.Upstreams) > 0 {
			add("upstreams", errors.New("not allowed in forward mode: the client names the server in USER name@host"))
		}
		if l.Upstream != "" {
			add("upstream", errors.New("not allowed in forward mode: the client names the server in USER name@host"))
		}
		if len(l.AllowDestinations) == 0 {
			add("allow_destinations", errors.New("required in forward mode: the networks clients may reach (without it ftpgate would relay to any host)"))
		}
		v.AllowDestinations = parsePrefixes(&p, "allow_destinations", l.AllowDestinations)
		if l.Intercept != "" {
			add("intercept", errors.New("only for transparent mode"))
		}
	default:
		add("mode", fmt.Errorf("unknown value %q; use %q, %q or %q", l.Mode, ModeReverse, ModeTransparent, ModeForward))
	}

	l.checkTLS(&p)

	for i, s := range l.AllowPorts {
		if r, err := nat.ParsePortRange(s); err != nil {
			add(fmt.Sprintf("allow_ports[%d]", i), err)
		} else {
			v.AllowPorts = append(v.AllowPorts, r)
		}
	}

	extra := make(map[string]bool, len(l.ExtraVerbs))
	for i, verb := range l.ExtraVerbs {
		if err := checkExtraVerb(verb); err != nil {
			add(fmt.Sprintf("extra_verbs[%d]", i), err)
		}
		extra[strings.ToUpper(verb)] = true
	}
	for i, verb := range l.DenyCommands {
		switch up := strings.ToUpper(verb); {
		case !ftp.KnownVerb(up) && !extra[up]:
			add(fmt.Sprintf("deny_commands[%d]", i), fmt.Errorf("%q is not a verb ftpgate knows or forwards (extra_verbs)", verb))
		case up == "QUIT":
			add(fmt.Sprintf("deny_commands[%d]", i), errors.New("QUIT cannot be denied: a client must be able to leave"))
		}
	}
	v.AllowClients = parsePrefixes(&p, "allow_clients", l.AllowClients)

	for _, r := range []struct {
		field, value string
		to           *int64
	}{
		{"rate_limit.session", l.RateLimit.Session, &v.SessionRate},
		{"rate_limit.listener", l.RateLimit.Listener, &v.ListenerRate},
	} {
		if r.value == "" {
			continue
		}
		if rate, err := ParseByteRate(r.value); err != nil {
			add(r.field, err)
		} else if l.Data.Path == PathKernel {
			add(r.field, errors.New("not with data.path kernel: the kernel forwards the data, ftpgate cannot pace it"))
		} else {
			*r.to = rate
		}
	}
	switch l.UpstreamPolicy {
	case "":
		add("upstream_policy", errors.New("required"))
	case UpstreamInOrder, UpstreamRoundRobin:
	default:
		add("upstream_policy", fmt.Errorf("unknown value %q; use %q or %q", l.UpstreamPolicy, UpstreamInOrder, UpstreamRoundRobin))
	}
	if l.UpstreamHoldDown < 0 {
		add("upstream_hold_down", fmt.Errorf("must be positive, got %s", l.UpstreamHoldDown))
	}
	switch l.UpstreamProxyProtocol {
	case "", "v1", "v2":
	default:
		add("upstream_proxy_protocol", fmt.Errorf("unknown value %q; use \"v1\" or \"v2\" (or leave it out)", l.UpstreamProxyProtocol))
	}
	if l.ProxyProtocol && len(l.TrustedProxies) == 0 {
		add("trusted_proxies", errors.New("required with proxy_protocol: the load balancers whose headers to believe"), "proxy_protocol")
	}
	if !l.ProxyProtocol && l.Data.SourceCheck != "trusted" && len(l.TrustedProxies) > 0 {
		add("trusted_proxies", errors.New("only with proxy_protocol: true or data.source_check: trusted"))
	}
	v.TrustedProxies = parsePrefixes(&p, "trusted_proxies", l.TrustedProxies)

	l.checkData(&p)
	return p
}

// checkData checks l's data section and fills the values it parses.
func (l *Listener) checkData(p *problems) {
	add := p.add
	d, v := &l.Data, &l.Parsed
	switch d.Path {
	case "":
		add("data.path", errors.New("required"))
	case PathRelay:
	case PathKernel:
		// The kernel forwards what it is told: it cannot turn a passive
		// data connection into an active one.
		if d.ServerMode != ServerModeSame && d.ServerMode != "" {
			add("data.server_mode", fmt.Errorf("%q needs path %q: the kernel path cannot convert modes; use %q", d.ServerMode, PathRelay, ServerModeSame), "data.path")
		}
	default:
		add("data.path", fmt.Errorf("unknown value %q; use %q or %q", d.Path, PathRelay, PathKernel))
	}

	switch d.ServerMode {
	case "":
		add("data.server_mode", errors.New("required"))
	case ServerModeSame, ServerModePassive, ServerModeActive:
	default:
		add("data.server_mode", fmt.Errorf("unknown value %q; use %q, %q or %q",
			d.ServerMode, ServerModeSame, ServerModePassive, ServerModeActive))
	}

	switch d.ServerCommands {
	case "":
		add("data.server_commands", errors.New("required"))
	case "auto", "extended":
	case "classic":
		if up, err := netip.ParseAddrPort(l.primaryUpstream()); err == nil && !up.Addr().Unmap().Is4() {
			add("data.server_commands", fmt.Errorf("%q needs an IPv4 server: PASV and PORT carry IPv4 addresses only", d.ServerCommands))
		}
	default:
		add("data.server_commands", fmt.Errorf("unknown value %q; use \"auto\", \"classic\" or \"extended\"", d.ServerCommands))
	}

	switch d.SourceCheck {
	case "":
		add("data.source_check", errors.New("required"))
	case "strict", "off":
	case "trusted":
		if len(l.TrustedProxies) == 0 {
			add("data.source_check", errors.New(`"trusted" needs trusted_proxies: the sources to accept`))
		}
	default:
		add("data.source_check", fmt.Errorf("unknown value %q; use \"strict\", \"trusted\" or \"off\"", d.SourceCheck))
	}

	if d.ClientAddress != "" {
		// 227 carries IPv4 only (RFC 959); clients on IPv6 use EPSV,
		// whose 229 reply carries no address.
		switch a, err := netip.ParseAddr(d.ClientAddress); {
		case err != nil && validHostname(d.ClientAddress):
			// A DNS name, resolved at run time (dynamic DNS).
			if d.ClientAddressRefresh <= 0 {
				add("data.client_address_refresh", fmt.Errorf("must be positive, got %s", d.ClientAddressRefresh), "data.client_address")
			} else {
				v.ClientAddressName = d.ClientAddress
			}
		case err != nil:
			add("data.client_address", fmt.Errorf("%q is neither an IPv4 address nor a DNS name", d.ClientAddress))
		case !a.Unmap().Is4():
			add("data.client_address", fmt.Errorf("%s is not an IPv4 address; 227 replies carry IPv4 only", d.ClientAddress))
		case a.IsUnspecified():
			add("data.client_address", fmt.Errorf("%s is unspecified; write the address clients should connect to", d.ClientAddress))
		default:
			v.ClientAddress = a.Unmap()
		}
	}
	if d.ServerAddress != "" {
		switch a, err := netip.ParseAddr(d.ServerAddress); {
		case err != nil:
			add("data.server_address", fmt.Errorf("invalid IP address %q", d.ServerAddress))
		case a.IsUnspecified():
			add("data.server_address", fmt.Errorf("%s is unspecified; write the address the server should connect to", d.ServerAddress))
		default:
			if up, err := netip.ParseAddrPort(l.primaryUpstream()); err == nil && up.Addr().Unmap().Is4() != a.Unmap().Is4() {
				add("data.server_address", fmt.Errorf("%s and upstream %s are of different IP versions", d.ServerAddress, up.Addr()))
			} else {
				v.ServerAddress = a.Unmap()
			}
		}
	}

	for _, f := range []struct {
		name, value string
		to          *nat.PortRange
	}{
		{"data.client_ports", d.ClientPorts, &v.ClientPorts},
		{"data.server_ports", d.ServerPorts, &v.ServerPorts},
	} {
		if f.value == "" {
			add(f.name, errors.New("required"))
		} else if r, err := parseDataPorts(f.value); err != nil {
			add(f.name, err)
		} else {
			*f.to = r
		}
	}
	if d.AdvertisePorts != "" {
		switch a, err := nat.ParsePortRange(d.AdvertisePorts); {
		case err != nil:
			add("data.advertise_ports", err)
		case v.ClientPorts.Len() > 0 && a.Len() != v.ClientPorts.Len():
			add("data.advertise_ports", fmt.Errorf("%s has %d ports, client_ports %s has %d: they map port for port", a, a.Len(), v.ClientPorts, v.ClientPorts.Len()))
		default:
			v.AdvertisePorts = a
		}
	}
}

// parsePrefixes parses a list of networks (CIDR), reporting each invalid
// one as field[i], and returns the valid ones, masked (10.1.2.3/8 is
// 10.0.0.0/8).
func parsePrefixes(p *problems, field string, list []string) []netip.Prefix {
	var nets []netip.Prefix
	for i, c := range list {
		pfx, err := netip.ParsePrefix(c)
		if err != nil {
			p.add(fmt.Sprintf("%s[%d]", field, i), fmt.Errorf("invalid CIDR %q", c))
			continue
		}
		nets = append(nets, pfx.Masked())
	}
	return nets
}

// parseDataPorts parses a data port range such as "40000-40999": its
// syntax is nat.ParsePortRange's, and its ports must not be privileged.
func parseDataPorts(s string) (nat.PortRange, error) {
	r, err := nat.ParsePortRange(s)
	if err != nil {
		return nat.PortRange{}, err
	}
	if r.First < MinDataPort {
		return nat.PortRange{}, fmt.Errorf("%s starts below port %d", r, MinDataPort)
	}
	return r, nil
}

// validName reports whether s is made only of a-z, 0-9, "_" and "-".
func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// splitAddress splits "host:port" like net.SplitHostPort, with messages
// written for the config file, and checks that port is 1..65535.
func splitAddress(s string) (host string, port uint16, err error) {
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		var ae *net.AddrError
		switch {
		case errors.As(err, &ae) && ae.Err == "missing port in address":
			return "", 0, fmt.Errorf("invalid address %q: missing port", s)
		case errors.As(err, &ae) && ae.Err == "too many colons in address":
			return "", 0, fmt.Errorf("invalid address %q: write an IPv6 address in brackets, as in \"[2001:db8::1]:21\"", s)
		case errors.As(err, &ae):
			return "", 0, fmt.Errorf("invalid address %q: %s", s, strings.TrimSuffix(ae.Err, " in address"))
		default:
			return "", 0, fmt.Errorf("invalid address %q: %v", s, err)
		}
	}
	p, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || p == 0 {
		return "", 0, fmt.Errorf("invalid address %q: port must be a number from 1 to 65535", s)
	}
	return host, uint16(p), nil
}

// parseListen parses a listen address: an IP address and a port.
func parseListen(s string) (netip.AddrPort, error) {
	if s == "" {
		return netip.AddrPort{}, errors.New("required")
	}
	host, port, err := splitAddress(s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("invalid address %q: host must be an IP address (0.0.0.0 or [::] for all addresses)", s)
	}
	return netip.AddrPortFrom(a.Unmap(), port), nil
}

// checkUpstreams checks a reverse listener's list of upstreams: each
// an address, no two alike, all IP addresses of one version (the data
// settings are checked against it), and the policy for them.
func (l *Listener) checkUpstreams(p *problems) {
	seen := make(map[string]bool, len(l.Upstreams))
	family := ""
	for i, u := range l.Upstreams {
		field := fmt.Sprintf("upstreams[%d]", i)
		if err := checkUpstream(u); err != nil {
			p.add(field, err)
			continue
		}
		if seen[u] {
			p.add(field, fmt.Errorf("%s is listed twice", u))
		}
		seen[u] = true
		if ap, err := netip.ParseAddrPort(u); err == nil {
			f := "IPv6"
			if ap.Addr().Unmap().Is4() {
				f = "IPv4"
			}
			if family != "" && f != family {
				p.add(field, fmt.Errorf("%s is %s, the first upstream %s; list servers of one IP version", u, f, family))
			}
			if family == "" {
				family = f
			}
		}
	}
	if t := l.UpstreamTLS; t.Mode != TLSOff && t.ServerName == "" {
		hosts := map[string]bool{}
		for _, u := range l.Upstreams {
			if h, _, err := splitAddress(u); err == nil {
				hosts[h] = true
			}
		}
		if len(hosts) > 1 {
			p.add("upstream_tls.server_name", errors.New("required with upstreams on several hosts: the name their certificates are checked against"), "upstream_tls")
		}
	}
}

// byteUnits are the units of ParseByteRate.
var byteUnits = []struct {
	suffix string
	n      float64
}{
	{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1},
}

// ParseByteRate parses a rate in bytes per second: a number with an
// optional unit (B, KB, MB, GB, KiB, MiB, GiB; the case does not matter)
// and an optional "/s": "10MB", "512 KiB/s", "2000000".
func ParseByteRate(s string) (int64, error) {
	v := strings.ToUpper(strings.TrimSpace(s))
	v = strings.TrimSpace(strings.TrimSuffix(v, "/S"))
	mult := 1.0
	for _, u := range byteUnits {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			v, mult = strings.TrimSpace(n), u.n
			break
		}
	}
	f, err := strconv.ParseFloat(v, 64)
	switch {
	case err != nil || f != f:
		return 0, fmt.Errorf("invalid rate %q: write bytes per second, e.g. 10MB or 512KiB", s)
	case f*mult < 1024 || f*mult > 1e12:
		return 0, fmt.Errorf("rate %q out of range: from 1KiB to 1TB per second", s)
	}
	return int64(f * mult), nil
}

// checkUpstream checks an upstream address: an IP address or a DNS name,
// and a port.
func checkUpstream(s string) error {
	host, _, err := splitAddress(s)
	if err != nil {
		return err
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.IsUnspecified() {
			return fmt.Errorf("invalid address %q: host must not be an unspecified address", s)
		}
		return nil
	}
	if !validHostname(host) {
		return fmt.Errorf("invalid address %q: host is neither an IP address nor a DNS name", s)
	}
	return nil
}

// validHostname reports whether s is a DNS name: dot-separated labels of 1
// to 63 letters, digits, "-" and "_", not starting or ending with "-", at
// most 253 characters (a trailing dot aside), and not all digits in the last
// label, so that a mistyped IPv4 address such as "10.0.0.256" is refused.
func validHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, label := range labels {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	last := labels[len(labels)-1]
	return strings.Trim(last, "0123456789") != ""
}

// pool is a range of data ports on an address, owned by one listener.
type pool struct {
	i     int    // the listener's index
	field string // "data.client_ports" or "data.server_ports"
	addr  netip.Addr
	r     nat.PortRange
	// any4, any6: addr is not known (no server_address), and may be any
	// local address of these families.
	any4, any6 bool
}

// broad reports whether p's ports may be on more than one address: a
// wildcard, or an address not known.
func (p *pool) broad() bool {
	return !p.addr.IsValid() || p.addr.IsUnspecified()
}

// families reports which address families p's ports may be on.
func (p *pool) families() (v4, v6 bool) {
	if !p.addr.IsValid() {
		return p.any4, p.any6
	}
	if p.addr.IsUnspecified() && p.addr.Is6() {
		return true, true // [::] listens dual-stack
	}
	return p.addr.Is4(), p.addr.Is6()
}

// checkPortPools reports port ranges that could hand out the same port on
// the same address: client_ports of listeners sharing a client address (the
// listen IP when client_address is empty), server_ports of listeners whose
// server_address is set and equal, server_ports without server_address
// (on any local address of the server's family) and any other range of
// that family, and a client range and a server range on the same address,
// within a listener or across two.
//
// It takes n·log n time, not a comparison of every pair: the ranges of one
// address, and those of one address family, are sorted by first port and
// swept once, each range compared with the one reaching furthest before
// it. A range that overlaps several is so reported at least once, not
// against each: the error is on the later of the two listeners (the
// server range, within one listener), naming the earlier.
func (c *Config) checkPortPools() []*Error {
	var pools []pool // in the order of the listeners, client range first
	for i := range c.Listeners {
		l := &c.Listeners[i]
		v := &l.Parsed
		if v.ClientPorts.Len() > 0 {
			addr := v.ClientAddress
			if l.Data.ClientAddress == "" {
				addr = v.Listen.Addr()
			}
			if addr.IsValid() {
				pools = append(pools, pool{i: i, field: "data.client_ports", addr: addr, r: v.ClientPorts})
			}
		}
		if v.ServerPorts.Len() > 0 {
			p := pool{i: i, field: "data.server_ports", addr: v.ServerAddress, r: v.ServerPorts}
			switch {
			case l.Data.ServerAddress != "" && !p.addr.IsValid():
				continue // invalid, reported
			case !p.addr.IsValid():
				// Without server_address, the ports are on whatever local
				// address the connection to the server gets: any, of the
				// server's family where it is known.
				p.any4, p.any6 = serverFamilies(l)
			}
			pools = append(pools, p)
		}
	}

	// Two pools share an address if both are on one address (not a
	// wildcard), or if one is broad and both may be of one family.
	byAddr := map[netip.Addr][]int{}
	var v4, v6 []int
	for j := range pools {
		p := &pools[j]
		if !p.broad() {
			byAddr[p.addr] = append(byAddr[p.addr], j)
		}
		p4, p6 := p.families()
		if p4 {
			v4 = append(v4, j)
		}
		if p6 {
			v6 = append(v6, j)
		}
	}
	found := map[[2]int]bool{} // pairs of pools: later, earlier
	report := func(a, b int) {
		found[[2]int{max(a, b), min(a, b)}] = true
	}
	// sweep reports overlaps among the pools of group: each pool whose
	// range starts within the range reaching furthest before it, among
	// the broad ones, or among all if all is set or the pool is broad.
	sweep := func(group []int, all bool) {
		slices.SortFunc(group, func(a, b int) int {
			return cmp.Or(cmp.Compare(pools[a].r.First, pools[b].r.First), cmp.Compare(a, b))
		})
		reach, broadReach := -1, -1
		for _, j := range group {
			p := &pools[j]
			if broadReach >= 0 && p.r.First <= pools[broadReach].r.Last {
				report(j, broadReach)
			}
			if reach >= 0 && (all || p.broad()) && p.r.First <= pools[reach].r.Last {
				report(j, reach)
			}
			if reach < 0 || p.r.Last > pools[reach].r.Last {
				reach = j
			}
			if p.broad() && (broadReach < 0 || p.r.Last > pools[broadReach].r.Last) {
				broadReach = j
			}
		}
	}
	for _, group := range byAddr {
		sweep(group, true)
	}
	sweep(v4, false)
	sweep(v6, false)

	pairs := slices.SortedFunc(maps.Keys(found), func(a, b [2]int) int {
		return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1]))
	})
	errs := make([]*Error, 0, len(pairs))
	for _, pair := range pairs {
		p, o := &pools[pair[0]], &pools[pair[1]]
		owner := "of " + listenerPath(o.i, c.Listeners[o.i].Name)
		if o.i == p.i {
			owner = "of the same listener"
		}
		errs = append(errs, listenerError(p.i, c.Listeners[p.i].Name, fieldError{field: p.field,
			err: fmt.Errorf("%s on %s overlaps %s %s on %s %s", p.r, addrName(p.addr), o.field, o.r, addrName(o.addr), owner)}))
	}
	return errs
}

// check checks the limits section.
func (l *Limits) check(p *problems) {
	if l.MaxSessions < 1 {
		p.add("limits.max_sessions", fmt.Errorf("must be at least 1, got %d", l.MaxSessions))
	}
	switch {
	case l.MaxSessionsPerClient < 1:
		p.add("limits.max_sessions_per_client", fmt.Errorf("must be at least 1, got %d", l.MaxSessionsPerClient))
	case l.MaxSessions >= 1 && l.MaxSessionsPerClient > l.MaxSessions:
		p.add("limits.max_sessions_per_client", fmt.Errorf("must be at most limits.max_sessions (%d), got %d", l.MaxSessions, l.MaxSessionsPerClient), "limits.max_sessions")
	}
	if l.IdleTimeout <= 0 {
		p.add("limits.idle_timeout", fmt.Errorf("must be positive, got %s", l.IdleTimeout))
	}
	if l.DataTimeout <= 0 {
		p.add("limits.data_timeout", fmt.Errorf("must be positive, got %s", l.DataTimeout))
	}
	if l.DrainTimeout < 0 {
		p.add("limits.drain_timeout", fmt.Errorf("must not be negative, got %s", l.DrainTimeout))
	}
	if l.MaxLineBytes < MinLineBytes || l.MaxLineBytes > MaxLineBytes {
		p.add("limits.max_line_bytes", fmt.Errorf("must be from %d to %d, got %d", MinLineBytes, MaxLineBytes, l.MaxLineBytes))
	}
	if l.LoginTimeout <= 0 {
		p.add("limits.login_timeout", fmt.Errorf("must be positive, got %s", l.LoginTimeout))
	}
	if l.DataIdleTimeout < 0 {
		p.add("limits.data_idle_timeout", fmt.Errorf("must not be negative (0 turns it off), got %s", l.DataIdleTimeout))
	}
	if l.ClientIPv6Prefix < 1 || l.ClientIPv6Prefix > 128 {
		p.add("limits.client_ipv6_prefix", fmt.Errorf("must be from 1 to 128, got %d", l.ClientIPv6Prefix))
	}
	if l.LoginFailures < 0 {
		p.add("limits.login_failures", fmt.Errorf("must not be negative (0 turns it off), got %d", l.LoginFailures))
	}
	if l.LoginFailures > 0 && l.LoginFailureWindow <= 0 {
		p.add("limits.login_failure_window", fmt.Errorf("must be positive, got %s", l.LoginFailureWindow), "limits.login_failures")
	}
	if l.LoginFailures > 0 && l.LoginBan <= 0 {
		p.add("limits.login_ban", fmt.Errorf("must be positive, got %s", l.LoginBan), "limits.login_failures")
	}
	if l.ClientPortShare < 1 || l.ClientPortShare > 100 {
		p.add("limits.client_port_share", fmt.Errorf("must be from 1 to 100 (percent), got %d", l.ClientPortShare))
	}
}

// check checks the log section.
func (l *Log) check(p *problems) {
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		p.add("log.level", fmt.Errorf("unknown value %q; use \"debug\", \"info\", \"warn\" or \"error\"", l.Level))
	}
	switch l.Format {
	case "text", "json":
	default:
		p.add("log.format", fmt.Errorf("unknown value %q; use \"text\" or \"json\"", l.Format))
	}
	if l.Xferlog != "" && !filepath.IsAbs(l.Xferlog) {
		p.add("log.xferlog", fmt.Errorf("%q must be an absolute path", l.Xferlog))
	}
}

// check checks the firewall section.
func (f *Firewall) check(p *problems) {
	switch f.Backend {
	case BackendAuto, BackendNetlink, BackendIPTables, BackendNftables, BackendNone:
	default:
		p.add("firewall.backend", fmt.Errorf("unknown value %q; use %q, %q, %q, %q or %q", f.Backend, BackendAuto, BackendNetlink, BackendIPTables, BackendNftables, BackendNone))
	}
	if !validChainPrefix(f.ChainPrefix) {
		p.add("firewall.chain_prefix", fmt.Errorf("%q must be 1 to 16 letters, digits, \"_\" or \"-\"", f.ChainPrefix))
	}
	if f.PinholeTTL <= 0 {
		p.add("firewall.pinhole_ttl", fmt.Errorf("must be positive, got %s", f.PinholeTTL))
	}
	switch f.Variant {
	case VariantAuto, VariantNFT, VariantLegacy:
	default:
		p.add("firewall.variant", fmt.Errorf("unknown value %q; use %q, %q or %q", f.Variant, VariantAuto, VariantNFT, VariantLegacy))
	}
	f.Nftables.check(p)
}

// check checks the nftables section, whatever the backend: a section
// written for later is checked now.
func (n *Nftables) check(p *problems) {
	if fam, name, ok := strings.Cut(strings.TrimSpace(n.Table), " "); !ok {
		p.add("firewall.nftables.table", fmt.Errorf("%q: want \"FAMILY NAME\", e.g. %q", n.Table, DefaultNftablesTable))
	} else if fam != "inet" && fam != "ip" && fam != "ip6" {
		p.add("firewall.nftables.table", fmt.Errorf("%q: family %q is not inet, ip or ip6", n.Table, fam))
	} else if !validNftName(strings.TrimSpace(name)) {
		p.add("firewall.nftables.table", fmt.Errorf("%q: %q is not an nft name (a letter or \"_\", then letters, digits, \"_\", \".\" or \"-\", at most 64)", n.Table, strings.TrimSpace(name)))
	}
	switch n.Attach {
	case AttachChain:
	case AttachSets:
		if len(n.Chains) > 0 {
			p.add("firewall.nftables.chains", fmt.Errorf("must be empty with attach %q: ftpgate touches no chain, the operator's rules match its sets", AttachSets))
		}
	default:
		p.add("firewall.nftables.attach", fmt.Errorf("unknown value %q; use %q or %q", n.Attach, AttachChain, AttachSets))
	}
	for i, c := range n.Chains {
		key := fmt.Sprintf("firewall.nftables.chains[%d]", i)
		switch {
		case !validNftName(c):
			p.add(key, fmt.Errorf("%q is not an nft name (a letter or \"_\", then letters, digits, \"_\", \".\" or \"-\", at most 64)", c))
		case slices.Contains(n.Chains[:i], c):
			p.add(key, fmt.Errorf("%q is listed twice", c))
		}
	}
}

// validNftName reports whether s is an nft identifier that needs no
// quoting, as the rules package accepts for table and chain names.
func validNftName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i, r := range s {
		letter := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '_'
		if !letter && (i == 0 || !(r >= '0' && r <= '9' || r == '.' || r == '-')) {
			return false
		}
	}
	return true
}

// validChainPrefix reports whether s can start iptables chain names such as
// s+"-POSTROUTING" (at most 28 characters in all).
func validChainPrefix(s string) bool {
	if len(s) == 0 || len(s) > 16 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// checkExtraVerb reports why v cannot be an extra verb.
func checkExtraVerb(v string) error {
	if v == "" || len(v) > 16 || strings.IndexFunc(v, func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z')
	}) >= 0 {
		return fmt.Errorf("%q: a verb is 1 to 16 letters", v)
	}
	if ftp.KnownVerb(strings.ToUpper(v)) {
		return fmt.Errorf("%q is a verb ftpgate knows already", v)
	}
	return nil
}

// addrName names a port pool's address in errors; the invalid address
// stands for any local address.
func addrName(a netip.Addr) string {
	if !a.IsValid() {
		return "any local address (no server_address)"
	}
	return a.String()
}

// serverFamilies returns the address families of l's server connections:
// the upstream's, if it is an IP address; the clients', in transparent
// mode; either, otherwise.
func serverFamilies(l *Listener) (v4, v6 bool) {
	switch l.Mode {
	case ModeReverse:
		if host, _, err := splitAddress(l.primaryUpstream()); err == nil {
			if a, err := netip.ParseAddr(host); err == nil {
				return a.Unmap().Is4(), !a.Unmap().Is4()
			}
		}
	case ModeTransparent:
		if a := l.Parsed.Listen.Addr(); a.IsValid() && !a.IsUnspecified() {
			return a.Is4(), !a.Is4()
		}
	}
	return true, true
}

// checkTLS checks the tls and upstream_tls sections; the files are
// loaded (a pair that does not match, or an unreadable CA, is an error
// here, not at the first session).
func (l *Listener) checkTLS(p *problems) {
	add := p.add
	modes := func(field, mode string) bool {
		switch mode {
		case TLSOff, TLSExplicit, TLSImplicit:
			return true
		case "":
			add(field, errors.New("required"))
			return false
		}
		add(field, fmt.Errorf("unknown value %q; use %q, %q or %q", mode, TLSOff, TLSExplicit, TLSImplicit))
		return false
	}
	version := func(field, v string) {
		if v == "" {
			add(field, errors.New("required"))
		} else if v != "1.2" && v != "1.3" {
			add(field, fmt.Errorf("unknown value %q; use \"1.2\" or \"1.3\"", v))
		}
	}
	t, u := l.TLS, l.UpstreamTLS
	if modes("tls.mode", t.Mode) && t.Mode != TLSOff {
		switch {
		case t.Cert == "" || t.Key == "":
			add("tls", errors.New("cert and key are required with a mode other than off"))
		default:
			if _, err := tls.LoadX509KeyPair(t.Cert, t.Key); err != nil {
				add("tls", fmt.Errorf("loading cert %s and key %s: %w", t.Cert, t.Key, err))
			}
		}
		if l.Mode == ModeTransparent {
			add("tls.mode", errors.New("not in transparent mode: the clients expect their servers' certificates"))
		}
	}
	if t.SessionReuse == "" {
		add("tls.session_reuse", errors.New("required"))
	} else if t.SessionReuse != ReuseRequired && t.SessionReuse != ReuseOptional {
		add("tls.session_reuse", fmt.Errorf("unknown value %q; use %q or %q", t.SessionReuse, ReuseRequired, ReuseOptional))
	}
	if t.Required && t.Mode == TLSOff {
		add("tls.required", errors.New("needs tls.mode explicit or implicit"), "tls.mode")
	}
	version("tls.min_version", t.MinVersion)
	if modes("upstream_tls.mode", u.Mode) && u.Mode != TLSOff {
		if u.CA != "" {
			if pem, err := os.ReadFile(u.CA); err != nil {
				add("upstream_tls.ca", err)
			} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
				add("upstream_tls.ca", fmt.Errorf("%s holds no PEM certificate", u.CA))
			}
		}
		if l.Mode != ModeReverse {
			add("upstream_tls.mode", errors.New("only in reverse mode, where the server is known"))
		}
		if t.Mode == TLSOff && !u.PlainClients {
			add("upstream_tls", errors.New("with tls.mode off, the clients' passwords cross the client side in clear: set plain_clients: true if that side is trusted"))
		}
	}
	version("upstream_tls.min_version", u.MinVersion)
}
