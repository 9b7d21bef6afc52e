package rules

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// Test addresses come from 198.18.0.0/15 and 2001:db8::/32 only.
var (
	from4 = netip.MustParseAddr("198.19.0.2")
	to4   = netip.MustParseAddrPort("198.19.0.1:40001")
	dnat4 = netip.MustParseAddrPort("198.18.0.5:30000")
	snat4 = netip.MustParseAddr("198.18.0.1")
	from6 = netip.MustParseAddr("2001:db8:1::2")
	to6   = netip.MustParseAddrPort("[2001:db8:1::1]:40001")
	dnat6 = netip.MustParseAddrPort("[2001:db8:2::5]:30000")
	snat6 = netip.MustParseAddr("2001:db8:2::1")
)

func TestDeliveryString(t *testing.T) {
	for d, want := range map[Delivery]string{
		AcceptLocal:   "accept-local",
		AcceptForward: "accept-forward",
		Redirect:      "redirect",
		DNAT:          "dnat",
		Delivery(7):   "Delivery(7)",
	} {
		if got := d.String(); got != want {
			t.Errorf("Delivery(%d).String() = %q, want %q", int(d), got, want)
		}
	}
}

func TestPinholeString(t *testing.T) {
	for _, tt := range []struct {
		p    Pinhole
		want string
	}{
		{Pinhole{Session: 12, Seq: 3, From: from4, To: to4}, "s=12 p=3 198.19.0.2 -> 198.19.0.1:40001 accept-local"},
		{Pinhole{Session: 1, Seq: 2, From: from4, To: to4, Deliver: AcceptForward}, "s=1 p=2 198.19.0.2 -> 198.19.0.1:40001 accept-forward"},
		{Pinhole{Session: 1, Seq: 2, From: from4, To: to4, Deliver: Redirect, RedirectPort: 2121}, "s=1 p=2 198.19.0.2 -> 198.19.0.1:40001 redirect :2121"},
		{Pinhole{Session: 1, Seq: 2, From: from4, To: to4, Deliver: DNAT, DNATTo: dnat4}, "s=1 p=2 198.19.0.2 -> 198.19.0.1:40001 dnat 198.18.0.5:30000"},
		{Pinhole{Session: 1, Seq: 2, From: from6, To: to6, Deliver: DNAT, DNATTo: dnat6, SNATTo: snat6}, "s=1 p=2 2001:db8:1::2 -> [2001:db8:1::1]:40001 dnat [2001:db8:2::5]:30000 snat 2001:db8:2::1"},
	} {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	mapped := func(a netip.Addr) netip.Addr { return netip.AddrFrom16(a.As16()) }
	good := []Pinhole{
		{From: from4, To: to4},
		{From: from6, To: to6, Deliver: AcceptForward, Session: 1, Seq: 9, TTL: time.Second},
		{From: from4, To: to4, Deliver: Redirect, RedirectPort: 2121},
		{From: from6, To: to6, Deliver: Redirect, RedirectPort: 2121},
		{From: from4, To: to4, Deliver: DNAT, DNATTo: dnat4},
		{From: from4, To: to4, Deliver: DNAT, DNATTo: dnat4, SNATTo: snat4},
		{From: from6, To: to6, Deliver: DNAT, DNATTo: dnat6, SNATTo: snat6},
		// A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
		{From: mapped(from4), To: to4},
		{From: from4, To: netip.AddrPortFrom(mapped(to4.Addr()), 21), Deliver: DNAT, DNATTo: dnat4, SNATTo: mapped(snat4)},
	}
	for _, p := range good {
		if err := p.Validate(); err != nil {
			t.Errorf("%v: Validate() = %v, want nil", p, err)
		}
	}

	bad := []struct {
		p    Pinhole
		want string
	}{
		{Pinhole{}, "From is not a valid address"},
		{Pinhole{From: from4}, "To is not a valid address"},
		{Pinhole{From: from4, To: netip.AddrPortFrom(to4.Addr(), 0)}, "port 0"},
		{Pinhole{From: netip.IPv4Unspecified(), To: to4}, "unspecified"},
		{Pinhole{From: from4, To: netip.AddrPortFrom(netip.IPv6Unspecified(), 1)}, "unspecified"},
		{Pinhole{From: from6.WithZone("eth0"), To: to6}, "zone"},
		{Pinhole{From: from6, To: to4}, "different address families"},
		{Pinhole{From: from4, To: to4, Seq: -1}, "Seq -1 is negative"},
		{Pinhole{From: from4, To: to4, TTL: -time.Second}, "TTL -1s is negative"},
		{Pinhole{From: from4, To: to4, Deliver: Delivery(9)}, "unknown delivery"},
		{Pinhole{From: from4, To: to4, Deliver: Redirect}, "without RedirectPort"},
		{Pinhole{From: from4, To: to4, RedirectPort: 2121}, "RedirectPort 2121 set for delivery accept-local"},
		{Pinhole{From: from4, To: to4, Deliver: AcceptForward, DNATTo: dnat4}, "DNATTo or SNATTo set"},
		{Pinhole{From: from4, To: to4, Deliver: Redirect, RedirectPort: 1, SNATTo: snat4}, "DNATTo or SNATTo set"},
		{Pinhole{From: from4, To: to4, Deliver: DNAT}, "DNATTo is not a valid address"},
		{Pinhole{From: from4, To: to4, Deliver: DNAT, DNATTo: netip.AddrPortFrom(dnat4.Addr(), 0)}, "DNATTo 198.18.0.5:0 has port 0"},
		{Pinhole{From: from4, To: to4, Deliver: DNAT, DNATTo: dnat6}, "DNATTo 2001:db8:2::5 is not of the family"},
		{Pinhole{From: from4, To: to4, Deliver: DNAT, DNATTo: dnat4, SNATTo: snat6}, "SNATTo 2001:db8:2::1 is not of the family"},
		{Pinhole{From: from4, To: to4, Deliver: DNAT, DNATTo: dnat4, SNATTo: netip.IPv4Unspecified()}, "SNATTo 0.0.0.0 is unspecified"},
	}
	for _, tt := range bad {
		err := tt.p.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: Validate() = %v, want ErrInvalid mentioning %q", tt.p, err, tt.want)
		}
	}
}

