//go:build integration

// Integration tests of the nftables backend against the real kernel, on a
// native nftables firewall (table inet filter, policy drop) like Debian's
// /etc/nftables.conf, with no iptables involved. They run in the same
// binary, and so behind the same TestMain guard, as integration_test.go.

package rules

import (
	"context"
	"log/slog"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// operatorRuleset is the operator's own firewall: a stateful inet table
// that drops whatever it does not know, as Debian's /etc/nftables.conf
// with policy drop does.
const operatorRuleset = `table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		ct state invalid drop
		iifname "lo" tcp dport 1 accept comment "the operator's own rule"
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
	}
	chain output {
		type filter hook output priority filter; policy accept;
	}
}
`

// resetNftables empties the whole ruleset of the test's namespace, now
// and when the test ends, and loads operatorRuleset.
func resetNftables(t testing.TB) {
	t.Helper()
	tool(t, "nft", "flush", "ruleset")
	t.Cleanup(func() {
		mustBeIsolated(t)
		if out, err := exec.Command("nft", "flush", "ruleset").CombinedOutput(); err != nil {
			t.Errorf("nft flush ruleset: %v: %s", err, out)
		}
	})
	mustBeIsolated(t)
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(operatorRuleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("loading the operator's ruleset: %v: %s", err, out)
	}
}

// ruleset returns `nft list ruleset`.
func ruleset(t *testing.T) string {
	t.Helper()
	return tool(t, "nft", "list", "ruleset")
}

// newNft builds an NftablesBackend on cfg with a debug logger shown if the
// test fails. It is stopped when the test ends unless crash is set.
func newNft(t testing.TB, cfg NftablesConfig, crash bool) *NftablesBackend {
	t.Helper()
	logs := &syncBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b, err := NewNftables(cfg)
	if err != nil {
		t.Fatalf("NewNftables: %v", err)
	}
	t.Cleanup(func() {
		if !crash {
			if err := b.Stop(context.Background()); err != nil {
				t.Errorf("Stop: %v", err)
			}
		}
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if t.Failed() {
			t.Logf("backend logs:\n%s", logs)
		}
	})
	return b
}

var chainCfg = NftablesConfig{Table: "inet filter", Chains: []string{"input", "forward"}}

// nftChain returns the rules of one chain of the operator's table, one a
// line, as `nft list chain` prints them (without handles).
func nftChain(t *testing.T, chain string) []string {
	t.Helper()
	var rules []string
	for _, l := range strings.Split(tool(t, "nft", "list", "chain", "inet", "filter", chain), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "table") && !strings.HasPrefix(l, "chain") && l != "}" && !strings.HasPrefix(l, "type ") {
			rules = append(rules, l)
		}
	}
	return rules
}

