package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
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
// one per line, each prefixed with the path of the field concerned, e.g.
// `listeners[0] (public): listen: invalid address "198.19.0.1": missing port`.
// It does not apply defaults: fields that Parse fills in are required here.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Listeners) == 0 {
		errs = append(errs, errors.New("at least one listener is required"))
	}
	names := map[string]int{}
	var listens []placed[netip.AddrPort]
	for i := range c.Listeners {
		l := &c.Listeners[i]
		path := listenerPath(i, l.Name)
		for _, err := range l.validate() {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
		}
		if l.Name != "" {
			if j, dup := names[l.Name]; dup {
				errs = append(errs, fmt.Errorf("%s: name: %q is already used by listeners[%d]", path, l.Name, j))
			} else {
				names[l.Name] = i
			}
		}
		if ap, err := parseListen(l.Listen); err == nil {
			for _, o := range listens {
				switch {
				case ap == o.v:
					errs = append(errs, fmt.Errorf("%s: listen: %s is already used by %s", path, ap, o.path))
				case ap.Port() == o.v.Port() && overlaps(ap.Addr(), o.v.Addr()):
					errs = append(errs, fmt.Errorf("%s: listen: %s overlaps %s of %s", path, ap, o.v, o.path))
				}
			}
			listens = append(listens, placed[netip.AddrPort]{ap, i, path})
		}
	}
	if c.Firewall.Backend == BackendNone {
		for i, l := range c.Listeners {
			if l.Data.Path == PathKernel {
				errs = append(errs, fmt.Errorf("%s: data.path: %q needs a firewall backend other than %q: its data connections cross only through pinholes", listenerPath(i, l.Name), PathKernel, BackendNone))
			}
		}
	}
	errs = append(errs, c.checkPortPools()...)
	errs = append(errs, c.Limits.validate()...)
	errs = append(errs, c.Log.validate()...)
	errs = append(errs, c.Firewall.validate()...)
	if c.Metrics.Listen != "" {
		if _, err := parseListen(c.Metrics.Listen); err != nil {
			errs = append(errs, fmt.Errorf("metrics.listen: %w", err))
		}
	}
	return errors.Join(errs...)
}

// placed is a value and the listener it comes from.
type placed[T any] struct {
	v    T
	i    int    // index in Config.Listeners
	path string // listenerPath of that listener
}

