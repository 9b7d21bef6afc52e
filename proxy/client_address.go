package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// ResolvedAddress is the IPv4 address of a DNS name, resolved again every
// Refresh: a home router's dynamic DNS name as client_address, whose
// address changes when the provider hands out another. When a resolution
// fails or returns no IPv4 address, the last good address stays (and is
// logged); until the first one succeeds, Addr is invalid and the session
// writes the address the client connected to.
type ResolvedAddress struct {
	Host    string
	Refresh time.Duration
	// Lookup resolves a name; if nil, the system's resolver (/etc/hosts,
	// then DNS) for IPv4.
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)

	addr atomic.Pointer[netip.Addr]
}

// Addr is the last address resolved, or the zero Addr if none yet.
func (r *ResolvedAddress) Addr() netip.Addr {
	if r == nil {
		return netip.Addr{}
	}
	if a := r.addr.Load(); a != nil {
		return *a
	}
	return netip.Addr{}
}

// Run resolves the name at once and then every Refresh, until ctx ends,
// and logs the changes and failures to log.
func (r *ResolvedAddress) Run(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(max(r.Refresh, time.Second))
	defer t.Stop()
	for {
		r.resolve(ctx, log)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// resolve looks the name up once, within Refresh (10 s at most).
func (r *ResolvedAddress) resolve(ctx context.Context, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, min(max(r.Refresh, time.Second), 10*time.Second))
	defer cancel()
	a, err := r.lookup(ctx)
	old := r.Addr()
	switch {
	case err != nil && ctx.Err() != nil && old.IsValid():
		return // stopping, or slow: the last address stays
	case err != nil:
		log.Warn("client_address: resolving failed; the last address stays",
			"host", r.Host, "address", old.String(), "err", err)
	case a != old:
		r.addr.Store(&a)
		log.Info("client_address resolved", "host", r.Host, "address", a.String(), "was", old.String())
	}
}

// lookup returns the name's first IPv4 address.
func (r *ResolvedAddress) lookup(ctx context.Context) (netip.Addr, error) {
	lookup := r.Lookup
	if lookup == nil {
		lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
		}
	}
	addrs, err := lookup(ctx, r.Host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("resolving %s: %w", r.Host, err)
	}
	for _, a := range addrs {
		if a = a.Unmap(); a.Is4() && !a.IsUnspecified() {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("resolving %s: no IPv4 address in %v (227 replies carry IPv4 only)", r.Host, addrs)
}
