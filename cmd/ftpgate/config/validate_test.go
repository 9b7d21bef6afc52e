package config

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/ftpgate/ftpgate/nat"
)

// manyListeners returns a valid configuration of n listeners (n < 65536),
// each on its own address: 10.0.x.y:21, with the default client ports on
// it, and the default server ports on 10.128.x.y.
func manyListeners(n int) Config {
	c := Default()
	c.Listeners = make([]Listener, n)
	for i := range c.Listeners {
		l := &c.Listeners[i]
		l.Name = fmt.Sprintf("l%d", i)
		l.Listen = fmt.Sprintf("10.0.%d.%d:21", i>>8, i&0xff)
		l.Upstream = "192.0.2.1:21"
		l.Data.ServerAddress = fmt.Sprintf("10.128.%d.%d", i>>8, i&0xff)
		l.applyDefaults()
	}
	return c
}

// problemsOf returns Validate's problems as strings.
func problemsOf(t *testing.T, c *Config) []string {
	t.Helper()
	err := c.Validate()
	if err == nil {
		return nil
	}
	var list []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		list = append(list, e.Error())
	}
	return list
}

// TestValidateManyListeners checks Validate's problems across 5,000
// listeners: each conflict is reported once, on the later listener, rather
// than once per pair (12.5 million for the ports below).
func TestValidateManyListeners(t *testing.T) {
	const n = 5000
	c := manyListeners(n)
	if got := problemsOf(t, &c); got != nil {
		t.Fatalf("valid: %d problems, first %s", len(got), got[0])
	}
	for i, l := range c.Listeners {
		if l.Parsed.ServerPorts.Len() != 1000 || l.Parsed.Listen.Port() != 21 {
			t.Fatalf("listeners[%d].Parsed = %+v, not filled", i, l.Parsed)
		}
	}

	// Without server_address, every server range may be on any IPv4
	// address: each overlaps all the others.
	c = manyListeners(n)
	for i := range c.Listeners {
		c.Listeners[i].Data.ServerAddress = ""
	}
	got := problemsOf(t, &c)
	if len(got) != n-1 {
		t.Fatalf("shared server ports: %d problems, want %d", len(got), n-1)
	}
	for i, p := range got {
		want := fmt.Sprintf("listeners[%d] (l%d): data.server_ports: 50000-50999 on any local address (no server_address) overlaps data.server_ports 50000-50999 on any local address (no server_address) of listeners[0] (l0)", i+1, i+1)
		if p != want {
			t.Fatalf("problem %d:\n got %s\nwant %s", i, p, want)
		}
	}

	// Every odd listener copies the name and address of the one before:
	// a name, an address and a client range taken, for each.
	c = manyListeners(n)
	for i := 1; i < n; i += 2 {
		c.Listeners[i].Name, c.Listeners[i].Listen = c.Listeners[i-1].Name, c.Listeners[i-1].Listen
	}
	got = problemsOf(t, &c)
	if len(got) != 3*n/2 {
		t.Fatalf("copied listeners: %d problems, want %d", len(got), 3*n/2)
	}
	count := map[string]int{}
	for _, p := range got {
		switch {
		case strings.Contains(p, ": name: "):
			count["name"]++
		case strings.Contains(p, ": listen: ") && strings.Contains(p, " is already used by "):
			count["listen"]++
		case strings.Contains(p, ": data.client_ports: "):
			count["client_ports"]++
		default:
			t.Errorf("unexpected problem %s", p)
		}
	}
	if count["name"] != n/2 || count["listen"] != n/2 || count["client_ports"] != n/2 {
		t.Errorf("copied listeners: problems %v, want %d of each", count, n/2)
	}

	// One wildcard listener at the end overlaps all 5,000: one problem,
	// naming the first.
	c = manyListeners(n)
	w := manyListeners(1).Listeners[0]
	w.Name, w.Listen, w.Data.ClientAddress, w.Data.ServerAddress = "all", "0.0.0.0:21", "192.0.2.9", "192.0.2.9"
	c.Listeners = append(c.Listeners, w)
	got = problemsOf(t, &c)
	want := fmt.Sprintf("listeners[%d] (all): listen: 0.0.0.0:21 overlaps 10.0.0.0:21 of listeners[0] (l0)", n)
	if len(got) != 1 || got[0] != want {
		t.Errorf("wildcard: problems %.3q, want [%s]", got, want)
	}
}