// validate checks l on its own; Config.Validate adds the path prefix and the
// checks across listeners.
func (l *Listener) validate() []error {
	var errs []error
	add := func(field string, err error) {
		errs = append(errs, fmt.Errorf("%s: %w", field, err))
	}

	switch {
	case l.Name == "":
		add("name", errors.New("required"))
	case !validName(l.Name):
		add("name", fmt.Errorf("%q may contain only a-z, 0-9, \"_\" and \"-\"", l.Name))
	}

	if _, err := parseListen(l.Listen); err != nil {
		add("listen", err)
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
			errs = append(errs, l.validateUpstreams()...)
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
		for i, c := range l.AllowDestinations {
			if _, err := netip.ParsePrefix(c); err != nil {
				add(fmt.Sprintf("allow_destinations[%d]", i), fmt.Errorf("invalid CIDR %q", c))
			}
		}
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
		for i, c := range l.AllowDestinations {
			if _, err := netip.ParsePrefix(c); err != nil {
				add(fmt.Sprintf("allow_destinations[%d]", i), fmt.Errorf("invalid CIDR %q", c))
			}
		}
		if l.Intercept != "" {
			add("intercept", errors.New("only for transparent mode"))
		}
	default:
		add("mode", fmt.Errorf("unknown value %q; use %q, %q or %q", l.Mode, ModeReverse, ModeTransparent, ModeForward))
	}

	errs = append(errs, l.validateTLS()...)

	for i, p := range l.AllowPorts {
		if _, err := nat.ParsePortRange(p); err != nil {
			add(fmt.Sprintf("allow_ports[%d]", i), err)
		}
	}

	for i, v := range l.ExtraVerbs {
		if err := checkExtraVerb(v); err != nil {
			add(fmt.Sprintf("extra_verbs[%d]", i), err)
		}
	}
	for i, v := range l.DenyCommands {
		switch up := strings.ToUpper(v); {
		case !ftp.KnownVerb(up) && !slices.ContainsFunc(l.ExtraVerbs, func(e string) bool { return strings.EqualFold(e, v) }):
			add(fmt.Sprintf("deny_commands[%d]", i), fmt.Errorf("%q is not a verb ftpgate knows or forwards (extra_verbs)", v))
		case up == "QUIT":
			add(fmt.Sprintf("deny_commands[%d]", i), errors.New("QUIT cannot be denied: a client must be able to leave"))
		}
	}
	for i, c := range l.AllowClients {
		if _, err := netip.ParsePrefix(c); err != nil {
			add(fmt.Sprintf("allow_clients[%d]", i), fmt.Errorf("invalid CIDR %q", c))
		}
	}

	for _, r := range []struct{ field, value string }{
		{"rate_limit.session", l.RateLimit.Session},
		{"rate_limit.listener", l.RateLimit.Listener},
	} {
		if r.value == "" {
			continue
		}
		if _, err := ParseByteRate(r.value); err != nil {
			add(r.field, err)
		} else if l.Data.Path == PathKernel {
			add(r.field, errors.New("not with data.path kernel: the kernel forwards the data, ftpgate cannot pace it"))
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
		add("trusted_proxies", errors.New("required with proxy_protocol: the load balancers whose headers to believe"))
	}
	if !l.ProxyProtocol && l.Data.SourceCheck != "trusted" && len(l.TrustedProxies) > 0 {
		add("trusted_proxies", errors.New("only with proxy_protocol: true or data.source_check: trusted"))
	}
	for i, c := range l.TrustedProxies {
		if _, err := netip.ParsePrefix(c); err != nil {
			add(fmt.Sprintf("trusted_proxies[%d]", i), fmt.Errorf("invalid CIDR %q", c))
		}
	}

	d := &l.Data
	switch d.Path {
	case "":
		add("data.path", errors.New("required"))
	case PathRelay:
	case PathKernel:
		// The kernel forwards what it is told: it cannot turn a passive
		// data connection into an active one.
		if d.ServerMode != ServerModeSame && d.ServerMode != "" {
			add("data.server_mode", fmt.Errorf("%q needs path %q: the kernel path cannot convert modes; use %q", d.ServerMode, PathRelay, ServerModeSame))
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
	if d.AdvertisePorts != "" {
		a, aerr := nat.ParsePortRange(d.AdvertisePorts)
		c, cerr := nat.ParsePortRange(d.ClientPorts)
		switch {
		case aerr != nil:
			add("data.advertise_ports", aerr)
		case cerr == nil && a.Len() != c.Len():
			add("data.advertise_ports", fmt.Errorf("%s has %d ports, client_ports %s has %d: they map port for port", a, a.Len(), c, c.Len()))
		}
	}

	if d.ClientAddress != "" {
		// 227 carries IPv4 only (RFC 959); clients on IPv6 use EPSV,
		// whose 229 reply carries no address.
		switch a, err := netip.ParseAddr(d.ClientAddress); {
		case err != nil && validHostname(d.ClientAddress):
			// A DNS name, resolved at run time (dynamic DNS).
			if d.ClientAddressRefresh <= 0 {
				add("data.client_address_refresh", fmt.Errorf("must be positive, got %s", d.ClientAddressRefresh))
			}
		case err != nil:
			add("data.client_address", fmt.Errorf("%q is neither an IPv4 address nor a DNS name", d.ClientAddress))
		case !a.Unmap().Is4():
			add("data.client_address", fmt.Errorf("%s is not an IPv4 address; 227 replies carry IPv4 only", d.ClientAddress))
		case a.IsUnspecified():
			add("data.client_address", fmt.Errorf("%s is unspecified; write the address clients should connect to", d.ClientAddress))
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
			}
		}
	}

	for _, f := range []struct{ name, value string }{
		{"data.client_ports", d.ClientPorts},
		{"data.server_ports", d.ServerPorts},
	} {
		if f.value == "" {
			add(f.name, errors.New("required"))
		} else if err := validPortRange(f.value); err != nil {
			add(f.name, err)
		}
	}
	return errs
}

// validPortRange checks a data port range such as "40000-40999": its syntax
// is nat.ParsePortRange's, and its ports must not be privileged.
func validPortRange(s string) error {
	r, err := nat.ParsePortRange(s)
	if err != nil {
		return err
	}
	if r.First < MinDataPort {
		return fmt.Errorf("%s starts below port %d", r, MinDataPort)
	}
	return nil
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

// validateUpstreams checks a reverse listener's list of upstreams: each
// an address, no two alike, all IP addresses of one version (the data
// settings are checked against it), and the policy for them.
func (l *Listener) validateUpstreams() []error {
	var errs []error
	seen := map[string]bool{}
	family := ""
	for i, u := range l.Upstreams {
		field := fmt.Sprintf("upstreams[%d]", i)
		if err := checkUpstream(u); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
			continue
		}
		if seen[u] {
			errs = append(errs, fmt.Errorf("%s: %s is listed twice", field, u))
		}
		seen[u] = true
		if ap, err := netip.ParseAddrPort(u); err == nil {
			f := "IPv6"
			if ap.Addr().Unmap().Is4() {
				f = "IPv4"
			}
			if family != "" && f != family {
				errs = append(errs, fmt.Errorf("%s: %s is %s, the first upstream %s; list servers of one IP version", field, u, f, family))
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
			errs = append(errs, errors.New("upstream_tls.server_name: required with upstreams on several hosts: the name their certificates are checked against"))
		}
	}
	return errs
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

// overlaps reports whether sockets bound to a and b on one port would
// collide: the addresses are equal, or one is a wildcard covering the other
// (0.0.0.0 covers IPv4, [::] covers both, as Go listens dual-stack).
func overlaps(a, b netip.Addr) bool {
	a, b = a.Unmap(), b.Unmap()
	covers := func(w, x netip.Addr) bool {
		return w.IsUnspecified() && (w.Is6() || x.Is4())
	}
	return a == b || covers(a, b) || covers(b, a)
}

// pool is a range of data ports on an address, owned by one listener.
type pool struct {
	field string // "data.client_ports" or "data.server_ports"
	addr  netip.Addr
	r     nat.PortRange
	// any4, any6: addr is not known (no server_address), and may be any
	// local address of these families.
	any4, any6 bool
}

// families reports which address families p's ports may be on.
func (p pool) families() (v4, v6 bool) {
	if !p.addr.IsValid() {
		return p.any4, p.any6
	}
	if p.addr.IsUnspecified() && p.addr.Is6() {
		return true, true // [::] listens dual-stack
	}
	return p.addr.Is4(), p.addr.Is6()
}

// sharesAddress reports whether p and o may hold a port of the same
// address.
func (p pool) sharesAddress(o pool) bool {
	if p.addr.IsValid() && o.addr.IsValid() {
		return overlaps(p.addr, o.addr)
	}
	p4, p6 := p.families()
	o4, o6 := o.families()
	return p4 && o4 || p6 && o6
}

// checkPortPools reports port ranges that could hand out the same port on
// the same address: client_ports of listeners sharing a client address (the
// listen IP when client_address is empty), server_ports of listeners whose
// server_address is set and equal, and a client range and a server range on
// the same address, within a listener or across two.
func (c *Config) checkPortPools() []error {
	var errs []error
	var pools []placed[pool]
	for i, l := range c.Listeners {
		path := listenerPath(i, l.Name)
		var mine []pool
		if r, ok := parsedRange(l.Data.ClientPorts); ok {
			addr, err := netip.ParseAddr(l.Data.ClientAddress)
			if l.Data.ClientAddress == "" {
				var ap netip.AddrPort
				ap, err = parseListen(l.Listen)
				addr = ap.Addr()
			}
			if err == nil {
				mine = append(mine, pool{field: "data.client_ports", addr: addr.Unmap(), r: r})
			}
		}
		if r, ok := parsedRange(l.Data.ServerPorts); ok {
			p := pool{field: "data.server_ports", r: r}
			if addr, err := netip.ParseAddr(l.Data.ServerAddress); err == nil {
				p.addr = addr.Unmap()
			} else {
				// Without server_address, the ports are on whatever local
				// address the connection to the server gets: any, of the
				// server's family where it is known.
				p.any4, p.any6 = serverFamilies(l)
			}
			mine = append(mine, p)
		}
		for _, p := range mine {
			for _, o := range pools {
				if !p.sharesAddress(o.v) || p.r.First > o.v.r.Last || o.v.r.First > p.r.Last {
					continue
				}
				owner := "of " + o.path
				if o.i == i {
					owner = "of the same listener"
				}
				errs = append(errs, fmt.Errorf("%s: %s: %s on %s overlaps %s %s on %s %s",
					path, p.field, p.r, addrName(p.addr), o.v.field, o.v.r, addrName(o.v.addr), owner))
			}
			pools = append(pools, placed[pool]{p, i, path})
		}
	}
	return errs
}

// parsedRange returns the range s names if it is valid.
func parsedRange(s string) (nat.PortRange, bool) {
	if validPortRange(s) != nil {
		return nat.PortRange{}, false
	}
	r, err := nat.ParsePortRange(s)
	return r, err == nil
}

func (l *Limits) validate() []error {
	var errs []error
	if l.MaxSessions < 1 {
		errs = append(errs, fmt.Errorf("limits.max_sessions: must be at least 1, got %d", l.MaxSessions))
	}
	switch {
	case l.MaxSessionsPerClient < 1:
		errs = append(errs, fmt.Errorf("limits.max_sessions_per_client: must be at least 1, got %d", l.MaxSessionsPerClient))
	case l.MaxSessions >= 1 && l.MaxSessionsPerClient > l.MaxSessions:
		errs = append(errs, fmt.Errorf("limits.max_sessions_per_client: must be at most limits.max_sessions (%d), got %d", l.MaxSessions, l.MaxSessionsPerClient))
	}
	if l.IdleTimeout <= 0 {
		errs = append(errs, fmt.Errorf("limits.idle_timeout: must be positive, got %s", l.IdleTimeout))
	}
	if l.DataTimeout <= 0 {
		errs = append(errs, fmt.Errorf("limits.data_timeout: must be positive, got %s", l.DataTimeout))
	}
	if l.DrainTimeout < 0 {
		errs = append(errs, fmt.Errorf("limits.drain_timeout: must not be negative, got %s", l.DrainTimeout))
	}
	if l.MaxLineBytes < MinLineBytes || l.MaxLineBytes > MaxLineBytes {
		errs = append(errs, fmt.Errorf("limits.max_line_bytes: must be from %d to %d, got %d", MinLineBytes, MaxLineBytes, l.MaxLineBytes))
	}
	if l.LoginTimeout <= 0 {
		errs = append(errs, fmt.Errorf("limits.login_timeout: must be positive, got %s", l.LoginTimeout))
	}
	if l.DataIdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("limits.data_idle_timeout: must not be negative (0 turns it off), got %s", l.DataIdleTimeout))
	}
	if l.ClientIPv6Prefix < 1 || l.ClientIPv6Prefix > 128 {
		errs = append(errs, fmt.Errorf("limits.client_ipv6_prefix: must be from 1 to 128, got %d", l.ClientIPv6Prefix))
	}
	if l.LoginFailures < 0 {
		errs = append(errs, fmt.Errorf("limits.login_failures: must not be negative (0 turns it off), got %d", l.LoginFailures))
	}
	if l.LoginFailures > 0 && l.LoginFailureWindow <= 0 {
		errs = append(errs, fmt.Errorf("limits.login_failure_window: must be positive, got %s", l.LoginFailureWindow))
	}
	if l.LoginFailures > 0 && l.LoginBan <= 0 {
		errs = append(errs, fmt.Errorf("limits.login_ban: must be positive, got %s", l.LoginBan))
	}
	if l.ClientPortShare < 1 || l.ClientPortShare > 100 {
		errs = append(errs, fmt.Errorf("limits.client_port_share: must be from 1 to 100 (percent), got %d", l.ClientPortShare))
	}
	return errs
}

func (l *Log) validate() []error {
	var errs []error
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level: unknown value %q; use \"debug\", \"info\", \"warn\" or \"error\"", l.Level))
	}
	switch l.Format {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log.format: unknown value %q; use \"text\" or \"json\"", l.Format))
	}
	if l.Xferlog != "" && !filepath.IsAbs(l.Xferlog) {
		errs = append(errs, fmt.Errorf("log.xferlog: %q must be an absolute path", l.Xferlog))
	}
	return errs
}

