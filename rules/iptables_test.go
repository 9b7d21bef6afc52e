package rules

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// syncBuffer is a bytes.Buffer safe for concurrent writes, for logs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// fakeBackend is an IPTables on fakes.
type fakeBackend struct {
	*IPTables
	v4, v6 *fakeIPT // v6 nil if IPv6 is unavailable
	reg    *prometheus.Registry
	logs   *syncBuffer
}

// newFakeBackend builds an IPTables on fresh fakes (with IPv6 if v6) and
// stops it when the test ends.
func newFakeBackend(t *testing.T, cfg IPTablesConfig, v6 bool) *fakeBackend {
	t.Helper()
	fb := &fakeBackend{v4: newFakeIPT(), reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	cfg.Registerer = fb.reg
	cfg.Logger = slog.New(slog.NewTextHandler(fb.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	var fam6 *family
	if v6 {
		fb.v6 = newFakeIPT()
		fam6 = &family{name: "IPv6", path: "ip6tables", variant: "nf_tables", ipt: fb.v6}
	}
	fb.IPTables, err = newIPTables(cfg, &family{name: "IPv4", path: "iptables", variant: "nf_tables", ipt: fb.v4}, fam6, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fb.Stop(context.Background()); err != nil {
			t.Errorf("Stop at cleanup: %v", err)
		}
	})
	return fb
}

func (fb *fakeBackend) fakes() []*fakeIPT {
	if fb.v6 == nil {
		return []*fakeIPT{fb.v4}
	}
	return []*fakeIPT{fb.v4, fb.v6}
}

func mustStart(t *testing.T, fb *fakeBackend) {
	t.Helper()
	if err := fb.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
}

var ourChains = []string{"filter/FTPGATE-INPUT", "filter/FTPGATE-FORWARD", "nat/FTPGATE-PREROUTING", "nat/FTPGATE-POSTROUTING", "nat/FTPGATE-OUTPUT"}

// wantChain fails the test unless table/chain holds exactly want.
func wantChain(t *testing.T, f *fakeIPT, tableChain string, want ...string) {
	t.Helper()
	table, chain, _ := strings.Cut(tableChain, "/")
	got := f.rules(table, chain)
	if got == nil {
		t.Errorf("%s does not exist, want %q", tableChain, want)
		return
	}
	if want == nil {
		want = []string{}
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s =\n\t%s\nwant\n\t%s", tableChain, strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

// wantSetUp checks the state right after Start on an otherwise empty fake.
func wantSetUp(t *testing.T, f *fakeIPT) {
	t.Helper()
	for _, tc := range ourChains {
		wantChain(t, f, tc)
	}
	wantChain(t, f, "filter/INPUT", "-j FTPGATE-INPUT")
	wantChain(t, f, "filter/FORWARD", "-j FTPGATE-FORWARD")
	wantChain(t, f, "filter/OUTPUT")
	wantChain(t, f, "nat/PREROUTING", "-j FTPGATE-PREROUTING")
	wantChain(t, f, "nat/POSTROUTING", "-j FTPGATE-POSTROUTING")
	wantChain(t, f, "nat/OUTPUT", "-j FTPGATE-OUTPUT")
	wantChain(t, f, "nat/INPUT")
}

// pristine is the dump of a fake that nobody touched.
var pristine = newFakeIPT().dump()

func TestStartCreatesChainsAndJumps(t *testing.T) {
	fb := newFakeBackend(t, IPTablesConfig{}, true)
	mustStart(t, fb)
	for _, f := range fb.fakes() {
		wantSetUp(t, f)
	}
	// Start again: still one jump each, chains still there and empty.
	mustStart(t, fb)
	for _, f := range fb.fakes() {
		wantSetUp(t, f)
	}
	if fb.Variant() != "nf_tables" {
		t.Errorf("Variant() = %q", fb.Variant())
	}
}

func TestChainPrefix(t *testing.T) {
	fb := newFakeBackend(t, IPTablesConfig{ChainPrefix: "FG2"}, false)
	mustStart(t, fb)
	wantChain(t, fb.v4, "filter/INPUT", "-j FG2-INPUT")
	wantChain(t, fb.v4, "nat/POSTROUTING", "-j FG2-POSTROUTING")
	if _, err := fb.Open(context.Background(), Pinhole{From: from4, To: to4}); err != nil {
		t.Fatal(err)
	}
	if got := fb.v4.rules("filter", "FG2-INPUT"); len(got) != 1 {
		t.Errorf("FG2-INPUT = %q, want one rule", got)
	}
}

// crashState fills f with what a killed ftpgate leaves (chains with
// pinholes, jumps, one of them twice) among another program's rules and
// chain.
func crashState(f *fakeIPT) {
	f.add("filter", "INPUT", "-s 198.18.9.9/32 -j ACCEPT")
	f.add("filter", "FTPGATE-INPUT", `-s 198.19.0.2/32 -d 198.19.0.1/32 -p tcp -m tcp --dport 40001 -m conntrack --ctstate NEW -m comment --comment "ftpgate s=1 p=1" -j ACCEPT`)
	f.add("filter", "INPUT", "-j FTPGATE-INPUT")
	f.add("filter", "INPUT", "-p tcp -m tcp --dport 21 -j ACCEPT")
	f.add("filter", "INPUT", "-j FTPGATE-INPUT")
	f.add("filter", "OTHER", "-s 198.18.7.7/32 -j DROP")
	f.add("filter", "FORWARD", "-j OTHER")
	f.add("filter", "FTPGATE-FORWARD", `-s 198.19.0.2/32 -d 198.18.0.5/32 -p tcp -m tcp --dport 30000 -m comment --comment "ftpgate s=1 p=2" -j ACCEPT`)
	f.add("filter", "FORWARD", "-j FTPGATE-FORWARD")
	f.add("nat", "PREROUTING", "-p tcp -m tcp --dport 21 -j REDIRECT --to-ports 2121")
	f.add("nat", "FTPGATE-PREROUTING", `-s 198.19.0.2/32 -p tcp -m tcp --dport 40001 -m comment --comment "ftpgate s=1 p=2" -j DNAT --to-destination 198.18.0.5:30000`)
	f.add("nat", "PREROUTING", "-j FTPGATE-PREROUTING")
	f.add("nat", "FTPGATE-POSTROUTING", "")
	f.add("nat", "POSTROUTING", "-j FTPGATE-POSTROUTING")
	// no FTPGATE-OUTPUT at all: the crash came before it was made
}

func TestStartAfterCrash(t *testing.T) {
	fb := newFakeBackend(t, IPTablesConfig{}, false)
	crashState(fb.v4)
	mustStart(t, fb)
	f := fb.v4
	for _, tc := range ourChains {
		wantChain(t, f, tc) // leftovers flushed
	}
	// Two jumps became one, at the top; a single one stays where it was.
	wantChain(t, f, "filter/INPUT", "-j FTPGATE-INPUT", "-s 198.18.9.9/32 -j ACCEPT", "-p tcp -m tcp --dport 21 -j ACCEPT")
	wantChain(t, f, "filter/FORWARD", "-j OTHER", "-j FTPGATE-FORWARD")
	wantChain(t, f, "filter/OTHER", "-s 198.18.7.7/32 -j DROP")
	wantChain(t, f, "nat/PREROUTING", "-p tcp -m tcp --dport 21 -j REDIRECT --to-ports 2121", "-j FTPGATE-PREROUTING")
	wantChain(t, f, "nat/POSTROUTING", "-j FTPGATE-POSTROUTING")
	wantChain(t, f, "nat/OUTPUT", "-j FTPGATE-OUTPUT")
}

func TestStopRemovesEverything(t *testing.T) {
	fb := newFakeBackend(t, IPTablesConfig{}, true)
	f := fb.v4
	f.add("filter", "INPUT", "-s 198.18.9.9/32 -j ACCEPT")
	f.add("filter", "OTHER", "-j RETURN")
	f.add("nat", "PREROUTING", "-p tcp -m tcp --dport 21 -j REDIRECT --to-ports 2121")
	before := f.dump()
	mustStart(t, fb)
	// An extra jump, as an operator's base rules might add.
	f.add("filter", "INPUT", "-i lo -j FTPGATE-INPUT")
	closeFn, err := fb.Open(context.Background(), Pinhole{From: from4, To: to4, Deliver: DNAT, DNATTo: dnat4, SNATTo: snat4})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fb.Open(context.Background(), Pinhole{From: from6, To: to6}); err != nil {
		t.Fatal(err)
	}
	if err := fb.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if got := f.dump(); !slices.Equal(got, before) {
		t.Errorf("IPv4 after Stop:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(before, "\n"))
	}
	if got := fb.v6.dump(); !slices.Equal(got, pristine) {
		t.Errorf("IPv6 after Stop:\n%s", strings.Join(got, "\n"))
	}
	if n := fb.Active(); n != 0 {
		t.Errorf("Active() = %d after Stop", n)
	}
	if err := closeFn(context.Background()); err != nil {
		t.Errorf("close after Stop = %v, want nil", err)
	}
	if err := fb.Stop(context.Background()); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := fb.Open(context.Background(), Pinhole{From: from4, To: to4}); !errors.Is(err, ErrNotExist) {
		t.Errorf("Open after Stop = %v, want ErrNotExist", err)
	}
	// And it starts again.
	mustStart(t, fb)
	if _, err := fb.Open(context.Background(), Pinhole{From: from4, To: to4}); err != nil {
		t.Errorf("Open after restart: %v", err)
	}
}

func TestCleanup(t *testing.T) {
	fb := newFakeBackend(t, IPTablesConfig{}, true)
	crashState(fb.v4)
	fb.v6.add("filter", "FTPGATE-INPUT", "")
	fb.v6.add("filter", "INPUT", "-j FTPGATE-INPUT")
	if err := fb.Cleanup(context.Background()); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	f := fb.v4
	for _, tc := range ourChains {
		table, chain, _ := strings.Cut(tc, "/")
		if f.rules(table, chain) != nil {
			t.Errorf("%s still exists", tc)
		}
	}
	wantChain(t, f, "filter/INPUT", "-s 198.18.9.9/32 -j ACCEPT", "-p tcp -m tcp --dport 21 -j ACCEPT")
	wantChain(t, f, "filter/FORWARD", "-j OTHER")
	wantChain(t, f, "filter/OTHER", "-s 198.18.7.7/32 -j DROP")
	wantChain(t, f, "nat/PREROUTING", "-p tcp -m tcp --dport 21 -j REDIRECT --to-ports 2121")
	wantChain(t, f, "nat/POSTROUTING")
	if got := fb.v6.dump(); !slices.Equal(got, pristine) {
		t.Errorf("IPv6 after Cleanup:\n%s", strings.Join(got, "\n"))
	}
	// Nothing left: Cleanup succeeds and changes nothing.
	if err := fb.Cleanup(context.Background()); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
}

func TestCleanupWhenNothingThere(t *testing.T) {
	fb := newFakeBackend(t, IPTablesConfig{}, true)
	if err := fb.Cleanup(context.Background()); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	for _, f := range fb.fakes() {
		if got := f.dump(); !slices.Equal(got, pristine) {
			t.Errorf("Cleanup changed an empty firewall:\n%s", strings.Join(got, "\n"))
		}
		if n := f.count("append") + f.count("insert") + f.count("delete") + f.count("clear") + f.count("deletechain"); n != 0 {
			t.Errorf("Cleanup made %d changes to an empty firewall", n)
		}
	}
}

const c123 = `-m comment --comment "ftpgate s=12 p=3"`

func TestOpenRulespecs(t *testing.T) {
	for _, tt := range []struct {
		name string
		p    Pinhole
		want map[string][]string // table/chain -> rules, in the family of p
	}{
		{"accept-local/4", Pinhole{From: from4, To: to4, Deliver: AcceptLocal}, map[string][]string{
			"filter/FTPGATE-INPUT": {`-s 198.19.0.2/32 -d 198.19.0.1/32 -p tcp -m tcp --dport 40001 -m conntrack --ctstate NEW ` + c123 + ` -j ACCEPT`},
		}},
		{"accept-local/6", Pinhole{From: from6, To: to6, Deliver: AcceptLocal}, map[string][]string{
			"filter/FTPGATE-INPUT": {`-s 2001:db8:1::2/128 -d 2001:db8:1::1/128 -p tcp -m tcp --dport 40001 -m conntrack --ctstate NEW ` + c123 + ` -j ACCEPT`},
		}},
		{"accept-forward/4", Pinhole{From: from4, To: to4, Deliver: AcceptForward}, map[string][]string{
			"filter/FTPGATE-FORWARD": {`-s 198.19.0.2/32 -d 198.19.0.1/32 -p tcp -m tcp --dport 40001 -m conntrack --ctstate NEW ` + c123 + ` -j ACCEPT`},
		}},
		{"accept-forward/6", Pinhole{From: from6, To: to6, Deliver: AcceptForward}, map[string][]string{
			"filter/FTPGATE-FORWARD": {`-s 2001:db8:1::2/128 -d 2001:db8:1::1/128 -p tcp -m tcp --dport 40001 -m conntrack --ctstate NEW ` + c123 + ` -j ACCEPT`},
		}},
		{"redirect/4", Pinhole{From: from4, To: to4, Deliver: Redirect, RedirectPort: 2121}, map[string][]string{
			"filter/FTPGATE-INPUT":   {`-s 198.19.0.2/32 -p tcp -m tcp --dport 2121 -m conntrack --ctstate NEW --ctorigdst 198.19.0.1 --ctorigdstport 40001 ` + c123 + ` -j ACCEPT`},
			"nat/FTPGATE-PREROUTING": {`-s 198.19.0.2/32 -d 198.19.0.1/32 -p tcp -m tcp --dport 40001 -m conntrack --ctstate NEW ` + c123 + ` -j REDIRECT --to-ports 2121`},
		}},
		{"redirect/6", Pinhole{From: from6, To: to6, Deliver: Redirect, RedirectPort: 2121}, map[string][]string{
			"filter/FTPGATE-INPUT":   {`-s 2001:db8:1::2/128 -p tcp -m tcp --dport 2121 -m conntrack --ctstate NEW --ctorigdst 2001:db8:1::1 --ctorigdstport 40001 ` + c123 + ` -j ACCEPT`},
			"nat/FTPGATE-PREROUTING": {`-s 2001:db8:1::2/128 -d 2001:db8:1::1/128 -p tcp -m tcp --dport 40001 -m conntrack --ctstate NEW ` + c123 + ` -j REDIRECT --to-ports 2121`},
		}},
		{"dnat/4", Pinhole{From: from4, To: to4, Deliver: DNAT, DNATTo: dnat4}, map[string][]string{
			"filter/FTPGATE-FORWARD": {`-s 198.19.0.2/32 -d 198.18.0.5/32 -p tcp -m tcp --dport 30000 -m conntrack --ctstate NEW --ctorigdst 198.19.0.1 --ctorigdstport 40001 ` + c123 + ` -j ACCEPT`},
			"nat/FTPGATE-PREROUTING": {`-s 198.19.0.2/32 -d 198.19.0.1/32 -p tcp -m tcp --dport 40001 -m conntrack --ctstate NEW ` + c123 + ` -j DNAT --to-destination 198.18.0.5:30000`},
		}},
		{"dnat+snat/4", Pinhole{From: from4, To: to4, Deliver: DNAT, DNATTo: dnat4, SNATTo: snat4}, map[string][]string{
			"filter/FTPGATE-FORWARD":  {`-s 198.19.0.2/32 -d 198.18.0.5/32 -p tcp -m tcp --dport 30000 -m conntrack --ctstate NEW --ctorigdst 198.19.0.1 --ctorigdstport 40001 ` + c123 + ` -j ACCEPT`},
			"nat/FTPGATE-POSTROUTING": {`-s 198.19.0.2/32 -d 198.18.0.5/32 -p tcp -m tcp --dport 30000 -m conntrack --ctstate NEW --ctorigdst 198.19.0.1 --ctorigdstport 40001 ` + c123 + ` -j SNAT --to-source 198.18.0.1`},
			"nat/FTPGATE-PREROUTING":  {`-s 198.19.0.2/32 -d 198.19.0.1/32 -p tcp -m tcp --dport 40001 -m conntrack --ctstate NEW ` + c123 + ` -j DNAT --to-destination 198.18.0.5:30000`},
		}},
		{"dnat/6", Pinhole{From: from6, To: to6, Deliver: DNAT, DNATTo: dnat6}, map[string][]string{
			"filter/FTPGATE-FORWARD": {`-s 2001:db8:1::2/128 -d 2001:db8:2::5/128 -p tcp -m tcp --dport 30000 -m conntrack --ctstate NEW --ctorigdst 2001:db8:1::1 --ctorigdstport 40001 ` + c123 + ` -j ACCEPT`},
			"nat/FTPGATE-PREROUTING": {`-s 2001:db8:1::2/128 -d 2001:db8:1::1/128 -p tcp -m tcp --dport 40001 -m conntrack --ctstate NEW ` + c123 + ` -j DNAT --to-destination [2001:db8:2::5]:30000`},
		}},
		{"dnat+snat/6", Pinhole{From: from6, To: to6, Deliver: DNAT, DNATTo: dnat6, SNATTo: snat6}, map[string][]string{
			"filter/FTPGATE-FORWARD":  {`-s 2001:db8:1::2/128 -d 2001:db8:2::5/128 -p tcp -m tcp --dport 30000 -m conntrack --ctstate NEW --ctorigdst 2001:db8:1::1 --ctorigdstport 40001 ` + c123 + ` -j ACCEPT`},
			"nat/FTPGATE-POSTROUTING": {`-s 2001:db8:1::2/128 -d 2001:db8:2::5/128 -p tcp -m tcp --dport 30000 -m conntrack --ctstate NEW --ctorigdst 2001:db8:1::1 --ctorigdstport 40001 ` + c123 + ` -j SNAT --to-source 2001:db8:2::1`},
			"nat/FTPGATE-PREROUTING":  {`-s 2001:db8:1::2/128 -d 2001:db8:1::1/128 -p tcp -m tcp --dport 40001 -m conntrack --ctstate NEW ` + c123 + ` -j DNAT --to-destination [2001:db8:2::5]:30000`},
		}},
		// IPv4-mapped addresses are installed as IPv4.
		{"accept-local/4in6", Pinhole{From: netip.AddrFrom16(from4.As16()), To: netip.AddrPortFrom(netip.AddrFrom16(to4.Addr().As16()), 40001)}, map[string][]string{
			"filter/FTPGATE-INPUT": {`-s 198.19.0.2/32 -d 198.19.0.1/32 -p tcp -m tcp --dport 40001 -m conntrack --ctstate NEW ` + c123 + ` -j ACCEPT`},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fb := newFakeBackend(t, IPTablesConfig{}, true)
			mustStart(t, fb)
			p := tt.p
			p.Session, p.Seq = 12, 3
			var order []string
			mine, other := fb.v4, fb.v6
			if p.From.Unmap().Is6() {
				mine, other = fb.v6, fb.v4
			}
			mine.setFail(func(op, table, chain string, _ []string) error {
				if op == "append" {
					order = append(order, table)
				}
				return nil
			})
			closeFn, err := fb.Open(context.Background(), p)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			for _, tc := range ourChains {
				wantChain(t, mine, tc, tt.want[tc]...)
				wantChain(t, other, tc)
			}
			// filter first: nothing is rewritten before it can be accepted
			if order[0] != "filter" || slices.Contains(order[1:], "filter") {
				t.Errorf("rules added in table order %q, want filter first", order)
			}
			if n := fb.Active(); n != 1 {
				t.Errorf("Active() = %d, want 1", n)
			}
			if err := closeFn(context.Background()); err != nil {
				t.Fatalf("close: %v", err)
			}
			for _, tc := range ourChains {
				wantChain(t, mine, tc)
			}
			if n := fb.Active(); n != 0 {
				t.Errorf("Active() = %d after close, want 0", n)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()

	fb := newFakeBackend(t, IPTablesConfig{}, false)
	if _, err := fb.Open(ctx, Pinhole{From: from4, To: to4}); !errors.Is(err, ErrNotExist) || !strings.Contains(err.Error(), "Start") {
		t.Errorf("Open before Start = %v, want ErrNotExist", err)
	}
	mustStart(t, fb)
	if _, err := fb.Open(ctx, Pinhole{From: from4}); !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), "opening pinhole s=0 p=0 198.19.0.2") {
		t.Errorf("Open(invalid) = %v, want ErrInvalid", err)
	}
	if _, err := fb.Open(ctx, Pinhole{From: from6, To: to6}); !errors.Is(err, ErrFamily) {
		t.Errorf("Open(IPv6) without ip6tables = %v, want ErrFamily", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := fb.Open(cctx, Pinhole{From: from4, To: to4}); !errors.Is(err, context.Canceled) {
		t.Errorf("Open(cancelled) = %v, want context.Canceled", err)
	}
	fb.v4.setFail(func(op, _, _ string, _ []string) error {
		if op == "append" {
			return &fakeErr{msg: "iptables: Resource temporarily unavailable."}
		}
		return nil
	})
	if _, err := fb.Open(ctx, Pinhole{From: from4, To: to4}); err == nil || !strings.Contains(err.Error(), "adding rule to filter/FTPGATE-INPUT (IPv4): iptables: Resource") {
		t.Errorf("Open with a refusing firewall = %v", err)
	}
	for _, tc := range ourChains {
		wantChain(t, fb.v4, tc)
	}
	if n := fb.Active(); n != 0 {
		t.Errorf("Active() = %d", n)
	}
	if !strings.Contains(fb.logs.String(), `msg="ip6tables not available: IPv6 pinholes will fail"`) {
		t.Errorf("no warning about ip6tables in the logs:\n%s", fb.logs)
	}
	// before Start (missing), invalid (other), ErrFamily (unavailable),
	// cancelled (timeout), refused (busy)
	wantMetric(t, fb.reg, `
# HELP ftpgate_pinhole_errors_total Pinhole operations that failed, by operation and reason: conflict, unavailable (no ip6tables, no ipset or nftables), permission, busy (the xtables lock), missing (a rule, set or chain gone: the firewall was reloaded by someone else), timeout, other.
# TYPE ftpgate_pinhole_errors_total counter
ftpgate_pinhole_errors_total{op="close",reason="busy"} 0
ftpgate_pinhole_errors_total{op="close",reason="conflict"} 0
ftpgate_pinhole_errors_total{op="close",reason="missing"} 0
ftpgate_pinhole_errors_total{op="close",reason="other"} 0
ftpgate_pinhole_errors_total{op="close",reason="permission"} 0
ftpgate_pinhole_errors_total{op="close",reason="timeout"} 0
ftpgate_pinhole_errors_total{op="close",reason="unavailable"} 0
ftpgate_pinhole_errors_total{op="open",reason="busy"} 1
ftpgate_pinhole_errors_total{op="open",reason="conflict"} 0
ftpgate_pinhole_errors_total{op="open",reason="missing"} 1
ftpgate_pinhole_errors_total{op="open",reason="other"} 1
ftpgate_pinhole_errors_total{op="open",reason="permission"} 0
ftpgate_pinhole_errors_total{op="open",reason="timeout"} 1
ftpgate_pinhole_errors_total{op="open",reason="unavailable"} 1
`, "ftpgate_pinhole_errors_total")
}

// TestOpenConflict: two DNAT pinholes with the same match (the server's
// connection to the gateway's port) and different targets (two clients)
// cannot both hold: the older rule would win silently and send the second
// session's data to the first session's client. The second is refused.
func TestOpenConflict(t *testing.T) {
	ctx := context.Background()
	fb := newFakeBackend(t, IPTablesConfig{}, false)
	mustStart(t, fb)
	server := netip.MustParseAddr("198.18.1.2")
	gw := netip.MustParseAddrPort("198.18.1.1:50000")
	a := Pinhole{Session: 1, From: server, To: gw, Deliver: DNAT, DNATTo: netip.MustParseAddrPort("198.19.0.2:40001")}
	b := a
	b.Session, b.DNATTo = 2, netip.MustParseAddrPort("198.19.0.3:40001")
	if _, err := fb.Open(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := fb.Open(ctx, b); !errors.Is(err, ErrConflict) {
		t.Fatalf("Open of a conflicting pinhole = %v, want ErrConflict", err)
	}
	if n := fb.Active(); n != 1 {
		t.Errorf("Active() = %d, want 1", n)
	}
	other := b
	other.To = netip.MustParseAddrPort("198.18.1.1:50001") // another port: no conflict
	if _, err := fb.Open(ctx, other); err != nil {
		t.Errorf("Open on another port = %v", err)
	}
	if !strings.Contains(fb.logs.String(), "another one diverts the same connections elsewhere") {
		t.Errorf("the conflict is not logged:\n%s", fb.logs)
	}
}

func TestOpenRollback(t *testing.T) {
	ctx := context.Background()
	p := Pinhole{Session: 7, Seq: 1, From: from4, To: to4, Deliver: DNAT, DNATTo: dnat4, SNATTo: snat4}
	for fail := 1; fail <= 3; fail++ {
		t.Run(fmt.Sprint("append ", fail), func(t *testing.T) {
			fb := newFakeBackend(t, IPTablesConfig{}, false)
			mustStart(t, fb)
			n := 0
			fb.v4.setFail(func(op, _, _ string, _ []string) error {
				if op == "append" {
					if n++; n == fail {
						return &fakeErr{msg: "iptables: Memory allocation problem."}
					}
				}
				return nil
			})
			if _, err := fb.Open(ctx, p); err == nil || !strings.Contains(err.Error(), "Memory allocation") {
				t.Fatalf("Open = %v, want the third append's error", err)
			}
			for _, tc := range ourChains {
				wantChain(t, fb.v4, tc)
			}
			if a, d := fb.v4.count("append"), fb.v4.count("delete"); d != a-1 {
				t.Errorf("%d appends (one failed), %d deletes", a, d)
			}
			if n := fb.Active(); n != 0 {
				t.Errorf("Active() = %d", n)
			}
		})
	}

	t.Run("rollback fails", func(t *testing.T) {
		fb := newFakeBackend(t, IPTablesConfig{}, false)
		mustStart(t, fb)
		appends, deletes := 0, 0
		fb.v4.setFail(func(op, _, _ string, _ []string) error {
			switch op {
			case "append":
				if appends++; appends == 3 {
					return &fakeErr{msg: "iptables: Memory allocation problem."}
				}
			case "delete":
				if deletes++; deletes == 2 {
					return &fakeErr{msg: "iptables: Resource temporarily unavailable."}
				}
			}
			return nil
		})
		_, err := fb.Open(ctx, p)
		if err == nil || !strings.Contains(err.Error(), "Memory allocation") || !strings.Contains(err.Error(), "rolling back: deleting rule from filter/FTPGATE-FORWARD") {
			t.Fatalf("Open = %v, want the append's and the rollback's errors", err)
		}
		// The leftover ACCEPT is the reaper's now; it retries at once.
		waitFor(t, 2*time.Second, "the reaper removes the leftover", func() bool {
			return fb.Active() == 0 && strings.Contains(fb.logs.String(), "removed the rules of a pinhole that failed to open")
		})
		for _, tc := range ourChains {
			wantChain(t, fb.v4, tc)
		}
	})
}

// waitFor polls cond every 5ms for at most d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCloseIdempotent(t *testing.T) {
	ctx := context.Background()
	fb := newFakeBackend(t, IPTablesConfig{}, false)
	mustStart(t, fb)
	closeFn, err := fb.Open(ctx, Pinhole{From: from4, To: to4, Deliver: Redirect, RedirectPort: 2121})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if err := closeFn(ctx); err != nil {
				t.Errorf("close = %v", err)
			}
		})
	}
	wg.Wait()
	if err := closeFn(ctx); err != nil {
		t.Errorf("close again = %v", err)
	}
	if d := fb.v4.count("delete"); d != 2 {
		t.Errorf("%d deletes for a 2-rule pinhole closed 21 times, want 2", d)
	}
	// A cancelled context does not matter once the pinhole is gone.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := closeFn(cctx); err != nil {
		t.Errorf("close(cancelled) of a closed pinhole = %v", err)
	}
}

func TestCloseErrors(t *testing.T) {
	ctx := context.Background()
	fb := newFakeBackend(t, IPTablesConfig{}, false)
	mustStart(t, fb)
	closeFn, err := fb.Open(ctx, Pinhole{Session: 3, Seq: 4, From: from4, To: to4, Deliver: DNAT, DNATTo: dnat4})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := closeFn(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("close(cancelled) = %v, want context.Canceled", err)
	}
	fb.v4.setFail(func(op, table, _ string, _ []string) error {
		if op == "delete" && table == "filter" {
			return &fakeErr{msg: "iptables: Resource temporarily unavailable."}
		}
		return nil
	})
	err = closeFn(ctx)
	if err == nil || !strings.HasPrefix(err.Error(), "closing pinhole s=3 p=4 198.19.0.2 -> 198.19.0.1:40001 dnat 198.18.0.5:30000: deleting rule from filter/FTPGATE-FORWARD (IPv4): iptables: Resource") {
		t.Fatalf("close = %v", err)
	}
	// The DNAT is gone, the ACCEPT is left and the pinhole is still on the books.
	wantChain(t, fb.v4, "nat/FTPGATE-PREROUTING")
	if len(fb.v4.rules("filter", "FTPGATE-FORWARD")) != 1 || fb.Active() != 1 {
		t.Fatalf("after a failed close: FORWARD %q, Active %d", fb.v4.rules("filter", "FTPGATE-FORWARD"), fb.Active())
	}
	fb.v4.setFail(nil)
	if err := closeFn(ctx); err != nil {
		t.Fatalf("close retry = %v", err)
	}
	wantChain(t, fb.v4, "filter/FTPGATE-FORWARD")
	if fb.Active() != 0 {
		t.Errorf("Active() = %d", fb.Active())
	}
	// A rule removed behind our back is not an error.
	closeFn, err = fb.Open(ctx, Pinhole{From: from4, To: to4})
	if err != nil {
		t.Fatal(err)
	}
	if err := fb.v4.ClearChain("filter", "FTPGATE-INPUT"); err != nil {
		t.Fatal(err)
	}
	if err := closeFn(ctx); err != nil {
		t.Errorf("close of a rule already gone = %v", err)
	}
	wantMetric(t, fb.reg, `
# HELP ftpgate_pinhole_errors_total Pinhole operations that failed, by operation and reason: conflict, unavailable (no ip6tables, no ipset or nftables), permission, busy (the xtables lock), missing (a rule, set or chain gone: the firewall was reloaded by someone else), timeout, other.
# TYPE ftpgate_pinhole_errors_total counter
ftpgate_pinhole_errors_total{op="close",reason="busy"} 1
ftpgate_pinhole_errors_total{op="close",reason="conflict"} 0
ftpgate_pinhole_errors_total{op="close",reason="missing"} 0
ftpgate_pinhole_errors_total{op="close",reason="other"} 0
ftpgate_pinhole_errors_total{op="close",reason="permission"} 0
ftpgate_pinhole_errors_total{op="close",reason="timeout"} 1
ftpgate_pinhole_errors_total{op="close",reason="unavailable"} 0
ftpgate_pinhole_errors_total{op="open",reason="busy"} 0
ftpgate_pinhole_errors_total{op="open",reason="conflict"} 0
ftpgate_pinhole_errors_total{op="open",reason="missing"} 0
ftpgate_pinhole_errors_total{op="open",reason="other"} 0
ftpgate_pinhole_errors_total{op="open",reason="permission"} 0
ftpgate_pinhole_errors_total{op="open",reason="timeout"} 0
ftpgate_pinhole_errors_total{op="open",reason="unavailable"} 0
`, "ftpgate_pinhole_errors_total")
}

func TestReaper(t *testing.T) {
	ctx := context.Background()
	fb := newFakeBackend(t, IPTablesConfig{DefaultTTL: time.Hour}, false)
	mustStart(t, fb)
	open := func(seq int, ttl time.Duration) func(context.Context) error {
		t.Helper()
		c, err := fb.Open(ctx, Pinhole{Session: 1, Seq: seq, From: from4, To: netip.AddrPortFrom(to4.Addr(), uint16(40000+seq)), TTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	long := open(1, 0) // the default: an hour
	slow := open(2, 400*time.Millisecond)
	fast := open(3, 50*time.Millisecond) // opened last, expires first: wakes the reaper
	start := time.Now()
	waitFor(t, 2*time.Second, "the 50ms pinhole expires", func() bool { return fb.Active() == 2 })
	if got := fb.v4.rules("filter", "FTPGATE-INPUT"); len(got) != 2 || strings.Contains(strings.Join(got, ""), "p=3") {
		t.Errorf("after the first expiry: %q", got)
	}
	waitFor(t, 2*time.Second, "the 400ms pinhole expires", func() bool {
		return fb.Active() == 1 && strings.Count(fb.logs.String(), `msg="pinhole expired"`) == 2
	})
	if e := time.Since(start); e < 300*time.Millisecond {
		t.Errorf("400ms pinhole expired after %s", e)
	}
	wantChain(t, fb.v4, "filter/FTPGATE-INPUT",
		`-s 198.19.0.2/32 -d 198.19.0.1/32 -p tcp -m tcp --dport 40001 -m conntrack --ctstate NEW -m comment --comment "ftpgate s=1 p=1" -j ACCEPT`)
	// Closing after expiry: nil, and nothing deleted twice.
	for _, c := range []func(context.Context) error{fast, slow, long, long} {
		if err := c(ctx); err != nil {
			t.Errorf("close = %v", err)
		}
	}
	if total, most := fb.v4.totalDeleted(); total != 3 || most != 1 {
		t.Errorf("deleted %d rules, one of them %d times; want 3, once each", total, most)
	}
	if c := strings.Count(fb.logs.String(), `msg="pinhole expired"`); c != 2 {
		t.Errorf("%d \"pinhole expired\" lines, want 2:\n%s", c, fb.logs)
	}
}

func TestReaperRetries(t *testing.T) {
	fb := newFakeBackend(t, IPTablesConfig{}, false)
	mustStart(t, fb)
	var mu sync.Mutex
	failing := true
	fb.v4.setFail(func(op, _, _ string, _ []string) error {
		mu.Lock()
		defer mu.Unlock()
		if op == "delete" && failing {
			return &fakeErr{msg: "iptables: Resource temporarily unavailable."}
		}
		return nil
	})
	if _, err := fb.Open(context.Background(), Pinhole{From: from4, To: to4, TTL: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the reaper tries", func() bool { return fb.v4.count("delete") > 0 })
	mu.Lock()
	failing = false
	mu.Unlock()
	waitFor(t, 3*time.Second, "the reaper retries", func() bool {
		return fb.Active() == 0 && strings.Contains(fb.logs.String(), `msg="pinhole expired"`)
	})
	if !strings.Contains(fb.logs.String(), "removing expired pinhole failed; retrying") {
		t.Errorf("logs:\n%s", fb.logs)
	}
}

// TestCloseRacesReaper closes pinholes while they expire: every rule is
// deleted exactly once and every close returns nil.
func TestCloseRacesReaper(t *testing.T) {
	ctx := context.Background()
	fb := newFakeBackend(t, IPTablesConfig{}, true)
	mustStart(t, fb)
	const n = 100
	closers := make([]func(context.Context) error, n)
	for i := range n {
		p := Pinhole{Session: uint64(i), Seq: i, From: from4, To: netip.AddrPortFrom(to4.Addr(), uint16(30000+i)),
			TTL: time.Duration(i%10) * time.Millisecond}
		if i%2 == 1 {
			p.From, p.To = from6, netip.AddrPortFrom(to6.Addr(), p.To.Port())
		}
		if i%3 == 0 {
			p.Deliver, p.RedirectPort = Redirect, 2121
		}
		if p.TTL == 0 {
			p.TTL = time.Millisecond / 2
		}
		var err error
		if closers[i], err = fb.Open(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for i, c := range closers {
		wg.Go(func() {
			time.Sleep(time.Duration(i%7) * time.Millisecond)
			if err := c(ctx); err != nil {
				t.Errorf("close %d = %v", i, err)
			}
		})
	}
	wg.Wait()
	if a := fb.Active(); a != 0 {
		t.Errorf("Active() = %d", a)
	}
	total := 0
	for _, f := range fb.fakes() {
		for _, tc := range ourChains {
			wantChain(t, f, tc)
		}
		got, most := f.totalDeleted()
		total += got
		if most != 1 {
			t.Errorf("a rule was deleted %d times", most)
		}
	}
	if want := n + (n+2)/3; total != want {
		t.Errorf("%d rules deleted, want %d", total, want)
	}
}

func TestStopStopsReaper(t *testing.T) {
	fb := newFakeBackend(t, IPTablesConfig{}, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := fb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	fb.mu.Lock()
	r := fb.reaper
	fb.mu.Unlock()
	if err := fb.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !r.finished() {
		t.Error("reaper still running after Stop")
	}
	// A cancelled Start context stops the reaper too; a later Start starts
	// a new one.
	if err := fb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	fb.mu.Lock()
	r = fb.reaper
	fb.mu.Unlock()
	cancel()
	waitFor(t, time.Second, "the reaper stops with its context", r.finished)
	if err := fb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := fb.Open(context.Background(), Pinhole{From: from4, To: to4, TTL: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the new reaper works", func() bool { return fb.Active() == 0 })
}

func TestMetrics(t *testing.T) {
	ctx := context.Background()
	fb := newFakeBackend(t, IPTablesConfig{}, false)
	mustStart(t, fb)
	var closers []func(context.Context) error
	for i := range 3 {
		c, err := fb.Open(ctx, Pinhole{Seq: i, From: from4, To: to4})
		if err != nil {
			t.Fatal(err)
		}
		closers = append(closers, c)
	}
	wantMetric(t, fb.reg, `
# HELP ftpgate_pinholes_active Pinholes currently installed in the firewall.
# TYPE ftpgate_pinholes_active gauge
ftpgate_pinholes_active 3
`, "ftpgate_pinholes_active")
	if err := closers[0](ctx); err != nil {
		t.Fatal(err)
	}
	_ = closers[0](ctx) // already closed: not an operation
	wantMetric(t, fb.reg, `
# HELP ftpgate_pinholes_active Pinholes currently installed in the firewall.
# TYPE ftpgate_pinholes_active gauge
ftpgate_pinholes_active 2
`, "ftpgate_pinholes_active")
	if got := histCount(t, fb.reg, "open"); got != 3 {
		t.Errorf("open histogram count = %d, want 3", got)
	}
	if got := histCount(t, fb.reg, "close"); got != 1 {
		t.Errorf("close histogram count = %d, want 1", got)
	}
	if !strings.Contains(fb.logs.String(), `level=DEBUG msg="pinhole opened" pinhole="s=0 p=2 198.19.0.2 -> 198.19.0.1:40001 accept-local" seconds=`) {
		t.Errorf("no debug line for open:\n%s", fb.logs)
	}
	if !strings.Contains(fb.logs.String(), `level=DEBUG msg="pinhole closed" pinhole="s=0 p=0 198.19.0.2 -> 198.19.0.1:40001 accept-local" seconds=`) {
		t.Errorf("no debug line for close:\n%s", fb.logs)
	}
	if err := fb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if v := testutil.ToFloat64(fb.m.active); v != 0 {
		t.Errorf("active gauge after Stop = %v", v)
	}

	// A second backend on the same registry is refused, not a panic.
	reg := prometheus.NewRegistry()
	c, _ := IPTablesConfig{Registerer: reg}.withDefaults()
	fam := &family{name: "IPv4", ipt: newFakeIPT()}
	if _, err := newIPTables(c, fam, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := newIPTables(c, fam, nil, nil); err == nil || !strings.Contains(err.Error(), "registering pinhole metrics") {
		t.Errorf("second registration: %v", err)
	}
}

func wantMetric(t *testing.T, reg *prometheus.Registry, want string, names ...string) {
	t.Helper()
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
}

func histCount(t *testing.T, reg *prometheus.Registry, op string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "ftpgate_pinhole_op_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "op" && l.GetValue() == op {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	t.Fatalf("no histogram for op %q", op)
	return 0
}