// TestListenConflicts checks which listen addresses collide: the same, or
// one a wildcard covers on the same port (0.0.0.0 covers IPv4, [::] both).
func TestListenConflicts(t *testing.T) {
	tests := []struct {
		listens []string
		want    string // the problem of the last listener, "" for none
	}{
		{[]string{"10.0.0.1:21", "10.0.0.1:21"}, "10.0.0.1:21 is already used by listeners[0] (l0)"},
		{[]string{"10.0.0.1:21", "10.0.0.1:2121"}, ""},
		{[]string{"10.0.0.1:21", "10.0.0.2:21"}, ""},
		{[]string{"10.0.0.1:21", "10.0.0.2:21", "0.0.0.0:21"}, "0.0.0.0:21 overlaps 10.0.0.1:21 of listeners[0] (l0)"},
		{[]string{"0.0.0.0:21", "10.0.0.1:21"}, "10.0.0.1:21 overlaps 0.0.0.0:21 of listeners[0] (l0)"},
		{[]string{"[2001:db8::1]:21", "0.0.0.0:21"}, ""},
		{[]string{"0.0.0.0:21", "[2001:db8::1]:21"}, ""},
		{[]string{"[::]:21", "0.0.0.0:21"}, "0.0.0.0:21 overlaps [::]:21 of listeners[0] (l0)"},
		{[]string{"0.0.0.0:21", "[::]:21"}, "[::]:21 overlaps 0.0.0.0:21 of listeners[0] (l0)"},
		{[]string{"10.0.0.1:21", "[::]:21"}, "[::]:21 overlaps 10.0.0.1:21 of listeners[0] (l0)"},
		{[]string{"[2001:db8::1]:21", "[::]:21"}, "[::]:21 overlaps [2001:db8::1]:21 of listeners[0] (l0)"},
		{[]string{"[::]:21", "[2001:db8::1]:21"}, "[2001:db8::1]:21 overlaps [::]:21 of listeners[0] (l0)"},
		{[]string{"[::]:21", "10.0.0.1:21"}, "10.0.0.1:21 overlaps [::]:21 of listeners[0] (l0)"},
		{[]string{"[::ffff:10.0.0.1]:21", "10.0.0.1:21"}, "10.0.0.1:21 is already used by listeners[0] (l0)"},
		{[]string{"[fe80::1%eth0]:21", "[fe80::1%eth1]:21"}, ""},
		{[]string{"10.0.0.1:2121", "10.0.0.2:21", "[::]:21"}, "[::]:21 overlaps 10.0.0.2:21 of listeners[1] (l1)"},
	}
	for _, tt := range tests {
		c := Default()
		for i, ap := range tt.listens {
			l := Listener{Name: fmt.Sprintf("l%d", i), Listen: ap, Upstream: "192.0.2.1:21"}
			// Data ports apart, so that only the listen addresses collide.
			l.Data.ClientPorts = fmt.Sprintf("%d-%d", 40000+100*i, 40099+100*i)
			l.Data.ServerPorts = fmt.Sprintf("%d-%d", 50000+100*i, 50099+100*i)
			l.applyDefaults()
			c.Listeners = append(c.Listeners, l)
		}
		var want []string
		if tt.want != "" {
			last := len(tt.listens) - 1
			want = []string{fmt.Sprintf("listeners[%d] (l%d): listen: %s", last, last, tt.want)}
		}
		if got := problemsOf(t, &c); !reflect.DeepEqual(got, want) {
			t.Errorf("listen %v: problems %q, want %q", tt.listens, got, want)
		}
	}
}

