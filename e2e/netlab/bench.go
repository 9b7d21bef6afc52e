package netlab

import (
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// ResetGatewayFirewall empties the gateway's firewall and conntrack table
// and then runs script in the gateway (as Script does; %[1]s in it, if
// present, is the gateway's iptables binary). The benchmark uses it to
// switch one network between data paths: with an empty script the gateway
// is a plain router (no rules, no NAT, and so no conntrack hooks either).
//
// "nft flush ruleset" removes every table of the namespace, including the
// ones the iptables nf_tables variant made. Without the nft command (package
// nftables), and for a gateway built with iptables-legacy, the tables are
// flushed with iptables and ip6tables instead: their rules and chains go,
// policies become ACCEPT, but the empty built-in chains stay hooked (and
// an empty nat table still keeps conntrack on). Everything happens inside
// the gateway namespace only.
func (h *HomeRouter) ResetGatewayFirewall(script string) error {
	_, err := exec.LookPath("nft")
	if err == nil {
		if _, err := h.Gateway.Run("nft", "flush", "ruleset"); err != nil {
			return fmt.Errorf("resetting the gateway's firewall: %w", err)
		}
	}
	if err != nil || h.IPTables == "iptables-legacy" {
		for _, tool := range []string{h.IPTables, strings.Replace(h.IPTables, "iptables", "ip6tables", 1)} {
			if err := flushTables(h.Gateway, tool); err != nil {
				return fmt.Errorf("resetting the gateway's firewall: %w", err)
			}
		}
	}
	// Forget the previous path's flows (the conntrack tool is optional:
	// the flows would only time out otherwise).
	if _, err := exec.LookPath("conntrack"); err == nil {
		h.Gateway.Exec(30*time.Second, nil, "conntrack", "-F")
	}
	if strings.TrimSpace(script) == "" {
		return nil
	}
	if strings.Contains(script, "%[1]s") {
		script = fmt.Sprintf(script, h.IPTables)
	}
	return h.Gateway.Script(script)
}

// flushTables empties every table of tool (an iptables or ip6tables binary)
// in ns and sets the filter policies to ACCEPT.
func flushTables(ns *NS, tool string) error {
	for _, table := range []string{"raw", "mangle", "nat", "filter"} {
		for _, op := range []string{"-F", "-X"} {
			if _, err := ns.Run(tool, "-w", "-t", table, op); err != nil {
				return err
			}
		}
	}
	for _, chain := range []string{"INPUT", "FORWARD", "OUTPUT"} {
		if _, err := ns.Run(tool, "-w", "-P", chain, "ACCEPT"); err != nil {
			return err
		}
	}
	return nil
}
