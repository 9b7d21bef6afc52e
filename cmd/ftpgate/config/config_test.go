package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/nat"
)

func TestLoadGood(t *testing.T) {
	got, err := Load("testdata/good.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := &Config{
		Listeners: []Listener{
			{
				Name:           "public",
				Listen:         "198.19.0.1:21",
				Mode:           "reverse",
				Upstream:       "198.18.1.2:21",
				TLS:            defaultTLS,
				UpstreamTLS:    defaultUpstreamTLS,
				UpstreamPolicy: "in_order", UpstreamHoldDown: 30 * time.Second,
				Data: Data{
					ClientAddressRefresh: time.Minute,
					Path:                 "relay",
					ServerMode:           "same",
					ServerCommands:       "auto",
					SourceCheck:          "strict",
					ClientAddress:        "198.19.0.1",
					ClientPorts:          "40000-40999",
					ServerAddress:        "198.18.1.1",
					ServerPorts:          "51000-51999",
				},
				Parsed: ListenerValues{
					Listen:        netip.MustParseAddrPort("198.19.0.1:21"),
					ClientAddress: netip.MustParseAddr("198.19.0.1"),
					ClientPorts:   nat.PortRange{First: 40000, Last: 40999},
					ServerAddress: netip.MustParseAddr("198.18.1.1"),
					ServerPorts:   nat.PortRange{First: 51000, Last: 51999},
				},
			},
			{
				Name:           "passive_only",
				Listen:         "198.19.0.1:2121",
				Mode:           "reverse",
				Upstream:       "ftp.example.net:21",
				TLS:            defaultTLS,
				UpstreamTLS:    defaultUpstreamTLS,
				UpstreamPolicy: "in_order", UpstreamHoldDown: 30 * time.Second,
				Data: Data{
					ClientAddressRefresh: time.Minute,
					Path:                 "relay",
					ServerMode:           "passive",
					ServerCommands:       "auto",
					SourceCheck:          "strict",
					ClientPorts:          "41000-41999",
					ServerPorts:          "50000-50999",
				},
				Parsed: ListenerValues{
					Listen:      netip.MustParseAddrPort("198.19.0.1:2121"),
					ClientPorts: nat.PortRange{First: 41000, Last: 41999},
					ServerPorts: nat.PortRange{First: 50000, Last: 50999},
				},
			},
			{
				Name:           "active-v6",
				Listen:         "[2001:db8::1]:21",
				Mode:           "reverse",
				Upstream:       "[2001:db8:1::2]:21",
				TLS:            defaultTLS,
				UpstreamTLS:    defaultUpstreamTLS,
				UpstreamPolicy: "in_order", UpstreamHoldDown: 30 * time.Second,
				Data: Data{
					ClientAddressRefresh: time.Minute,
					Path:                 "relay",
					ServerMode:           "active",
					ServerCommands:       "auto",
					SourceCheck:          "strict",
					ClientPorts:          "42000-42999",
					ServerAddress:        "2001:db8:1::1",
					ServerPorts:          "52000-52999",
				},
				Parsed: ListenerValues{
					Listen:        netip.MustParseAddrPort("[2001:db8::1]:21"),
					ClientPorts:   nat.PortRange{First: 42000, Last: 42999},
					ServerAddress: netip.MustParseAddr("2001:db8:1::1"),
					ServerPorts:   nat.PortRange{First: 52000, Last: 52999},
				},
			},
			{
				Name:              "edge",
				Listen:            "198.18.1.1:2121",
				Mode:              "transparent",
				AllowDestinations: []string{"198.19.0.0/24", "2001:db8:2::/48"},
				Intercept:         "redirect",
				TLS:               defaultTLS,
				UpstreamTLS:       defaultUpstreamTLS,
				UpstreamPolicy:    "in_order", UpstreamHoldDown: 30 * time.Second,
				Data: Data{
					ClientAddressRefresh: time.Minute,
					Path:                 "kernel",
					ServerMode:           "same",
					ServerCommands:       "auto",
					SourceCheck:          "strict",
					ClientPorts:          "43000-43999",
					ServerPorts:          "53000-53999",
				},
				Parsed: ListenerValues{
					Listen:            netip.MustParseAddrPort("198.18.1.1:2121"),
					ClientPorts:       nat.PortRange{First: 43000, Last: 43999},
					ServerPorts:       nat.PortRange{First: 53000, Last: 53999},
					AllowDestinations: []netip.Prefix{netip.MustParsePrefix("198.19.0.0/24"), netip.MustParsePrefix("2001:db8:2::/48")},
				},
			},
		},
		Limits: Limits{
			MaxSessions:          500,
			MaxSessionsPerClient: 8,
			IdleTimeout:          time.Hour,
			DataTimeout:          45 * time.Second,
			DrainTimeout:         30 * time.Second,
			MaxLineBytes:         1024,
			LoginTimeout:         20 * time.Second,
			ClientIPv6Prefix:     56,
			ClientPortShare:      25,
			LoginFailureWindow:   5 * time.Minute, LoginBan: 15 * time.Minute,
		},
		Log: Log{Level: "debug", Format: "json"},
		Firewall: Firewall{Backend: "iptables", ChainPrefix: "FG_1", PinholeTTL: 10 * time.Second, Variant: "legacy",
			Nftables: Nftables{Table: "inet filter", Attach: "chain"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load(good.yaml):\n got %+v\nwant %+v", got, want)
	}
}

func TestDefault(t *testing.T) {
	want := Config{
		Limits: Limits{
			MaxSessions:          10000,
			MaxSessionsPerClient: 64,
			IdleTimeout:          15 * time.Minute,
			DataTimeout:          30 * time.Second,
			DrainTimeout:         30 * time.Second,
			MaxLineBytes:         4096,
			LoginTimeout:         30 * time.Second,
			DataIdleTimeout:      5 * time.Minute,
			ClientIPv6Prefix:     64,
			ClientPortShare:      50,
			LoginFailureWindow:   5 * time.Minute, LoginBan: 15 * time.Minute,
		},
		Log: Log{Level: "info", Format: "text"},
		Firewall: Firewall{Backend: "auto", ChainPrefix: "FTPGATE", PinholeTTL: 30 * time.Second, Variant: "auto",
			Nftables: Nftables{Table: "inet filter", Attach: "chain"}},
	}
	if got := Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("Default() = %+v, want %+v", got, want)
	}
}

// The defaults of a listener's tls and upstream_tls sections.
var (
	defaultTLS         = TLS{Mode: "off", SessionReuse: "required", MinVersion: "1.2"}
	defaultUpstreamTLS = UpstreamTLS{Mode: "off", MinVersion: "1.2"}
)

// TestParseDefaults checks that a minimal file gets every default, including
// the limits and log sections it leaves out or leaves empty.
func TestParseDefaults(t *testing.T) {
	for name, text := range map[string]string{
		"sections omitted": "listeners:\n  - name: a\n    listen: 198.19.0.1:21\n    upstream: ftp.example.net:21\n",
		"sections empty":   "listeners:\n  - name: a\n    listen: 198.19.0.1:21\n    upstream: ftp.example.net:21\n    data:\nlimits:\nlog:\n",
		"fields empty":     "listeners:\n  - name: a\n    listen: 198.19.0.1:21\n    mode: \"\"\n    upstream: ftp.example.net:21\n    data: {path: \"\", server_mode: \"\", client_ports: \"\", server_ports: \"\"}\n",
	} {
		t.Run(name, func(t *testing.T) {
			got, err := Parse([]byte(text))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			want := Default()
			want.Listeners = []Listener{{
				Name:     "a",
				Listen:   "198.19.0.1:21",
				Mode:     "reverse",
				Upstream: "ftp.example.net:21",
				Data: Data{
					ClientAddressRefresh: time.Minute,
					Path:                 "relay",
					ServerMode:           "same",
					ServerCommands:       "auto",
					SourceCheck:          "strict",
					ClientPorts:          "40000-40999",
					ServerPorts:          "50000-50999",
				},
				TLS:            defaultTLS,
				UpstreamTLS:    defaultUpstreamTLS,
				UpstreamPolicy: "in_order", UpstreamHoldDown: 30 * time.Second,
				Parsed: ListenerValues{
					Listen:      netip.MustParseAddrPort("198.19.0.1:21"),
					ClientPorts: nat.PortRange{First: 40000, Last: 40999},
					ServerPorts: nat.PortRange{First: 50000, Last: 50999},
				},
			}}
			if !reflect.DeepEqual(*got, want) {
				t.Errorf("Parse:\n got %+v\nwant %+v", *got, want)
			}
		})
	}
}

// TestLoadBad loads each testdata/bad-*.yaml and compares the whole error
// message. Every bad file must be listed, and every listed file must exist.
func TestLoadBad(t *testing.T) {
	tests := []struct {
		file string
		want string
	}{
		// Decoding.
		{"bad-empty.yaml", `at least one listener is required`},
		{"bad-comments-only.yaml", `at least one listener is required`},
		{"bad-no-listeners.yaml", `line 1: at least one listener is required`},
		{"bad-unknown-key.yaml", `line 6: listeners[0] (public): data: unknown key "sever_mode"`},
		{"bad-unknown-top-key.yaml", `line 1: unknown key "listener"`},
		{"bad-not-integer.yaml", `line 6: limits.max_sessions: want an integer, got "lots"`},
		{"bad-duration-no-unit.yaml", `line 6: limits.idle_timeout: invalid duration 5: write a number with a unit, such as "30s" or "15m"`},
		{"bad-duration-text.yaml", `line 6: limits.data_timeout: invalid duration "soon": write a number with a unit, such as "30s" or "15m"`},
		{"bad-listeners-mapping.yaml", `line 2: listeners: want a list, got a mapping`},
		{"bad-data-list.yaml", `line 5: listeners[0] (public): data: want a mapping, got a list`},
		{"bad-top-scalar.yaml", `line 1: want a mapping, got "hello"`},
		{"bad-two-documents.yaml", `line 5: a second YAML document starts here; the config file must hold exactly one`},
		{"bad-syntax.yaml", `line 4: invalid YAML: mapping values are not allowed in this context`},
		{"bad-duplicate-key.yaml", `line 5: listeners[0] (public): duplicate key "listen" (first at line 3)`},

		// Listeners.
		{"bad-listen-no-port.yaml", `line 3: listeners[0] (public): listen: invalid address "198.19.0.1": missing port`},
		{"bad-listen-hostname.yaml", `line 3: listeners[0] (public): listen: invalid address "ftp.example.net:21": host must be an IP address (0.0.0.0 or [::] for all addresses)`},
		{"bad-listen-ipv6-brackets.yaml", `line 3: listeners[0] (public): listen: invalid address "2001:db8::1:21": write an IPv6 address in brackets, as in "[2001:db8::1]:21"`},
		{"bad-listen-port.yaml", `line 3: listeners[0] (public): listen: invalid address "198.19.0.1:0": port must be a number from 1 to 65535`},
		{"bad-listen-missing.yaml", `line 2: listeners[0] (public): listen: required`},
		{"bad-name-missing.yaml", `line 2: listeners[0]: name: required`},
		{"bad-name-chars.yaml", `line 2: listeners[0] ("Public FTP"): name: "Public FTP" may contain only a-z, 0-9, "_" and "-"`},
		{"bad-duplicate-name.yaml", `line 5: listeners[1] (public): name: "public" is already used by listeners[0]`},
		{"bad-duplicate-listen.yaml", `line 6: listeners[1] (other): listen: 198.19.0.1:21 is already used by listeners[0] (public)`},
		{"bad-listen-wildcard.yaml", `line 6: listeners[1] (all): listen: 0.0.0.0:21 overlaps 198.19.0.1:21 of listeners[0] (public)`},
		{"bad-transparent-upstream.yaml", `line 5: listeners[0] (edge): upstream: not allowed in transparent mode: each session goes to its original destination`},
		{"bad-allow-destinations.yaml", `line 5: listeners[0] (edge): allow_destinations[1]: invalid CIDR "198.19.0.300/32"`},
		{"bad-forward-no-allow.yaml", `line 2: listeners[0] (proxy): allow_destinations: required in forward mode: the networks clients may reach (without it ftpgate would relay to any host)`},
		{"bad-allow-ports.yaml", `2 problems:
line 6: listeners[0] (edge): allow_ports[1]: parsing port range "2121-2120": first port 2121 above last port 2120: value out of range
line 6: listeners[0] (edge): allow_ports[2]: parsing port range "smtp": first port is not a decimal number: syntax error`},
		{"bad-intercept.yaml", `line 5: listeners[0] (edge): intercept: unknown value "divert"; use "redirect" or "tproxy"`},
		{"bad-reverse-allow.yaml", `line 5: listeners[0] (public): allow_destinations: only for transparent and forward modes; a reverse listener connects to its upstream`},
		{"bad-mode-unknown.yaml", `line 4: listeners[0] (public): mode: unknown value "revers"; use "reverse", "transparent" or "forward"`},
		{"bad-upstream-missing.yaml", `line 2: listeners[0] (public): upstream: required in reverse mode (or upstreams, a list)`},
		{"bad-upstream-port.yaml", `line 4: listeners[0] (public): upstream: invalid address "ftp.example.net:65536": port must be a number from 1 to 65535`},
		{"bad-upstream-host.yaml", `line 4: listeners[0] (public): upstream: invalid address "198.18.1.256:21": host is neither an IP address nor a DNS name`},
		{"bad-extra-verbs.yaml", `2 problems:
line 5: listeners[0] (public): extra_verbs[1]: "P@SW": a verb is 1 to 16 letters
line 5: listeners[0] (public): extra_verbs[2]: "pasv" is a verb ftpgate knows already`},
		{"bad-access-controls.yaml", `3 problems:
line 6: listeners[0] (public): allow_clients[1]: invalid CIDR "10.0.0.300/8"
line 8: listeners[0] (public): deny_commands[2]: "FROBNICATE" is not a verb ftpgate knows or forwards (extra_verbs)
line 8: listeners[0] (public): deny_commands[3]: QUIT cannot be denied: a client must be able to leave`},
		{"bad-proxy-protocol.yaml", `line 5: listeners[0] (public): trusted_proxies: required with proxy_protocol: the load balancers whose headers to believe`},
		{"bad-advertise-ports.yaml", `line 5: listeners[0] (public): data.advertise_ports: 30000-30004 has 5 ports, client_ports 40000-40009 has 10: they map port for port`},
		{"bad-source-check.yaml", `line 5: listeners[0] (public): data.source_check: "trusted" needs trusted_proxies: the sources to accept`},
		{"bad-server-commands.yaml", `line 5: listeners[0] (public): data.server_commands: "classic" needs an IPv4 server: PASV and PORT carry IPv4 addresses only`},
		{"bad-kernel-no-firewall.yaml", `line 5: listeners[0] (public): data.path: "kernel" needs a firewall backend other than "none": its data connections cross only through pinholes`},
		{"bad-path-kernel.yaml", `line 7: listeners[0] (public): data.server_mode: "passive" needs path "relay": the kernel path cannot convert modes; use "same"`},
		{"bad-server-mode.yaml", `line 6: listeners[0] (public): data.server_mode: unknown value "pasv"; use "same", "passive" or "active"`},
		{"bad-client-address-ipv6.yaml", `line 6: listeners[0] (public): data.client_address: 2001:db8::1 is not an IPv4 address; 227 replies carry IPv4 only`},
		{"bad-client-address-invalid.yaml", `line 6: listeners[0] (public): data.client_address: "ftp example net" is neither an IPv4 address nor a DNS name`},
		{"bad-server-address-unspecified.yaml", `line 6: listeners[0] (public): data.server_address: 0.0.0.0 is unspecified; write the address the server should connect to`},
		{"bad-server-address-family.yaml", `line 6: listeners[0] (public): data.server_address: 2001:db8:1::1 and upstream 198.18.1.2 are of different IP versions`},
		{"bad-client-ports-syntax.yaml", `line 6: listeners[0] (public): data.client_ports: parsing port range "40999-40000": first port 40999 above last port 40000: value out of range`},
		{"bad-server-ports-low.yaml", `line 6: listeners[0] (public): data.server_ports: 1000-2000 starts below port 1024`},
		{"bad-client-ports-overlap.yaml", `line 12: listeners[1] (other): data.client_ports: 40500-41499 on 203.0.113.7 overlaps data.client_ports 40000-40999 on 203.0.113.7 of listeners[0] (public)`},
		{"bad-client-ports-overlap-listen.yaml", `line 10: listeners[1] (other): data.client_ports: 40000-40999 on 198.19.0.1 overlaps data.client_ports 40000-40999 on 198.19.0.1 of listeners[0] (public)`},
		{"bad-server-ports-overlap.yaml", `line 13: listeners[1] (other): data.server_ports: 50999-51999 on 198.18.1.1 overlaps data.server_ports 50000-50999 on 198.18.1.1 of listeners[0] (public)`},
		// Without server_address the server ports may be on any local
		// address: they overlap whatever is set.
		{"bad-server-ports-overlap-unset.yaml", `line 10: listeners[1] (other): data.server_ports: 50999-51999 on any local address (no server_address) overlaps data.server_ports 50000-50999 on any local address (no server_address) of listeners[0] (public)`},
		{"bad-client-server-overlap.yaml", `line 9: listeners[0] (public): data.server_ports: 40900-41999 on 198.19.0.1 overlaps data.client_ports 40000-40999 on 198.19.0.1 of the same listener`},

		// Limits and log.
		{"bad-max-sessions.yaml", `line 6: limits.max_sessions: must be at least 1, got 0`},
		{"bad-max-sessions-per-client.yaml", `line 7: limits.max_sessions_per_client: must be at most limits.max_sessions (10), got 64`},
		{"bad-idle-timeout.yaml", `line 6: limits.idle_timeout: must be positive, got 0s`},
		{"bad-data-idle-timeout.yaml", `line 6: limits.data_idle_timeout: must not be negative (0 turns it off), got -1s`},
		{"bad-data-timeout.yaml", `line 6: limits.data_timeout: must be positive, got -30s`},
		{"bad-limits-clients.yaml", `3 problems:
line 6: limits.login_timeout: must be positive, got 0s
line 7: limits.client_ipv6_prefix: must be from 1 to 128, got 129
line 8: limits.client_port_share: must be from 1 to 100 (percent), got 0`},
		{"bad-max-line-bytes.yaml", `line 6: limits.max_line_bytes: must be from 512 to 1048576, got 100`},
		{"bad-log-level.yaml", `line 6: log.level: unknown value "verbose"; use "debug", "info", "warn" or "error"`},
		{"bad-log-format.yaml", `line 6: log.format: unknown value "xml"; use "text" or "json"`},
		{"bad-upstreams-both.yaml", `line 5: listeners[0] (public): upstreams: upstream and upstreams both set; write the list in upstreams alone`},
		{"bad-upstreams.yaml", `3 problems:
line 4: listeners[0] (public): upstreams[1]: [2001:db8:1::2]:21 is IPv6, the first upstream IPv4; list servers of one IP version
line 4: listeners[0] (public): upstreams[2]: 198.18.1.2:21 is listed twice
line 5: listeners[0] (public): upstream_policy: unknown value "random"; use "in_order" or "round_robin"`},
		{"bad-upstream-proxy-protocol.yaml", `line 5: listeners[0] (public): upstream_proxy_protocol: unknown value "v3"; use "v1" or "v2" (or leave it out)`},
		{"bad-rate-limit.yaml", `3 problems:
line 5: listeners[0] (public): rate_limit.session: invalid rate "10 parsecs": write bytes per second, e.g. 10MB or 512KiB
line 5: listeners[0] (public): rate_limit.listener: not with data.path kernel: the kernel forwards the data, ftpgate cannot pace it
line 8: limits.login_ban: must be positive, got 0s`},
		{"bad-log-xferlog.yaml", `line 6: log.xferlog: "var/log/xferlog" must be an absolute path`},
		{"bad-firewall-backend.yaml", `line 6: firewall.backend: unknown value "pf"; use "auto", "netlink", "iptables", "nftables" or "none"`},
		{"bad-firewall-nftables.yaml", `4 problems:
line 8: firewall.nftables.table: "bridge filter": family "bridge" is not inet, ip or ip6
line 9: firewall.nftables.attach: unknown value "anchor"; use "chain" or "sets"
line 10: firewall.nftables.chains[1]: "in put" is not an nft name (a letter or "_", then letters, digits, "_", "." or "-", at most 64)
line 10: firewall.nftables.chains[2]: "input" is listed twice`},
		{"bad-firewall-nftables-sets.yaml", `2 problems:
line 8: firewall.nftables.table: "filter": want "FAMILY NAME", e.g. "inet filter"
line 10: firewall.nftables.chains: must be empty with attach "sets": ftpgate touches no chain, the operator's rules match its sets`},
		{"bad-firewall-prefix.yaml", `line 6: firewall.chain_prefix: "FTP GATE" must be 1 to 16 letters, digits, "_" or "-"`},
		{"bad-firewall-ttl.yaml", `line 6: firewall.pinhole_ttl: must be positive, got -1s`},
		{"bad-firewall-variant.yaml", `line 6: firewall.variant: unknown value "xt"; use "auto", "nft" or "legacy"`},

		// Several problems at once (see also TestAllProblemsAtOnce).
		{"bad-many-keys.yaml", `4 problems:
line 6: listeners[0] (public): unknown key "upstraem"
line 8: limits.max_sessions: want an integer, got "lots"
line 9: limits.idle_timeout: invalid duration 15: write a number with a unit, such as "30s" or "15m"
line 10: unknown key "logging"`},
		{"bad-many.yaml", `9 problems:
line 4: listeners[0] (public): listen: invalid address "198.19.0.1": missing port
line 7: listeners[0] (public): data.server_mode: unknown value "pasv"; use "same", "passive" or "active"
line 8: listeners[1] (public): upstream: required in reverse mode (or upstreams, a list)
line 8: listeners[1] (public): name: "public" is already used by listeners[0]
line 12: listeners[1] (public): data.server_mode: "active" needs path "relay": the kernel path cannot convert modes; use "same"
line 13: listeners[1] (public): data.client_ports: 80-90 starts below port 1024
line 16: limits.max_sessions: must be at least 1, got 0
line 17: limits.idle_timeout: must be positive, got 0s
line 19: log.level: unknown value "verbose"; use "debug", "info", "warn" or "error"`},
	}

	listed := map[string]bool{}
	for _, tt := range tests {
		listed[tt.file] = true
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			cfg, err := Load(path)
			if err == nil {
				t.Fatalf("Load(%s) succeeded: %s", path, cfg.Summary())
			}
			if got, want := err.Error(), path+": "+tt.want; got != want {
				t.Errorf("Load(%s) error:\n got %s\nwant %s", path, got, want)
			}
		})
	}
	files, err := filepath.Glob("testdata/bad-*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !listed[filepath.Base(f)] {
			t.Errorf("%s has no expected error in TestLoadBad", f)
		}
	}
}