// TestIntegrationNftablesChain: attach chain. Start adds ftpgate's chain,
// its sets and one jump at the top of input and forward; pinholes admit
// exactly their connection through the operator's policy drop; Stop leaves
// the ruleset exactly as the operator wrote it.
func TestIntegrationNftablesChain(t *testing.T) {
	resetNftables(t)
	before := ruleset(t)
	wantDropped(t, peer4, echoServer(t, gw4), "the operator's policy drop, before ftpgate starts")

	b := newNft(t, chainCfg, true)
	for range 2 { // a second Start replaces the first's objects
		if err := b.Start(t.Context()); err != nil {
			t.Fatalf("Start: %v", err)
		}
	}
	for _, c := range []string{"input", "forward"} {
		rules := nftChain(t, c)
		if len(rules) == 0 || rules[0] != "jump FTPGATE" || count(rules, "jump FTPGATE") != 1 {
			t.Errorf("chain %s = %q, want one jump FTPGATE, first", c, rules)
		}
	}
	if rules := nftChain(t, "output"); slices.Contains(rules, "jump FTPGATE") {
		t.Errorf("chain output = %q, want no jump (not configured)", rules)
	}
	got := tool(t, "nft", "list", "chain", "inet", "filter", "FTPGATE")
	for _, want := range b.OperatorRules()["input"] {
		// nft prints what it can shorten; the set names and the key are there.
		set := want[strings.Index(want, "@"):]
		if !strings.Contains(got, set) {
			t.Errorf("chain FTPGATE lacks a rule for %s:\n%s", set, got)
		}
	}
	for _, s := range []string{"FTPGATE-in4", "FTPGATE-fwd4", "FTPGATE-rdr4", "FTPGATE-dnat4", "FTPGATE-in6", "FTPGATE-fwd6", "FTPGATE-rdr6", "FTPGATE-dnat6"} {
		tool(t, "nft", "list", "set", "inet", "filter", s) // fails if absent
	}
	if tables := nftTables(t); !strings.Contains(tables, "table ip FTPGATE") || !strings.Contains(tables, "table ip6 FTPGATE") {
		t.Errorf("NAT tables missing: %s", tables)
	}

	testConnection(t, b)
	testTimeout(t, b)

	// A DNAT pinhole: its filter element is in the operator's table, its
	// NAT elements in ftpgate's own.
	closeFn, err := b.Open(t.Context(), Pinhole{Session: 3, Seq: 1, From: peer4, To: netip.AddrPortFrom(gw4, 40002),
		Deliver: DNAT, DNATTo: netip.MustParseAddrPort("198.19.0.5:30000"), SNATTo: gw4})
	if err != nil {
		t.Fatal(err)
	}
	if s := tool(t, "nft", "list", "set", "inet", "filter", "FTPGATE-dnat4"); !strings.Contains(s, "198.18.0.2 . 198.19.0.5 . 30000") {
		t.Errorf("FTPGATE-dnat4 lacks the pinhole:\n%s", s)
	}
	if m := nftMap(t, "ip", "dnat_to"); !strings.Contains(m, "198.18.0.2 . 198.18.0.1 . 40002") {
		t.Errorf("dnat_to lacks the pinhole:\n%s", m)
	}
	if err := closeFn(t.Context()); err != nil {
		t.Fatal(err)
	}
	if s := tool(t, "nft", "list", "set", "inet", "filter", "FTPGATE-dnat4"); strings.Contains(s, "198.19.0.5") {
		t.Errorf("FTPGATE-dnat4 keeps the closed pinhole:\n%s", s)
	}

	if _, err := b.Open(t.Context(), Pinhole{Session: 4, Seq: 1, From: peer4, To: netip.AddrPortFrom(gw4, 40003)}); err != nil {
		t.Fatal(err)
	}
	if err := b.Stop(t.Context()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if after := ruleset(t); after != before {
		t.Errorf("ruleset after Stop differs from the operator's:\n--- before\n%s\n--- after\n%s", before, after)
	}
	if _, err := b.Open(t.Context(), Pinhole{Session: 4, Seq: 2, From: peer4, To: netip.AddrPortFrom(gw4, 40004)}); err == nil {
		t.Error("Open after Stop succeeded")
	}
}

// testTimeout: a pinhole admits its connection until its TTL, and nothing
// after, without a close.
func testTimeout(t *testing.T, ph Pinholer) {
	t.Helper()
	dst := echoServer(t, gw4)
	ttl := time.Second
	if _, err := ph.Open(t.Context(), Pinhole{Session: 2, Seq: 1, From: peer4, To: dst, TTL: ttl}); err != nil {
		t.Fatal(err)
	}
	c, err := dial(peer4, dst)
	if err != nil {
		t.Fatalf("through the pinhole: %v", err)
	}
	c.Close()
	time.Sleep(ttl + 300*time.Millisecond)
	wantDropped(t, peer4, dst, "pinhole expired")
}

// TestIntegrationNftablesKernelExpiry: the process dies (no close, no
// timer, no Stop); the kernel removes the element at its timeout, and a
// Cleanup by a new process restores the operator's ruleset.
func TestIntegrationNftablesKernelExpiry(t *testing.T) {
	resetNftables(t)
	before := ruleset(t)
	b := newNft(t, chainCfg, true)
	if err := b.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	ttl := 2 * time.Second
	if _, err := b.Open(t.Context(), Pinhole{Session: 7, Seq: 1, From: peer4, To: netip.AddrPortFrom(gw4, 40001), TTL: ttl}); err != nil {
		t.Fatal(err)
	}
	opened := time.Now()
	b.op.Lock()
	b.books.forget()
	b.op.Unlock()
	in4 := func() string { return tool(t, "nft", "list", "set", "inet", "filter", "FTPGATE-in4") }
	if !strings.Contains(in4(), "40001") {
		t.Fatalf("FTPGATE-in4 lacks the pinhole right after the crash:\n%s", in4())
	}
	for strings.Contains(in4(), "40001") {
		if time.Since(opened) > ttl+2*time.Second {
			t.Fatalf("element still there %s after Open with TTL %s:\n%s", time.Since(opened), ttl, in4())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if d := time.Since(opened); d < ttl-100*time.Millisecond {
		t.Errorf("element gone after %s, before its TTL %s", d, ttl)
	}

	cleaner := newNft(t, chainCfg, true)
	for range 2 { // the second finds nothing to remove
		if err := cleaner.Cleanup(t.Context()); err != nil {
			t.Fatalf("Cleanup: %v", err)
		}
		if after := ruleset(t); after != before {
			t.Errorf("ruleset after Cleanup differs from the operator's:\n--- before\n%s\n--- after\n%s", before, after)
		}
	}
}

// TestIntegrationNftablesSets: attach sets. ftpgate adds its sets to the
// table and never changes a chain; once the operator adds the rules of
// OperatorRules to their chains, pinholes work; Stop empties the sets the
// operator's rules reference and leaves every chain alone.
func TestIntegrationNftablesSets(t *testing.T) {
	resetNftables(t)
	before := ruleset(t)
	chains := func() map[string][]string {
		m := map[string][]string{}
		for _, c := range []string{"input", "forward", "output"} {
			m[c] = nftChain(t, c)
		}
		return m
	}
	b := newNft(t, NftablesConfig{Table: "inet filter", Attach: NftAttachSets}, false)
	if err := b.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	orig := chains()
	if got := tool(t, "nft", "list", "table", "inet", "filter"); strings.Contains(got, "chain FTPGATE") || !strings.Contains(got, "set FTPGATE-in4") {
		t.Errorf("attach sets: want the sets and no chain of ftpgate's:\n%s", got)
	}
	dst := echoServer(t, gw4)
	if _, err := b.Open(t.Context(), Pinhole{Session: 1, Seq: 1, From: peer4, To: dst}); err != nil {
		t.Fatal(err)
	}
	wantDropped(t, peer4, dst, "pinhole open, but the operator has not added the rules yet")

	// The operator adds the lines, after their established accept.
	for chain, rules := range b.OperatorRules() {
		for _, r := range rules {
			tool(t, "nft", append([]string{"add", "rule", "inet", "filter", chain}, strings.Fields(r)...)...)
		}
	}
	withLines := chains()
	c, err := dial(peer4, dst)
	if err != nil {
		t.Fatalf("through the pinhole with the operator's lines: %v", err)
	}
	c.Close()
	testConnection(t, b)
	testTimeout(t, b)

	// A restart keeps the sets the operator's rules reference, emptied.
	if err := b.Start(t.Context()); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	if s := tool(t, "nft", "list", "set", "inet", "filter", "FTPGATE-in4"); strings.Contains(s, "elements") {
		t.Errorf("FTPGATE-in4 after a restart:\n%s", s)
	}
	if _, err := b.Open(t.Context(), Pinhole{Session: 5, Seq: 1, From: peer4, To: dst}); err != nil {
		t.Fatal(err)
	}
	if err := b.Stop(t.Context()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if got := chains(); !equalChains(got, withLines) {
		t.Errorf("chains after Stop = %q, want the operator's %q", got, withLines)
	}
	if s := tool(t, "nft", "list", "set", "inet", "filter", "FTPGATE-in4"); strings.Contains(s, "elements") {
		t.Errorf("FTPGATE-in4 after Stop:\n%s", s)
	}
	wantDropped(t, peer4, dst, "ftpgate stopped")

	// Without the operator's lines, Cleanup removes the sets too.
	tool(t, "nft", "flush", "ruleset")
	load := exec.Command("nft", "-f", "-")
	load.Stdin = strings.NewReader(operatorRuleset)
	if out, err := load.CombinedOutput(); err != nil {
		t.Fatalf("reloading the operator's ruleset: %v: %s", err, out)
	}
	if err := b.Start(t.Context()); err != nil {
		t.Fatalf("third Start: %v", err)
	}
	if got := chains(); !equalChains(got, orig) {
		t.Errorf("chains after Start = %q, want the operator's %q", got, orig)
	}
	if err := b.Cleanup(t.Context()); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if after := ruleset(t); after != before {
		t.Errorf("ruleset after Cleanup differs from the operator's:\n--- before\n%s\n--- after\n%s", before, after)
	}
}

// TestIntegrationNftablesSetsDeclared: attach sets where the operator's
// file declares the sets and matches them before ftpgate starts, as it
// must to load at boot. Start keeps them; pinholes work; Stop empties them
// and the operator's ruleset is otherwise as loaded.
func TestIntegrationNftablesSetsDeclared(t *testing.T) {
	tool(t, "nft", "flush", "ruleset")
	t.Cleanup(func() { _ = exec.Command("nft", "flush", "ruleset").Run() })
	b := newNft(t, NftablesConfig{Table: "inet filter", Attach: NftAttachSets}, false)
	var decl, input, forward strings.Builder
	for _, name := range b.setNames() {
		typ := "ipv4_addr . ipv4_addr . inet_service"
		if strings.HasSuffix(name, "6") {
			typ = strings.ReplaceAll(typ, "ipv4", "ipv6")
		}
		if strings.Contains(name, "-rdr") {
			typ = strings.Replace(typ, " . ipv4_addr", "", 1)
			typ = strings.Replace(typ, " . ipv6_addr", "", 1)
		}
		decl.WriteString("\tset " + name + " { type " + typ + "; flags timeout; }\n")
	}
	for _, r := range b.OperatorRules()["input"] {
		input.WriteString("\t\t" + r + "\n")
	}
	for _, r := range b.OperatorRules()["forward"] {
		forward.WriteString("\t\t" + r + "\n")
	}
	file := "table inet filter {\n" + decl.String() +
		"\tchain input { type filter hook input priority filter; policy drop;\n\t\tct state established,related accept\n" + input.String() + "\t}\n" +
		"\tchain forward { type filter hook forward priority filter; policy drop;\n\t\tct state established,related accept\n" + forward.String() + "\t}\n}\n"
	mustBeIsolated(t)
	load := exec.Command("nft", "-f", "-")
	load.Stdin = strings.NewReader(file)
	if out, err := load.CombinedOutput(); err != nil {
		t.Fatalf("loading the operator's file: %v: %s\n%s", err, out, file)
	}
	loaded := ruleset(t)
	loadedFilter := tool(t, "nft", "list", "table", "inet", "filter")
	if err := b.Start(t.Context()); err != nil {
		t.Fatalf("Start over the operator's declared sets: %v", err)
	}
	filter := func() string { return tool(t, "nft", "list", "table", "inet", "filter") }
	if got := filter(); got != loadedFilter {
		t.Errorf("Start changed the operator's table:\n--- loaded\n%s\n--- after Start\n%s", loadedFilter, got)
	}
	testConnection(t, b)
	if err := b.Stop(t.Context()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if got := ruleset(t); got != loaded {
		t.Errorf("Stop left the ruleset different from the operator's:\n--- loaded\n%s\n--- after Stop\n%s", loaded, got)
	}
}

func equalChains(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// TestIntegrationNftablesStartErrors: a table or chain that does not
// exist, or a chain that is no base chain, is an error that says so, and
// Start changes nothing.
func TestIntegrationNftablesStartErrors(t *testing.T) {
	resetNftables(t)
	tool(t, "nft", "add", "chain", "inet", "filter", "mine")
	before := ruleset(t)
	for _, tc := range []struct {
		cfg  NftablesConfig
		want string
	}{
		{NftablesConfig{Table: "inet nosuch", Chains: []string{"input"}}, "does not exist"},
		{NftablesConfig{Table: "ip filter", Attach: NftAttachSets}, "does not exist"},
		{NftablesConfig{Table: "inet filter", Chains: []string{"input", "nosuch"}}, "chain nosuch does not exist"},
		{NftablesConfig{Table: "inet filter", Chains: []string{"mine"}}, "not a base chain"},
	} {
		b := newNft(t, tc.cfg, true)
		err := b.Start(t.Context())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Start with %+v: %v, want an error containing %q", tc.cfg, err, tc.want)
		}
		if after := ruleset(t); after != before {
			t.Errorf("Start with %+v changed the ruleset:\n%s", tc.cfg, after)
		}
	}
}
