package rules

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// repairs returns ftpgate_firewall_repairs_total{backend} on reg.
func repairs(t *testing.T, reg *prometheus.Registry, backend string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "ftpgate_firewall_repairs_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "backend" && l.GetValue() == backend {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no ftpgate_firewall_repairs_total{backend=%q}", backend)
	return 0
}

// wipeFilter does to f what `iptables-restore` of a filter table without
// ftpgate's chains does: the jump from INPUT and ftpgate's filter chains
// are gone, the operator's rules stay.
func wipeFilter(f *fakeIPT) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.chains[key("filter", "INPUT")] = slices.DeleteFunc(f.chains[key("filter", "INPUT")],
		func(r string) bool { return strings.Contains(r, "FTPGATE") })
	f.chains[key("filter", "FORWARD")] = slices.DeleteFunc(f.chains[key("filter", "FORWARD")],
		func(r string) bool { return strings.Contains(r, "FTPGATE") })
	delete(f.chains, key("filter", "FTPGATE-INPUT"))
	delete(f.chains, key("filter", "FTPGATE-FORWARD"))
}

func TestRepairIPTables(t *testing.T) {
	ctx := context.Background()
	fb := newFakeBackend(t, IPTablesConfig{}, true)
	fb.checkEvery = 20 * time.Millisecond
	if got := repairs(t, fb.reg, "iptables"); got != 0 {
		t.Fatalf("repairs = %v before Start, want 0", got)
	}
	mustStart(t, fb)
	if _, err := fb.Open(ctx, Pinhole{Seq: 1, From: from4, To: to4, TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	want := fb.v4.rules("filter", "FTPGATE-INPUT")
	if len(want) != 1 {
		t.Fatalf("FTPGATE-INPUT = %q, want one pinhole", want)
	}
	time.Sleep(100 * time.Millisecond) // checks that find nothing missing repair nothing
	if got := repairs(t, fb.reg, "iptables"); got != 0 {
		t.Fatalf("repairs = %v with nothing removed, want 0", got)
	}
	wipeFilter(fb.v4)
	deadline := time.Now().Add(5 * time.Second)
	for repairs(t, fb.reg, "iptables") == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := repairs(t, fb.reg, "iptables"); got != 1 {
		t.Fatalf("repairs = %v after the wipe, want 1", got)
	}
	fb.mustLock(t)
	wantChain(t, fb.v4, "filter/FTPGATE-INPUT", want...)
	if rs := fb.v4.rules("filter", "INPUT"); len(rs) != 1 || rs[0] != "-j FTPGATE-INPUT" {
		t.Errorf("INPUT = %q, want the jump back", rs)
	}
	fb.unlock()
	logs := fb.logs.String()
	if !strings.Contains(logs, `level=WARN msg="firewall rules of ftpgate were removed by someone else: reinstalled" backend=iptables missing="IPv4 filter/INPUT -> FTPGATE-INPUT, IPv4 filter/FORWARD -> FTPGATE-FORWARD" pinholes_restored=1 pinholes_open=1`) {
		t.Errorf("no WARN of the repair in the logs:\n%s", logs)
	}
}

// mustLock takes the backend's lock, so that no check runs meanwhile.
func (fb *fakeBackend) mustLock(t *testing.T) {
	t.Helper()
	if err := fb.lock(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestRepairLabelAfterFallback: the iptables backend inside Netlink counts
// its repairs as "iptables" once Netlink has fallen back to it (its
// metrics were made with the label "netlink").
func TestRepairLabelAfterFallback(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg, "netlink")
	if err != nil {
		t.Fatal(err)
	}
	repairLog(slog.New(slog.DiscardHandler), m, "iptables", []string{"IPv4 filter/INPUT -> FTPGATE-INPUT"}, 0, 0, nil)
	for backend, want := range map[string]float64{"iptables": 1, "netlink": 0} {
		if got := testutil.ToFloat64(m.repairs.WithLabelValues(backend)); got != want {
			t.Errorf(`ftpgate_firewall_repairs_total{backend=%q} = %v, want %v`, backend, got, want)
		}
	}
}