func TestNone(t *testing.T) {
	var n Pinholer = None{}
	closeFn, err := n.Open(context.Background(), Pinhole{From: from4, To: to4})
	if err != nil {
		t.Fatalf("Open(valid) = %v", err)
	}
	for range 2 {
		if err := closeFn(context.Background()); err != nil {
			t.Errorf("close = %v, want nil", err)
		}
	}
	_, err = n.Open(context.Background(), Pinhole{From: from4})
	if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), "opening pinhole s=0 p=0 198.19.0.2 -> ") {
		t.Errorf("Open(invalid) = %v, want wrapped ErrInvalid", err)
	}
}

func TestSpecQuoting(t *testing.T) {
	for _, tt := range []struct {
		line string
		args []string
	}{
		{`-j FTPGATE-INPUT`, []string{"-j", "FTPGATE-INPUT"}},
		{`-s 198.18.0.1/32 -m comment --comment "ftpgate s=1 p=2" -j ACCEPT`,
			[]string{"-s", "198.18.0.1/32", "-m", "comment", "--comment", "ftpgate s=1 p=2", "-j", "ACCEPT"}},
		{`-m comment --comment "say \"hi\" \\ o\'k" -j RETURN`,
			[]string{"-m", "comment", "--comment", `say "hi" \ o'k`, "-j", "RETURN"}},
		{`-m comment --comment "" -j RETURN`, []string{"-m", "comment", "--comment", "", "-j", "RETURN"}},
	} {
		got := splitSpec(tt.line)
		if !slices.Equal(got, tt.args) {
			t.Errorf("splitSpec(%s) = %q, want %q", tt.line, got, tt.args)
		}
		if back := formatSpec(got); back != tt.line {
			t.Errorf("formatSpec(%q) = %s, want %s", got, back, tt.line)
		}
	}
}

func TestJumpSpec(t *testing.T) {
	for _, tt := range []struct {
		line string
		want bool
	}{
		{"-A INPUT -j FTPGATE-INPUT", true},
		{"-A INPUT -i eth0 -g FTPGATE-INPUT", true},
		{`-A INPUT -m comment --comment "-j FTPGATE-INPUT" -j ACCEPT`, false},
		{"-A INPUT -j FTPGATE-INPUT2", false},
		{"-P INPUT ACCEPT", false},
		{"-N FTPGATE-INPUT", false},
	} {
		if got := jumpSpec(tt.line, "FTPGATE-INPUT") != nil; got != tt.want {
			t.Errorf("jumpSpec(%s) = %v, want %v", tt.line, got, tt.want)
		}
	}
}

func TestParseVariant(t *testing.T) {
	for in, want := range map[string]string{
		"iptables v1.8.9 (nf_tables)\n": "nf_tables",
		"iptables v1.8.9 (legacy)\n":    "legacy",
		"iptables v1.6.1\n":             "legacy",
	} {
		if got := parseVariant(in); got != want {
			t.Errorf("parseVariant(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := IPTablesConfig{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.ChainPrefix != "FTPGATE" || c.DefaultTTL != 30*time.Second || c.Timeout != 5*time.Second ||
		c.Path != "iptables" || c.Path6 != "ip6tables" || c.Logger == nil {
		t.Errorf("defaults = %+v", c)
	}
	for path, want6 := range map[string]string{
		"iptables-legacy":        "ip6tables-legacy",
		"/usr/sbin/iptables-nft": "/usr/sbin/ip6tables-nft",
		"/opt/fw/xt":             "ip6tables",
	} {
		c, err := IPTablesConfig{Path: path}.withDefaults()
		if err != nil || c.Path6 != want6 {
			t.Errorf("Path %q: Path6 = %q, %v; want %q", path, c.Path6, err, want6)
		}
	}
	c, _ = IPTablesConfig{Path: "iptables-legacy", Path6: "my6"}.withDefaults()
	if c.Path6 != "my6" {
		t.Errorf("explicit Path6 replaced by %q", c.Path6)
	}

	for _, bad := range []IPTablesConfig{
		{ChainPrefix: "ABCDEFGHIJKLMNOPQ"}, // 17
		{ChainPrefix: "FTP GATE"},
		{ChainPrefix: "FTP.GATE"},
		{DefaultTTL: -1},
		{Timeout: -1},
	} {
		if _, err := NewIPTables(bad); err == nil {
			t.Errorf("NewIPTables(%+v) = nil error", bad)
		}
	}
	if _, err := (IPTablesConfig{ChainPrefix: "abc_DEF-01234567"}).withDefaults(); err != nil {
		t.Errorf("16-character prefix refused: %v", err)
	}
}
