package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ftpgate/ftpgate/cmd/ftpgate/config"
	"github.com/ftpgate/ftpgate/proxy"
	"github.com/ftpgate/ftpgate/rules"
)

// firewall is the configured pinhole backend and its lifetime: start
// creates ftpgate's chains (flushing what a crashed run left) and, for the
// netlink backend, its sets and tables; stop removes them.
type firewall struct {
	backend  string         // the configured firewall.backend
	pinholes rules.Pinholer // the backend in use, once start succeeded
	ipt      *rules.IPTables
	nl       *rules.Netlink         // nil unless backend netlink or auto
	nft      *rules.NftablesBackend // nil unless backend nftables
	ct       *rules.Conntrack
	// registerer takes the conntrack watcher's metrics, once it opens.
	registerer prometheus.Registerer
	// active and variant are the backend in use and its iptables variant,
	// once start succeeded; fellBack, whether auto fell back to iptables.
	active, variant string
	fellBack        bool
}

// chosen records the backend in use, and reports it as
// ftpgate_firewall_backend_info.
func (fw *firewall) chosen(active, variant string, fellBack bool) {
	fw.active, fw.variant, fw.fellBack = active, variant, fellBack
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ftpgate_firewall_backend_info",
		Help: "Always 1; the labels say which firewall backend runs: backend (netlink, iptables, nftables, none), the configured one, the iptables variant, and fallback \"true\" when auto could not run netlink.",
		ConstLabels: prometheus.Labels{"backend": active, "configured": fw.backend, "variant": variant,
			"fallback": fmt.Sprint(fellBack)},
	})
	info.Set(1)
	if fw.registerer != nil {
		fw.registerer.Register(info) // once per process: start runs once
	}
}

// describe is the backend in use, for the start-up line.
func (fw *firewall) describe() string {
	s := fw.active
	if fw.variant != "" {
		s += " (" + fw.variant + ")"
	}
	if fw.fellBack {
		s += ", fallen back from netlink"
	}
	return s
}

// connections returns the watcher that tells the kernel data path when a
// connection is made, opening it on first use. Without it (conntrack
// netlink unavailable) kernel-path pinholes stay until data_timeout after
// the transfer command: a warning, not an error.
func (fw *firewall) connections(log *slog.Logger) (proxy.ConnectionWatcher, error) {
	if fw.ipt == nil && fw.nft == nil {
		return nil, errors.New("the kernel data path needs a firewall backend other than none")
	}
	if fw.ct == nil {
		ct, err := rules.NewConntrack(log, fw.registerer)
		if err != nil {
			log.Warn("conntrack events unavailable: kernel-path pinholes stay until data_timeout after the transfer command", "err", err)
			return nil, nil
		}
		fw.ct = ct
	}
	return conntrackWatcher{fw.ct}, nil
}

// conntrackWatcher adapts rules.Conntrack to proxy.ConnectionWatcher.
type conntrackWatcher struct{ ct *rules.Conntrack }

func (w conntrackWatcher) Expect(from netip.Addr, to, via netip.AddrPort) proxy.ExpectedConnection {
	return w.ct.Expect(from, to, via)
}

// newFirewall builds the backend of fc; it does not touch the firewall yet.
func newFirewall(fc config.Firewall, log *slog.Logger, reg prometheus.Registerer) (*firewall, error) {
	fw := &firewall{backend: fc.Backend, registerer: reg}
	if fc.Backend == config.BackendNone {
		fw.pinholes = rules.None{}
		return fw, nil
	}
	if fc.Backend == config.BackendNftables {
		nft, err := rules.NewNftables(nftablesConfig(fc, log, reg))
		if err != nil {
			return nil, fmt.Errorf("firewall backend nftables (table %s): %w", fc.Nftables.Table, err)
		}
		fw.nft = nft
		return fw, nil
	}
	if fc.Backend == config.BackendAuto {
		// A native nftables table that drops by policy would drop the
		// iptables-based backends' accepts: only pinholes in that table
		// pass it.
		nf, found, err := rules.DetectNativeFirewall()
		switch {
		case err != nil:
			log.Warn("firewall backend auto: the nftables ruleset could not be read; choosing between netlink and iptables", "err", err)
		case found:
			ncfg := nftablesConfig(fc, log, reg)
			ncfg.Table, ncfg.Attach, ncfg.Chains = nf.Table, rules.NftAttachChain, nf.Chains
			nft, err := rules.NewNftables(ncfg)
			if err != nil {
				return nil, fmt.Errorf("firewall backend auto, nftables (table %s): %w", nf.Table, err)
			}
			log.Info("firewall backend auto: the host's firewall is native nftables, with a drop policy on input or forward: using the nftables backend, attached to that table",
				"table", nf.Table, "chains", nf.Chains)
			fw.nft = nft
			return fw, nil
		default:
			log.Info("firewall backend auto: no native nftables table drops by policy on input or forward: an iptables-based backend serves this host")
		}
	}
	path, path6 := iptablesCommands(fc.Variant)
	cfg := rules.IPTablesConfig{
		ChainPrefix: fc.ChainPrefix,
		DefaultTTL:  fc.PinholeTTL,
		Path:        path,
		Path6:       path6,
		Logger:      log,
		Registerer:  reg,
	}
	if fc.Backend == config.BackendIPTables {
		ipt, err := rules.NewIPTables(cfg)
		if err != nil {
			return nil, fmt.Errorf("firewall backend iptables (%s): %w", fc.Variant, err)
		}
		fw.ipt = ipt
		return fw, nil
	}
	nl, err := rules.NewNetlink(cfg)
	if err != nil {
		return nil, fmt.Errorf("firewall backend %s (%s): %w", fc.Backend, fc.Variant, err)
	}
	fw.nl, fw.ipt = nl, nl.IPTables()
	return fw, nil
}

