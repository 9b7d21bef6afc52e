package rules

import (
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
)

// NativeFirewall is a native nftables table that drops, by policy, what it
// does not know on the input or forward hook (Debian's
// /etc/nftables.conf, firewalld's inet firewalld). On such a host the
// iptables and netlink backends' accepts are dropped by its base chains:
// only the nftables backend's pinholes, in that table, let data
// connections through.
type NativeFirewall struct {
	// Table is "FAMILY NAME", as NftablesConfig.Table takes it.
	Table string
	// Chains are its base chains on the input and forward hooks with
	// policy drop, for NftablesConfig.Chains.
	Chains []string
}

// chainInfo is what DetectNativeFirewall looks at in one chain.
type chainInfo struct {
	family      nftables.TableFamily
	table, name string
	hook        *nftables.ChainHook // nil: a regular chain
	drop        bool                // policy drop
}

// DetectNativeFirewall lists the host's nftables chains (over netlink; it
// changes nothing) and returns the first native table with a drop policy
// on the input or forward hook, with why it chose it. ok is false if there
// is none: then the iptables-based backends are fine.
func DetectNativeFirewall() (nf NativeFirewall, ok bool, err error) {
	c, err := nftables.New()
	if err != nil {
		return NativeFirewall{}, false, fmt.Errorf("opening nftables netlink: %w", err)
	}
	defer c.CloseLasting()
	chains, err := c.ListChains()
	if err != nil {
		return NativeFirewall{}, false, fmt.Errorf("listing nftables chains: %w", err)
	}
	infos := make([]chainInfo, 0, len(chains))
	for _, ch := range chains {
		if ch.Table == nil {
			continue
		}
		infos = append(infos, chainInfo{family: ch.Table.Family, table: ch.Table.Name, name: ch.Name,
			hook: ch.Hooknum, drop: ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop})
	}
	nf, ok = nativeFirewall(infos)
	return nf, ok, nil
}

// iptablesChains are the base chains that iptables-nft creates: a table
// of them is iptables' own, which the other backends already serve.
var iptablesChains = []string{"INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"}

// nativeFirewall picks, from a listing of chains, the first table (inet
// first, then ip, then ip6; then by name) that is neither iptables-nft's
// nor ftpgate's own and has a filter base chain with policy drop on the
// input or forward hook. firewalld's table inet firewalld counts too: its
// base chains have policy accept but end in a reject of what its zones do
// not allow.
func nativeFirewall(chains []chainInfo) (NativeFirewall, bool) {
	type key struct {
		family nftables.TableFamily
		table  string
	}
	found := map[key][]string{}
	for _, c := range chains {
		switch {
		case c.hook == nil || !c.drop && !(c.family == nftables.TableFamilyINet && c.table == "firewalld"):
			continue
		case *c.hook != *nftables.ChainHookInput && *c.hook != *nftables.ChainHookForward:
			continue
		case slices.Contains(iptablesChains, c.name), strings.HasPrefix(c.table, "FTPGATE"):
			continue
		case c.family != nftables.TableFamilyINet && c.family != nftables.TableFamilyIPv4 && c.family != nftables.TableFamilyIPv6:
			continue
		}
		k := key{c.family, c.table}
		found[k] = append(found[k], c.name)
	}
	if len(found) == 0 {
		return NativeFirewall{}, false
	}
	rank := map[nftables.TableFamily]int{nftables.TableFamilyINet: 0, nftables.TableFamilyIPv4: 1, nftables.TableFamilyIPv6: 2}
	keys := make([]key, 0, len(found))
	for k := range found {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b key) int {
		if d := rank[a.family] - rank[b.family]; d != 0 {
			return d
		}
		return strings.Compare(a.table, b.table)
	})
	k := keys[0]
	names := found[k]
	slices.Sort(names)
	return NativeFirewall{Table: familyName(k.family) + " " + k.table, Chains: names}, true
}
