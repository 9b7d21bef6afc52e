package rules

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
)

func TestParseNftTable(t *testing.T) {
	for _, tc := range []struct {
		in   string
		fam  nftables.TableFamily
		name string
		err  string
	}{
		{"inet filter", nftables.TableFamilyINet, "filter", ""},
		{"ip  nat_1", nftables.TableFamilyIPv4, "nat_1", ""},
		{"ip6 firewalld", nftables.TableFamilyIPv6, "firewalld", ""},
		{"filter", 0, "", "want \"FAMILY NAME\""},
		{"bridge filter", 0, "", "is not inet, ip or ip6"},
		{"inet fil;ter", 0, "", "not an nft identifier"},
		{"inet filter extra", 0, "", "want \"FAMILY NAME\""},
	} {
		fam, name, err := ParseNftTable(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseNftTable(%q) = %v, want an error with %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || fam != tc.fam || name != tc.name {
			t.Errorf("ParseNftTable(%q) = %v, %q, %v; want %v, %q", tc.in, fam, name, err, tc.fam, tc.name)
		}
	}
}

func TestNftablesConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  NftablesConfig
		want string
	}{
		{NftablesConfig{Chains: []string{"input"}}, "want \"FAMILY NAME\""},
		{NftablesConfig{Table: "inet filter"}, "needs the base chains"},
		{NftablesConfig{Table: "inet filter", Attach: NftAttachSets, Chains: []string{"input"}}, "touches no chain"},
		{NftablesConfig{Table: "inet filter", Attach: "anchor"}, "want chain or sets"},
		{NftablesConfig{Table: "inet filter", Chains: []string{"input", "input"}}, "listed twice"},
		{NftablesConfig{Table: "inet filter", Chains: []string{"in put"}}, "not an nft identifier"},
		{NftablesConfig{Table: "inet filter", Chains: []string{"input"}, Prefix: "bad prefix"}, "prefix"},
		{NftablesConfig{Table: "inet filter", Chains: []string{"input"}, DefaultTTL: -time.Second}, "negative"},
	} {
		if _, err := NewNftables(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewNftables(%+v) = %v, want an error with %q", tc.cfg, err, tc.want)
		}
	}
}

// TestNftablesElements checks the set each delivery uses and its key
// layout: address . address . port (padded to 4 bytes), as the set types
// declare.
func TestNftablesElements(t *testing.T) {
	b, err := NewNftables(NftablesConfig{Table: "inet filter", Attach: NftAttachSets})
	if err != nil {
		t.Fatal(err)
	}
	from := netip.MustParseAddr("198.18.0.2")
	to := netip.MustParseAddrPort("198.18.0.1:40001")
	for _, tc := range []struct {
		p    Pinhole
		set  string
		key  []byte
		nels int
	}{
		{Pinhole{From: from, To: to}, "FTPGATE-in4", []byte{198, 18, 0, 2, 198, 18, 0, 1, 0x9c, 0x41, 0, 0}, 1},
		{Pinhole{From: from, To: to, Deliver: AcceptForward}, "FTPGATE-fwd4", []byte{198, 18, 0, 2, 198, 18, 0, 1, 0x9c, 0x41, 0, 0}, 1},
		{Pinhole{From: from, To: to, Deliver: Redirect, RedirectPort: 2121}, "FTPGATE-rdr4", []byte{198, 18, 0, 2, 0x08, 0x49, 0, 0}, 2},
		{Pinhole{From: from, To: to, Deliver: DNAT, DNATTo: netip.MustParseAddrPort("198.19.0.5:30000"), SNATTo: netip.MustParseAddr("198.18.0.1")},
			"FTPGATE-dnat4", []byte{198, 18, 0, 2, 198, 19, 0, 5, 0x75, 0x30, 0, 0}, 3},
	} {
		els, err := b.elements(tc.p.normalize())
		if err != nil {
			t.Fatalf("%s: %v", tc.p, err)
		}
		if len(els) != tc.nels {
			t.Errorf("%s: %d elements, want %d", tc.p, len(els), tc.nels)
		}
		f := els[0].(mapElement).e
		if f.set.Name != tc.set || f.set.Table.Name != "filter" || !bytes.Equal(f.key, tc.key) || f.val != nil {
			t.Errorf("%s: filter element %s %x %x, want %s %x", tc.p, f.set.Name, f.key, f.val, tc.set, tc.key)
		}
	}
	six := Pinhole{From: netip.MustParseAddr("2001:db8::2"), To: netip.MustParseAddrPort("[2001:db8::1]:21")}
	if els, err := b.elements(six); err != nil || els[0].(mapElement).e.set.Name != "FTPGATE-in6" || len(els[0].(mapElement).e.key) != 36 {
		t.Errorf("IPv6 pinhole: %v %v", els, err)
	}

	v4only, err := NewNftables(NftablesConfig{Table: "ip filter", Attach: NftAttachSets})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v4only.elements(six); !errors.Is(err, ErrFamily) {
		t.Errorf("IPv6 pinhole in an ip table: %v, want ErrFamily", err)
	}
	if _, err := v4only.Open(t.Context(), Pinhole{From: from, To: to}); !errors.Is(err, ErrNotExist) {
		t.Errorf("Open before Start: %v, want ErrNotExist", err)
	}
}

func TestNftablesOperatorRules(t *testing.T) {
	b, err := NewNftables(NftablesConfig{Table: "ip filter", Attach: NftAttachSets, Prefix: "GW"})
	if err != nil {
		t.Fatal(err)
	}
	got := b.OperatorRules()
	want := map[string][]string{
		"input": {
			"ct state new ip saddr . ip daddr . tcp dport @GW-in4 accept",
			"ct state new ct status dnat ip saddr . tcp dport @GW-rdr4 accept",
		},
		"forward": {
			"ct state new ip saddr . ip daddr . tcp dport @GW-fwd4 accept",
			"ct state new ct status dnat ip saddr . ip daddr . tcp dport @GW-dnat4 accept",
		},
	}
	for k, w := range want {
		if strings.Join(got[k], "\n") != strings.Join(w, "\n") {
			t.Errorf("%s: %q, want %q", k, got[k], w)
		}
	}
	if len(got) != 2 {
		t.Errorf("OperatorRules keys %v, want input and forward", got)
	}
}
