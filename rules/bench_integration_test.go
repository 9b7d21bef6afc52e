//go:build integration

// Benchmarks of the pinhole backends against the real kernel, for both
// iptables variants (the nftables backend has none), in the integration
// tests' own namespace (make bench-pinholes). They measure latency per operation as percentiles and
// throughput from concurrent sessions; they assert nothing about time.

package rules

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"net/netip"
)

// benchBackend is a started backend under benchmark.
type benchBackend interface {
	Pinholer
	Active() int
}

// benchKinds are the backends benchmarked.
var benchKinds = []string{"iptables", "netlink", "nftables"}

// benchVariants are the iptables variants a backend kind runs with: the
// nftables backend uses no iptables, so one run (the first variant's
// name, unused).
func benchVariants(kind string) []variant {
	if kind == "nftables" {
		return []variant{{name: "none"}}
	}
	return variants
}

// newBenchBackend starts backend kind ("iptables", "netlink" or
// "nftables", attached to an inet filter table with policy drop) for v
// with an hour's TTL, and stops it when the benchmark ends.
func newBenchBackend(b *testing.B, kind string, v variant) benchBackend {
	b.Helper()
	if kind == "nftables" {
		resetNftables(b)
		cfg := chainCfg
		cfg.DefaultTTL = time.Hour
		be := newNft(b, cfg, false)
		if err := be.Start(context.Background()); err != nil {
			b.Fatalf("Start: %v", err)
		}
		return be
	}
	needBinaries(b, v)
	resetFirewall(b)
	cfg := IPTablesConfig{DefaultTTL: time.Hour}
	if kind == "netlink" {
		resetNetlink(b)
		return newNetlink(b, v, cfg, false)
	}
	ipt := newBackend(b, v, cfg, false)
	start(b, ipt, context.Background())
	return ipt
}

// preload puts n pinholes other than the measured one in place. The
// netlink and nftables backends open them; for the iptables backend, where n Opens
// would take minutes, iptables-restore adds the same rules in one call:
// what is measured is the cost of an operation with n rules present.
func preload(b *testing.B, kind string, v variant, be benchBackend, n int) {
	b.Helper()
	if n == 0 {
		return
	}
	if kind != "iptables" {
		for i := range n {
			if _, err := be.Open(context.Background(), benchPinhole(i)); err != nil {
				b.Fatalf("preloading pinhole %d: %v", i, err)
			}
		}
		return
	}
	c := newChains(DefaultChainPrefix)
	var in strings.Builder
	in.WriteString("*filter\n")
	for i := range n {
		p := Pinhole{Session: 1, Seq: i, From: peer4, To: netip.AddrPortFrom(gw4, uint16(1024+i))}
		for _, r := range buildRules(c, p) {
			fmt.Fprintf(&in, "-A %s %s\n", r.chain, formatSpec(r.spec))
		}
	}
	in.WriteString("COMMIT\n")
	restore := v.v4 + "-restore" // iptables-nft-restore, iptables-legacy-restore
	cmd := exec.Command(restore, "-w", "--noflush")
	cmd.Stdin = strings.NewReader(in.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("%s: %v: %s", restore, err, out)
	}
	if got := len(list(b, v.v4, "filter", c.input)); got != n+1 {
		b.Fatalf("%s has %d lines after preloading, want %d", c.input, got, n+1)
	}
}

// measured is the pinhole each iteration opens and closes: AcceptLocal,
// the relay path's, on a port no preloaded pinhole uses.
var measured = Pinhole{Session: 2, Seq: 1, From: peer4, To: netip.AddrPortFrom(gw4, 65000)}

// reportPercentiles reports p50 and p99 of ds in microseconds.
func reportPercentiles(b *testing.B, prefix string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	at := func(q float64) float64 {
		return float64(ds[min(int(q*float64(len(ds))), len(ds)-1)].Nanoseconds()) / 1e3
	}
	b.ReportMetric(at(0.50), prefix+"p50-µs")
	b.ReportMetric(at(0.99), prefix+"p99-µs")
}

// BenchmarkPinholeOpenClose opens and closes one AcceptLocal pinhole per
// iteration with 0, 1,000 and 10,000 others open, per backend and variant,
// and reports p50 and p99 of open+close, open and close.
func BenchmarkPinholeOpenClose(b *testing.B) {
	for _, kind := range benchKinds {
		for _, v := range benchVariants(kind) {
			for _, open := range []int{0, 1000, 10000} {
				b.Run(fmt.Sprintf("backend=%s/variant=%s/open=%d", kind, v.name, open), func(b *testing.B) {
					be := newBenchBackend(b, kind, v)
					preload(b, kind, v, be, open)
					ctx := context.Background()
					var both, opening, closing []time.Duration
					for b.Loop() {
						t0 := time.Now()
						closeFn, err := be.Open(ctx, measured)
						if err != nil {
							b.Fatal(err)
						}
						t1 := time.Now()
						if err := closeFn(ctx); err != nil {
							b.Fatal(err)
						}
						t2 := time.Now()
						both = append(both, t2.Sub(t0))
						opening = append(opening, t1.Sub(t0))
						closing = append(closing, t2.Sub(t1))
					}
					reportPercentiles(b, "", both)
					reportPercentiles(b, "open-", opening)
					reportPercentiles(b, "close-", closing)
					if kind != "iptables" {
						if got := be.Active(); got != open {
							b.Errorf("Active() = %d, want %d", got, open)
						}
					}
				})
			}
		}
	}
}

// BenchmarkPinholeConcurrent runs 64 sessions at once, each opening and
// closing its own pinholes, per backend and variant, and reports opens per
// second (each with its close) and the p50 and p99 of one open+close.
func BenchmarkPinholeConcurrent(b *testing.B) {
	const sessions = 64
	for _, kind := range benchKinds {
		for _, v := range benchVariants(kind) {
			b.Run(fmt.Sprintf("backend=%s/variant=%s/sessions=%d", kind, v.name, sessions), func(b *testing.B) {
				be := newBenchBackend(b, kind, v)
				ctx := context.Background()
				var (
					mu  sync.Mutex
					all []time.Duration
					wg  sync.WaitGroup
				)
				work := make(chan int, sessions)
				b.ResetTimer()
				start := time.Now()
				for s := range sessions {
					wg.Go(func() {
						var ds []time.Duration
						for i := range work {
							p := Pinhole{Session: uint64(s), Seq: i, From: peer4, To: netip.AddrPortFrom(gw4, uint16(1024+s))}
							t0 := time.Now()
							closeFn, err := be.Open(ctx, p)
							if err == nil {
								err = closeFn(ctx)
							}
							if err != nil {
								b.Error(err)
								return
							}
							ds = append(ds, time.Since(t0))
						}
						mu.Lock()
						all = append(all, ds...)
						mu.Unlock()
					})
				}
				for i := range b.N {
					work <- i
				}
				close(work)
				wg.Wait()
				elapsed := time.Since(start)
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "opens/s")
				reportPercentiles(b, "", all)
			})
		}
	}
}
