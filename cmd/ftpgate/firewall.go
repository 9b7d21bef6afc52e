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
// creates ftpgate's chains (flushing what a crashed run left), stop removes
// them.
type firewall struct {
	pinholes rules.Pinholer
	ipt      *rules.IPTables // nil for backend none
	ct       *rules.Conntrack
}

// connections returns the watcher that tells the kernel data path when a
// connection is made, opening it on first use. Without it (conntrack
// netlink unavailable) kernel-path pinholes stay until data_timeout after
// the transfer command: a warning, not an error.
func (fw *firewall) connections(log *slog.Logger) (proxy.ConnectionWatcher, error) {
	if fw.ipt == nil {
		return nil, errors.New("the kernel data path needs firewall.backend iptables")
	}
	if fw.ct == nil {
		ct, err := rules.NewConntrack(log)
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

func (w conntrackWatcher) Expect(from netip.Addr, to netip.AddrPort) (<-chan struct{}, func()) {
	e := w.ct.Expect(from, to)
	return e.Done(), e.Cancel
}

// newFirewall builds the backend of fc; it does not touch the firewall yet.
func newFirewall(fc config.Firewall, log *slog.Logger, reg prometheus.Registerer) (*firewall, error) {
	if fc.Backend == config.BackendNone {
		return &firewall{pinholes: rules.None{}}, nil
	}
	path, path6 := iptablesCommands(fc.Variant)
	ipt, err := rules.NewIPTables(rules.IPTablesConfig{
		ChainPrefix: fc.ChainPrefix,
		DefaultTTL:  fc.PinholeTTL,
		Path:        path,
		Path6:       path6,
		Logger:      log,
		Registerer:  reg,
	})
	if err != nil {
		return nil, fmt.Errorf("firewall backend iptables (%s): %w", fc.Variant, err)
	}
	return &firewall{pinholes: ipt, ipt: ipt}, nil
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

func (fw *firewall) start(ctx context.Context, log *slog.Logger) error {
	if fw.ipt == nil {
		log.Info("firewall backend none: no pinholes; the data ports must be reachable")
		return nil
	}
	if err := fw.ipt.Start(ctx); err != nil {
		return fmt.Errorf("setting up ftpgate's chains: %w", err)
	}
	return nil
}

// stop removes ftpgate's chains; it runs after every session has ended.
func (fw *firewall) stop() error {
	if fw.ct != nil {
		fw.ct.Close()
	}
	if fw.ipt == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := fw.ipt.Stop(ctx); err != nil {
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
	path, ok := configFlag("cleanup", args, stderr)
	if !ok {
		return 2
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
	fw, err := newFirewall(cfg.Firewall, log, prometheus.NewRegistry())
	if err != nil {
		fmt.Fprintf(stderr, "ftpgate cleanup: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := fw.ipt.Cleanup(ctx); err != nil {
		fmt.Fprintf(stderr, "ftpgate cleanup: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "removed ftpgate's chains %s-* and the jumps to them\n", cfg.Firewall.ChainPrefix)
	return 0
}