func (f *Firewall) validate() []error {
	var errs []error
	switch f.Backend {
	case BackendAuto, BackendNetlink, BackendIPTables, BackendNone:
	default:
		errs = append(errs, fmt.Errorf("firewall.backend: unknown value %q; use %q, %q, %q or %q", f.Backend, BackendAuto, BackendNetlink, BackendIPTables, BackendNone))
	}
	if !validChainPrefix(f.ChainPrefix) {
		errs = append(errs, fmt.Errorf("firewall.chain_prefix: %q must be 1 to 16 letters, digits, \"_\" or \"-\"", f.ChainPrefix))
	}
	if f.PinholeTTL <= 0 {
		errs = append(errs, fmt.Errorf("firewall.pinhole_ttl: must be positive, got %s", f.PinholeTTL))
	}
	switch f.Variant {
	case VariantAuto, VariantNFT, VariantLegacy:
	default:
		errs = append(errs, fmt.Errorf("firewall.variant: unknown value %q; use %q, %q or %q", f.Variant, VariantAuto, VariantNFT, VariantLegacy))
	}
	return errs
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
func serverFamilies(l Listener) (v4, v6 bool) {
	switch l.Mode {
	case ModeReverse:
		if host, _, err := splitAddress(l.primaryUpstream()); err == nil {
			if a, err := netip.ParseAddr(host); err == nil {
				return a.Unmap().Is4(), !a.Unmap().Is4()
			}
		}
	case ModeTransparent:
		if ap, err := parseListen(l.Listen); err == nil && !ap.Addr().IsUnspecified() {
			return ap.Addr().Unmap().Is4(), !ap.Addr().Unmap().Is4()
		}
	}
	return true, true
}

// validateTLS checks the tls and upstream_tls sections; the files are
// loaded (a pair that does not match, or an unreadable CA, is an error
// here, not at the first session).
func (l *Listener) validateTLS() []error {
	var errs []error
	add := func(field string, err error) { errs = append(errs, fmt.Errorf("%s: %w", field, err)) }
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
		add("tls.required", errors.New("needs tls.mode explicit or implicit"))
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
	return errs
}