// TestPortPoolOverlaps checks checkPortPools' sweep on small cases: which
// ranges meet, and which listener each problem is on.
func TestPortPoolOverlaps(t *testing.T) {
	type lst struct{ listen, clientAddr, client, serverAddr, server string }
	tests := []struct {
		name      string
		listeners []lst
		want      []string
	}{
		{"disjoint on one address", []lst{
			{"10.0.0.1:21", "", "40000-40999", "10.0.0.1", "41000-41999"},
			{"10.0.0.1:2121", "", "42000-42999", "10.0.0.1", "43000-43999"},
		}, nil},
		{"touching on one address", []lst{
			{"10.0.0.1:21", "", "40000-40999", "10.0.0.2", "50000-50999"},
			{"10.0.0.1:2121", "", "40999-41999", "10.0.0.3", "50000-50999"},
		}, []string{"listeners[1] (l1): data.client_ports: 40999-41999 on 10.0.0.1 overlaps data.client_ports 40000-40999 on 10.0.0.1 of listeners[0] (l0)"}},
		{"a wide range before, a later one after a gap", []lst{
			{"10.0.0.1:21", "", "40000-49999", "10.0.0.2", "50000-50999"},
			{"10.0.0.1:2121", "", "41000-41099", "10.0.0.3", "50000-50999"},
			{"10.0.0.1:2122", "", "45000-45099", "10.0.0.4", "50000-50999"},
		}, []string{
			"listeners[1] (l1): data.client_ports: 41000-41099 on 10.0.0.1 overlaps data.client_ports 40000-49999 on 10.0.0.1 of listeners[0] (l0)",
			"listeners[2] (l2): data.client_ports: 45000-45099 on 10.0.0.1 overlaps data.client_ports 40000-49999 on 10.0.0.1 of listeners[0] (l0)",
		}},
		{"the later listener starts first", []lst{
			{"10.0.0.1:21", "", "41000-41999", "10.0.0.2", "50000-50999"},
			{"10.0.0.1:2121", "", "40000-41000", "10.0.0.3", "50000-50999"},
		}, []string{"listeners[1] (l1): data.client_ports: 40000-41000 on 10.0.0.1 overlaps data.client_ports 41000-41999 on 10.0.0.1 of listeners[0] (l0)"}},
		{"different addresses", []lst{
			{"10.0.0.1:21", "", "40000-40999", "10.0.0.3", "50000-50999"},
			{"10.0.0.2:21", "", "40000-40999", "10.0.0.4", "50000-50999"},
		}, nil},
		{"wildcard listen covers IPv4", []lst{
			{"10.0.0.1:21", "", "40000-40999", "10.0.0.3", "50000-50999"},
			{"0.0.0.0:2121", "", "40500-40599", "10.0.0.4", "50000-50999"},
		}, []string{"listeners[1] (l1): data.client_ports: 40500-40599 on 0.0.0.0 overlaps data.client_ports 40000-40999 on 10.0.0.1 of listeners[0] (l0)"}},
		{"IPv4 wildcard misses IPv6", []lst{
			{"[2001:db8::1]:21", "", "40000-40999", "2001:db8::3", "50000-50999"},
			{"0.0.0.0:2121", "", "40000-40999", "10.0.0.4", "50000-50999"},
		}, nil},
		{"IPv6 wildcard covers both", []lst{
			{"10.0.0.1:21", "", "40000-40999", "10.0.0.3", "50000-50999"},
			{"[::]:2121", "", "40000-40999", "2001:db8::4", "51000-51999"},
		}, []string{"listeners[1] (l1): data.client_ports: 40000-40999 on :: overlaps data.client_ports 40000-40999 on 10.0.0.1 of listeners[0] (l0)"}},
		{"no server_address: any address of the upstream's family", []lst{
			{"10.0.0.1:21", "", "40000-40999", "", "50000-50999"},
			{"10.0.0.2:21", "", "50500-50599", "10.0.0.9", "51000-51999"},
		}, []string{"listeners[1] (l1): data.client_ports: 50500-50599 on 10.0.0.2 overlaps data.server_ports 50000-50999 on any local address (no server_address) of listeners[0] (l0)"}},
		{"client and server ranges of one listener", []lst{
			{"10.0.0.1:21", "", "40000-40999", "10.0.0.1", "40999-41999"},
		}, []string{"listeners[0] (l0): data.server_ports: 40999-41999 on 10.0.0.1 overlaps data.client_ports 40000-40999 on 10.0.0.1 of the same listener"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			for i, l := range tt.listeners {
				lc := Listener{Name: fmt.Sprintf("l%d", i), Listen: l.listen, Upstream: "192.0.2.1:21",
					Data: Data{ClientAddress: l.clientAddr, ClientPorts: l.client, ServerAddress: l.serverAddr, ServerPorts: l.server}}
				if strings.Contains(l.serverAddr, ":") {
					lc.Upstream = "[2001:db8::9]:21"
				}
				lc.applyDefaults()
				c.Listeners = append(c.Listeners, lc)
			}
			if got := problemsOf(t, &c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("problems:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// BenchmarkValidate validates 100, 1,000 and 10,000 listeners: the time per
// listener should stay about the same (n·log n at worst).
func BenchmarkValidate(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("listeners=%d", n), func(b *testing.B) {
			c := manyListeners(n)
			for b.Loop() {
				if err := c.Validate(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestParsedValues checks the values Validate parses for the daemon.
func TestParsedValues(t *testing.T) {
	cfg, err := Parse([]byte(`listeners:
  - name: lb
    listen: "[::ffff:198.19.0.1]:21"
    upstreams: [198.18.1.2:21, ftp.example.net:21]
    proxy_protocol: true
    trusted_proxies: [10.1.2.3/8]
    allow_clients: [198.51.100.7/24, "2001:db8::1/32"]
    rate_limit: {session: 10MB, listener: 1GiB/s}
    data:
      client_address: ftp.example.org
      client_ports: 40000-40009
      advertise_ports: 30000-30009
      server_address: "::ffff:198.18.1.1"
  - name: fwd
    listen: 198.19.0.2:2121
    mode: forward
    allow_destinations: [198.18.0.0/16]
    allow_ports: ["21", 2121-2130]
    data:
      client_address: "::ffff:198.19.0.9"
      server_ports: 51000-51999
`))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := []ListenerValues{{
		Listen:            netip.MustParseAddrPort("198.19.0.1:21"),
		ClientAddressName: "ftp.example.org",
		ClientPorts:       nat.PortRange{First: 40000, Last: 40009},
		ServerPorts:       nat.PortRange{First: 50000, Last: 50999},
		AdvertisePorts:    nat.PortRange{First: 30000, Last: 30009},
		ServerAddress:     netip.MustParseAddr("198.18.1.1"),
		AllowClients:      []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8::/32")},
		TrustedProxies:    []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		SessionRate:       10_000_000,
		ListenerRate:      1 << 30,
	}, {
		Listen:            netip.MustParseAddrPort("198.19.0.2:2121"),
		ClientAddress:     netip.MustParseAddr("198.19.0.9"),
		ClientPorts:       nat.PortRange{First: 40000, Last: 40999},
		ServerPorts:       nat.PortRange{First: 51000, Last: 51999},
		AllowDestinations: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/16")},
		AllowPorts:        []nat.PortRange{{First: 21, Last: 21}, {First: 2121, Last: 2130}},
	}}
	for i, w := range want {
		if got := cfg.Listeners[i].Parsed; !reflect.DeepEqual(got, w) {
			t.Errorf("listeners[%d].Parsed:\n got %+v\nwant %+v", i, got, w)
		}
	}

	// Validate parses again what changed, and leaves zero what is wrong.
	l := &cfg.Listeners[1]
	l.Listen, l.Data.ClientPorts = "198.19.0.3:990", "80-90"
	if err := cfg.Validate(); err == nil {
		t.Fatal("Validate with client_ports 80-90 succeeded")
	}
	if l.Parsed.Listen != netip.MustParseAddrPort("198.19.0.3:990") || l.Parsed.ClientPorts != (nat.PortRange{}) {
		t.Errorf("after Validate: Listen %v, ClientPorts %v; want 198.19.0.3:990 and zero", l.Parsed.Listen, l.Parsed.ClientPorts)
	}
}