// TestAllProblemsAtOnce checks that Validate reports each problem as its own
// error, joined, rather than stopping at the first.
func TestAllProblemsAtOnce(t *testing.T) {
	data, err := os.ReadFile("testdata/bad-many.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Parse(data)
	if err == nil {
		t.Fatal("Parse(bad-many.yaml) succeeded")
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("Parse error %T is not a joined error: %v", err, err)
	}
	var got []string
	for _, e := range joined.Unwrap() {
		got = append(got, e.Error())
	}
	want := []string{
		`line 4: listeners[0] (public): listen: invalid address "198.19.0.1": missing port`,
		`line 7: listeners[0] (public): data.server_mode: unknown value "pasv"; use "same", "passive" or "active"`,
		`line 8: listeners[1] (public): upstream: required in reverse mode (or upstreams, a list)`,
		`line 8: listeners[1] (public): name: "public" is already used by listeners[0]`,
		`line 12: listeners[1] (public): data.server_mode: "active" needs path "relay": the kernel path cannot convert modes; use "same"`,
		`line 13: listeners[1] (public): data.client_ports: 80-90 starts below port 1024`,
		`line 16: limits.max_sessions: must be at least 1, got 0`,
		`line 17: limits.idle_timeout: must be positive, got 0s`,
		`line 19: log.level: unknown value "verbose"; use "debug", "info", "warn" or "error"`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("problems:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
}

// TestValidateRequiresDefaults checks that Validate, unlike Parse, fills in
// nothing: a Config built in Go must set every field that has a default.
func TestValidateRequiresDefaults(t *testing.T) {
	c := Default()
	c.Listeners = []Listener{{Name: "a", Listen: "198.19.0.1:21", Upstream: "198.18.1.2:21"}}
	err := c.Validate()
	want := `listeners[0] (a): mode: required
listeners[0] (a): tls.mode: required
listeners[0] (a): tls.session_reuse: required
listeners[0] (a): tls.min_version: required
listeners[0] (a): upstream_tls.mode: required
listeners[0] (a): upstream_tls.min_version: required
listeners[0] (a): upstream_policy: required
listeners[0] (a): data.path: required
listeners[0] (a): data.server_mode: required
listeners[0] (a): data.server_commands: required
listeners[0] (a): data.source_check: required
listeners[0] (a): data.client_ports: required
listeners[0] (a): data.server_ports: required`
	if err == nil || err.Error() != want {
		t.Errorf("Validate() = %v, want:\n%s", err, want)
	}

	c.Listeners[0].applyDefaults()
	if err := c.Validate(); err != nil {
		t.Errorf("Validate() after applyDefaults = %v", err)
	}
}

func TestValidateAddresses(t *testing.T) {
	tests := []struct {
		listen, upstream string
		wantErr          string // "" for valid
	}{
		{"0.0.0.0:21", "ftp.example.net:21", ""},
		{"[::]:21", "ftp.example.net.:21", ""},
		{"[fe80::1%eth0]:2121", "localhost:21", ""},
		{"198.19.0.1:21", "_ftp.example-1.net:65535", ""},
		{"198.19.0.1:21", "ftp.example.net", `upstream: invalid address "ftp.example.net": missing port`},
		{"198.19.0.1:21", "-ftp.example.net:21", `upstream: invalid address "-ftp.example.net:21": host is neither an IP address nor a DNS name`},
		{"198.19.0.1:21", "ftp..example.net:21", `upstream: invalid address "ftp..example.net:21": host is neither an IP address nor a DNS name`},
		{"198.19.0.1:21", "0.0.0.0:21", `upstream: invalid address "0.0.0.0:21": host must not be an unspecified address`},
		{"198.19.0.1:21", "ftp.example.net:ftp", `upstream: invalid address "ftp.example.net:ftp": port must be a number from 1 to 65535`},
		{"[198.19.0.1:21", "ftp.example.net:21", `listen: invalid address "[198.19.0.1:21": missing ']'`},
		{":21", "ftp.example.net:21", `listen: invalid address ":21": host must be an IP address (0.0.0.0 or [::] for all addresses)`},
	}
	for _, tt := range tests {
		c := Default()
		c.Listeners = []Listener{{Name: "a", Listen: tt.listen, Upstream: tt.upstream}}
		c.Listeners[0].applyDefaults()
		err := c.Validate()
		want := ""
		if tt.wantErr != "" {
			want = "listeners[0] (a): " + tt.wantErr
		}
		if got := errString(err); got != want {
			t.Errorf("listen %q upstream %q: error %q, want %q", tt.listen, tt.upstream, got, want)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestSummary(t *testing.T) {
	cfg, err := Load("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := "4 listeners: " +
		"public 198.19.0.1:21 -> 198.18.1.2:21 (relay, server_mode same); " +
		"passive_only 198.19.0.1:2121 -> ftp.example.net:21 (relay, server_mode passive); " +
		"active-v6 [2001:db8::1]:21 -> [2001:db8:1::2]:21 (relay, server_mode active); " +
		"edge 198.18.1.1:2121 -> original destination (redirect) (kernel, server_mode same); " +
		"limits max_sessions=500 max_sessions_per_client=8 idle_timeout=1h0m0s data_timeout=45s drain_timeout=30s max_line_bytes=1024; " +
		"log level=debug format=json; firewall iptables (legacy) chains FG_1-* pinhole_ttl=10s"
	if got := cfg.Summary(); got != want {
		t.Errorf("Summary():\n got %s\nwant %s", got, want)
	}

	cfg.Listeners = cfg.Listeners[:1]
	if got := cfg.Summary(); !strings.HasPrefix(got, "1 listener: public ") {
		t.Errorf("Summary() of one listener = %s", got)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("testdata/does-not-exist.yaml")
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load(missing) = %v, want an os.ErrNotExist", err)
	}
	if !strings.Contains(err.Error(), "testdata/does-not-exist.yaml") {
		t.Errorf("Load(missing) = %v, want the file named", err)
	}
}

// TestExampleConfig keeps deploy/config.example.yaml loadable.
func TestExampleConfig(t *testing.T) {
	cfg, err := Load("../../../deploy/config.example.yaml")
	if err != nil {
		t.Fatalf("Load(config.example.yaml): %v", err)
	}
	if len(cfg.Listeners) == 0 {
		t.Error("config.example.yaml has no listeners")
	}
}

func TestParseByteRate(t *testing.T) {
	for in, want := range map[string]int64{
		"10MB": 10_000_000, "512KiB": 512 << 10, "512 kib/s": 512 << 10, "1.5GB": 1_500_000_000,
		"2000000": 2_000_000, "1GiB/s": 1 << 30, "": -1, "fast": -1, "10 MB per second": -1,
		"100": -1, "NaN": -1, "-5MB": -1, "2TB": -1,
	} {
		got, err := ParseByteRate(in)
		if want < 0 && err == nil || want >= 0 && (err != nil || got != want) {
			t.Errorf("ParseByteRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

func TestNftablesSection(t *testing.T) {
	const head = "listeners:\n  - name: public\n    listen: 198.19.0.1:21\n    upstream: 198.18.1.2:21\nfirewall:\n  backend: nftables\n"
	for _, tc := range []struct {
		yaml    string
		want    Nftables
		chains  []string
		summary string
	}{
		{"", Nftables{Table: "inet filter", Attach: "chain"}, []string{"input", "forward"},
			"firewall nftables (table inet filter, attach chain from input, forward) prefix FTPGATE pinhole_ttl=30s"},
		{"  nftables: {table: ip6 fw, chains: [in6]}\n", Nftables{Table: "ip6 fw", Attach: "chain", Chains: []string{"in6"}}, []string{"in6"},
			"firewall nftables (table ip6 fw, attach chain from in6) prefix FTPGATE pinhole_ttl=30s"},
		{"  nftables: {table: inet firewalld, attach: sets}\n", Nftables{Table: "inet firewalld", Attach: "sets"}, nil,
			"firewall nftables (table inet firewalld, attach sets) prefix FTPGATE pinhole_ttl=30s"},
	} {
		cfg, err := Parse([]byte(head + tc.yaml))
		if err != nil {
			t.Errorf("%q: %v", tc.yaml, err)
			continue
		}
		if got := cfg.Firewall.Nftables; !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: nftables %+v, want %+v", tc.yaml, got, tc.want)
		}
		if got := cfg.Firewall.Nftables.EffectiveChains(); !reflect.DeepEqual(got, tc.chains) {
			t.Errorf("%q: EffectiveChains %q, want %q", tc.yaml, got, tc.chains)
		}
		if got := cfg.Summary(); !strings.HasSuffix(got, tc.summary) {
			t.Errorf("%q: Summary %q, want it to end with %q", tc.yaml, got, tc.summary)
		}
	}
}
