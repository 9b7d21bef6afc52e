package rules

import (
	"slices"
	"testing"

	"github.com/google/nftables"
)

func TestNativeFirewall(t *testing.T) {
	in, fwd, out := nftables.ChainHookInput, nftables.ChainHookForward, nftables.ChainHookOutput
	iptablesNFT := []chainInfo{
		{nftables.TableFamilyIPv4, "filter", "INPUT", in, true},
		{nftables.TableFamilyIPv4, "filter", "FORWARD", fwd, true},
		{nftables.TableFamilyIPv4, "FTPGATE", "input", in, true},
	}
	for _, tc := range []struct {
		name   string
		chains []chainInfo
		want   NativeFirewall
		ok     bool
	}{
		{"nothing", nil, NativeFirewall{}, false},
		{"iptables-nft and ftpgate's own only", iptablesNFT, NativeFirewall{}, false},
		{"accept policy", []chainInfo{{nftables.TableFamilyINet, "filter", "input", in, false}}, NativeFirewall{}, false},
		{"a drop on output only", []chainInfo{{nftables.TableFamilyINet, "filter", "output", out, true}}, NativeFirewall{}, false},
		{"a regular chain", []chainInfo{{nftables.TableFamilyINet, "filter", "mine", nil, true}}, NativeFirewall{}, false},
		{"Debian's nftables.conf", append(slices.Clone(iptablesNFT),
			chainInfo{nftables.TableFamilyINet, "filter", "input", in, true},
			chainInfo{nftables.TableFamilyINet, "filter", "forward", fwd, true},
			chainInfo{nftables.TableFamilyINet, "filter", "output", out, false}),
			NativeFirewall{Table: "inet filter", Chains: []string{"forward", "input"}}, true},
		{"firewalld (policy accept, a reject last), and an ip table", []chainInfo{
			{nftables.TableFamilyIPv4, "aaa", "in", in, true},
			{nftables.TableFamilyINet, "firewalld", "filter_INPUT", in, false},
			{nftables.TableFamilyINet, "firewalld", "filter_FORWARD", fwd, false},
			{nftables.TableFamilyINet, "firewalld", "filter_OUTPUT", out, false}},
			NativeFirewall{Table: "inet firewalld", Chains: []string{"filter_FORWARD", "filter_INPUT"}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := nativeFirewall(tc.chains)
			if ok != tc.ok || got.Table != tc.want.Table || !slices.Equal(got.Chains, tc.want.Chains) {
				t.Errorf("nativeFirewall = %+v, %v; want %+v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}