// nftablesConfig is the nftables backend's configuration from fc.
func nftablesConfig(fc config.Firewall, log *slog.Logger, reg prometheus.Registerer) rules.NftablesConfig {
	return rules.NftablesConfig{
		Prefix:     fc.ChainPrefix,
		Table:      fc.Nftables.Table,
		Attach:     fc.Nftables.Attach,
		Chains:     fc.Nftables.EffectiveChains(),
		DefaultTTL: fc.PinholeTTL,
		Logger:     log,
		Registerer: reg,
	}
}

// iptablesCommands maps firewall.variant to the iptables and ip6tables
// commands.
func iptablesCommands(variant string) (string, string) {
	switch variant {
	case config.VariantNFT:
		return "iptables-nft", "ip6tables-nft"
	case config.VariantLegacy:
		return "iptables-legacy", "ip6tables-legacy"
	}
	return "iptables", "ip6tables"
}

// start sets up the backend. With backend auto, a kernel without what the
// netlink backend needs (ipset, nftables nat maps) is not an error: the
// iptables backend takes over, with a warning that says why.
func (fw *firewall) start(ctx context.Context, log *slog.Logger) error {
	switch {
	case fw.nft != nil:
		if err := fw.nft.Start(ctx); err != nil {
			return fmt.Errorf("setting up the nftables backend: %w", err)
		}
		fw.pinholes = fw.nft
		log.Info("firewall backend nftables: pinholes are elements of sets in the operator's table, with kernel timeouts",
			"table", fw.nft.Table(), "attach", fw.nft.Attach())
		if fw.nft.Attach() == rules.NftAttachSets {
			for chain, rs := range fw.nft.OperatorRules() {
				log.Info("attach sets: the operator's rules must match ftpgate's sets", "chain", chain, "rules", rs)
			}
		}
		fw.chosen(config.BackendNftables, "", false)
		return nil
	case fw.ipt == nil:
		log.Info("firewall backend none: no pinholes; the data ports must be reachable")
		fw.chosen(config.BackendNone, "", false)
		return nil
	case fw.nl == nil:
		if err := fw.ipt.Start(ctx); err != nil {
			return fmt.Errorf("setting up ftpgate's chains: %w", err)
		}
		fw.pinholes = fw.ipt
		log.Info("firewall backend iptables: one exact rule per pinhole", "variant", fw.ipt.Variant())
		fw.chosen(config.BackendIPTables, fw.ipt.Variant(), false)
		return nil
	}
	err := fw.nl.Start(ctx)
	if err == nil {
		fw.pinholes = fw.nl
		log.Info("firewall backend netlink: pinholes are ipset and nftables map elements with kernel timeouts",
			"configured", fw.backend, "variant", fw.nl.Variant())
		fw.chosen(config.BackendNetlink, fw.nl.Variant(), false)
		return nil
	}
	if fw.backend != config.BackendAuto || !errors.Is(err, rules.ErrNetlinkUnavailable) {
		return fmt.Errorf("setting up the netlink backend (firewall.backend: iptables does without ipset and nftables): %w", err)
	}
	ipt, ferr := fw.nl.Fallback(ctx)
	if ferr != nil {
		return fmt.Errorf("firewall backend auto: the netlink backend failed (%w), and so did the iptables backend: %w", err, ferr)
	}
	fw.nl = nil
	fw.pinholes = ipt
	log.Warn("firewall backend auto: the netlink backend cannot run here (see err), using iptables: one iptables process per rule, slower at scale",
		"err", err, "variant", fw.ipt.Variant())
	fw.chosen(config.BackendIPTables, fw.ipt.Variant(), true)
	return nil
}

// stop removes ftpgate's chains, sets and tables; it runs after every
// session has ended.
func (fw *firewall) stop() error {
	if fw.ct != nil {
		fw.ct.Close()
	}
	if fw.ipt == nil && fw.nft == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	switch {
	case fw.nft != nil:
		err = errors.Join(fw.nft.Stop(ctx), fw.nft.Close())
	case fw.nl != nil:
		err = errors.Join(fw.nl.Stop(ctx), fw.nl.Close())
	default:
		err = fw.ipt.Stop(ctx)
	}
	if err != nil {
		return fmt.Errorf("removing ftpgate's chains: %w", err)
	}
	return nil
}

// logPinholeLatency logs the count and mean latency of pinhole operations,
// from the histogram the rules package keeps on reg.
func logPinholeLatency(log *slog.Logger, reg prometheus.Gatherer) {
	families, err := reg.Gather()
	if err != nil {
		return
	}
	for _, mf := range families {
		if mf.GetName() != "ftpgate_pinhole_op_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			if h.GetSampleCount() == 0 {
				continue
			}
			op := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "op" {
					op = l.GetValue()
				}
			}
			log.Info("pinhole operations", "op", op, "count", h.GetSampleCount(),
				"mean_seconds", h.GetSampleSum()/float64(h.GetSampleCount()))
		}
	}
}

func cmdCleanup(args []string, stdout, stderr io.Writer) int {
	path, err := configFlag("cleanup", args, stdout, stderr)
	if err != nil {
		return flagExit(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintf(stderr, "ftpgate cleanup: %s\n", indentErrors(err))
		return 1
	}
	if cfg.Firewall.Backend == config.BackendNone {
		fmt.Fprintln(stdout, "firewall backend is none: ftpgate manages no rules, nothing to remove")
		return 0
	}
	log := newLogger(cfg.Log, stderr)
	if cfg.Firewall.Backend == config.BackendNftables {
		return cleanupNftables(cfg.Firewall, log, stdout, stderr)
	}
	// Whatever the backend other than nftables (a host without iptables): a run with another backend may have left its
	// sets and tables, and the netlink backend's cleanup removes the
	// chains of both.
	fc := cfg.Firewall
	fc.Backend = config.BackendNetlink
	fw, err := newFirewall(fc, log, prometheus.NewRegistry())
	if err != nil {
		fmt.Fprintf(stderr, "ftpgate cleanup: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := errors.Join(fw.nl.Cleanup(ctx), fw.nl.Close()); err != nil {
		fmt.Fprintf(stderr, "ftpgate cleanup: %v\n", err)
		return 1
	}
	what := fmt.Sprintf("ftpgate's chains %[1]s-* and the jumps to them, its ipsets %[1]s-* and its nftables tables ip and ip6 %[1]s",
		cfg.Firewall.ChainPrefix)
	fmt.Fprintf(stdout, "removed %s\n", what)
	return 0
}

// cleanupNftables removes what an nftables backend with fc left: its chain,
// the jumps to it and its sets in the operator's table (with attach sets,
// it empties the sets and deletes those no rule references), and its NAT
// tables.
func cleanupNftables(fc config.Firewall, log *slog.Logger, stdout, stderr io.Writer) int {
	nft, err := rules.NewNftables(nftablesConfig(fc, log, prometheus.NewRegistry()))
	if err != nil {
		fmt.Fprintf(stderr, "ftpgate cleanup: firewall backend nftables: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := errors.Join(nft.Cleanup(ctx), nft.Close()); err != nil {
		fmt.Fprintf(stderr, "ftpgate cleanup: %v\n", err)
		return 1
	}
	what := fmt.Sprintf("ftpgate's chain %[1]s, the jumps to it and its sets %[1]s-* in table %[2]s, and its nftables tables ip and ip6 %[1]s",
		fc.ChainPrefix, fc.Nftables.Table)
	if fc.Nftables.Attach == config.AttachSets {
		what = fmt.Sprintf("the elements of ftpgate's sets %[1]s-* in table %[2]s (and the sets no rule references), and its nftables tables ip and ip6 %[1]s",
			fc.ChainPrefix, fc.Nftables.Table)
	}
	fmt.Fprintf(stdout, "removed %s\n", what)
	return 0
}
