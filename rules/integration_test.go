//go:build integration

// Integration tests and benchmarks of the iptables backend against the real
// kernel, for both iptables variants (iptables-nft and iptables-legacy, as
// subtests). They change the firewall, so they run only in a network
// namespace of their own: TestMain refuses to run in the root namespace. Run
// them as root, inside a fresh namespace that disappears with the process:
//
//	make integration    (or: go test -c -tags integration -o bin/rules.test ./rules &&
//	    unshare --net -- bin/rules.test -test.v -test.count=1)
//
// and the benchmarks:
//
//	make bench-pinholes (unshare --net -- bin/rules.test -test.run=NONE -test.bench=. -test.benchtime=200x)
//
// The binary brings up lo in its namespace and puts 198.18.0.1-3 and
// 2001:db8::1-3 on it. Every test starts and ends with every table of both
// variants flushed and every policy ACCEPT. A missing iptables binary fails
// the test; nothing is skipped.
package rules

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// variant is one iptables variant under test.
type variant struct {
	name    string // subtest name
	v4, v6  string // binaries
	version string // what Variant() must say
}

var variants = []variant{
	{"nft", "iptables-nft", "ip6tables-nft", "nf_tables"},
	{"legacy", "iptables-legacy", "ip6tables-legacy", "legacy"},
}

var allBinaries = []string{"iptables-nft", "ip6tables-nft", "iptables-legacy", "ip6tables-legacy"}

// Addresses on lo inside the test's namespace.
var (
	gw4    = netip.MustParseAddr("198.18.0.1") // the listener: "the gateway"
	peer4  = netip.MustParseAddr("198.18.0.2") // the expected peer
	thief4 = netip.MustParseAddr("198.18.0.3") // anybody else
	gw6    = netip.MustParseAddr("2001:db8::1")
	peer6  = netip.MustParseAddr("2001:db8::2")
	thief6 = netip.MustParseAddr("2001:db8::3")
)

// testFamilies are the addresses on lo, by family, for tests that run once
// per family.
var testFamilies = []struct {
	name            string
	gw, peer, thief netip.Addr
}{{"IPv4", gw4, peer4, thief4}, {"IPv6", gw6, peer6, thief6}}

func TestMain(m *testing.M) {
	if err := isolated(); err != nil {
		fmt.Fprintf(os.Stderr, "rules integration tests refuse to run: %v\n"+
			"run them in a network namespace of their own, e.g.\n"+
			"\tunshare --net -- %s -test.v\n", err, os.Args[0])
		os.Exit(2)
	}
	if err := setUpLoopback(); err != nil {
		fmt.Fprintf(os.Stderr, "rules integration tests: setting up lo: %v\n", err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// initNetNS is how /proc/PID/ns/net reads in the kernel's initial network
// namespace on kernels that give it a fixed inode (PROC_NET_INIT_INO,
// 0xEFFFFFF9; dynamic inodes start at 0xF0000000, so no other namespace
// reads like this).
const initNetNS = "net:[4026531833]"

// fallbackTunnels are the devices the kernel creates in every new network
// namespace once their modules are loaded.
var fallbackTunnels = []string{"sit0", "tunl0", "ip6tnl0", "gre0", "gretap0", "erspan0",
	"ip6gre0", "ip6gretap0", "ip6erspan0", "ip_vti0", "ip6_vti0"}

// testLinks are the interfaces that the tests themselves create in their
// namespace (the veth pair of TestIntegrationTPROXY).
var testLinks = []string{"tpa", "tpb"}

// isolated returns an error unless this process is in a network namespace
// other than init's. It compares /proc/self/ns/net with /proc/1/ns/net. If
// PID 1 cannot be inspected (a sandboxed init, as where these tests were
// written), it accepts only a namespace that looks like `unshare --net`
// made it: no interface but lo, the kernel's fallback tunnels and
// testLinks.
func isolated() error {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return fmt.Errorf("cannot tell which network namespace this is: %w", err)
	}
	if self == initNetNS {
		return fmt.Errorf("this is the kernel's initial network namespace (%s)", self)
	}
	root, err := os.Readlink("/proc/1/ns/net")
	if err == nil {
		if self == root {
			return fmt.Errorf("this is the root network namespace (%s, as PID 1's)", self)
		}
		return nil
	}
	ifs, ierr := net.Interfaces()
	if ierr != nil {
		return fmt.Errorf("cannot read /proc/1/ns/net (%v) nor list interfaces: %w", err, ierr)
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback == 0 && !slices.Contains(fallbackTunnels, ifc.Name) && !slices.Contains(testLinks, ifc.Name) {
			return fmt.Errorf("cannot read /proc/1/ns/net (%v), and this namespace (%s) has interface %s: not a fresh namespace", err, self, ifc.Name)
		}
	}
	return nil
}

// mustBeIsolated checks again before any command that changes the network.
func mustBeIsolated(tb testing.TB) {
	tb.Helper()
	if err := isolated(); err != nil {
		tb.Fatalf("refusing to touch the network: %v", err)
	}
}

func setUpLoopback() error {
	cmds := [][]string{{"link", "set", "lo", "up"}}
	for _, a := range []netip.Addr{gw4, peer4, thief4} {
		cmds = append(cmds, []string{"addr", "replace", a.String() + "/32", "dev", "lo"})
	}
	for _, a := range []netip.Addr{gw6, peer6, thief6} {
		cmds = append(cmds, []string{"-6", "addr", "replace", a.String() + "/128", "dev", "lo", "nodad"})
	}
	for _, c := range cmds {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(c, " "), err, out)
		}
	}
	return nil
}

// run runs one iptables command and returns its output.
func run(tb testing.TB, bin string, args ...string) string {
	tb.Helper()
	mustBeIsolated(tb)
	out, err := exec.Command(bin, append([]string{"-w"}, args...)...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v: %s", bin, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// list returns `BIN -t TABLE -S [CHAIN]` as lines, without the comment
// iptables-nft adds when legacy tables exist too ("# Warning: iptables-legacy
// tables present").
func list(tb testing.TB, bin, table string, chain ...string) []string {
	tb.Helper()
	var lines []string
	for _, l := range strings.Split(run(tb, bin, append([]string{"-t", table, "-S"}, chain...)...), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return lines
}

// snapshot returns the filter and nat tables of bin, each line prefixed
// with its table.
func snapshot(tb testing.TB, bin string) []string {
	tb.Helper()
	var s []string
	for _, table := range []string{"filter", "nat"} {
		for _, l := range list(tb, bin, table) {
			s = append(s, table+" "+l)
		}
	}
	return s
}

// resetFirewall flushes and deletes every chain of every variant and sets
// every filter policy to ACCEPT, now and when the test ends.
func resetFirewall(tb testing.TB) {
	tb.Helper()
	reset := func() {
		for _, bin := range allBinaries {
			if _, err := exec.LookPath(bin); err != nil {
				continue // the variant's own test fails on this
			}
			for _, table := range []string{"filter", "nat"} {
				run(tb, bin, "-t", table, "-F")
				run(tb, bin, "-t", table, "-X")
			}
			for _, c := range []string{"INPUT", "FORWARD", "OUTPUT"} {
				run(tb, bin, "-P", c, "ACCEPT")
			}
		}
	}
	reset()
	tb.Cleanup(reset)
}

// forEachVariant runs f as one subtest per variant on a clean firewall.
func forEachVariant(t *testing.T, f func(t *testing.T, v variant)) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			needBinaries(t, v)
			resetFirewall(t)
			f(t, v)
		})
	}
}

// needBinaries fails (never skips) if a variant's binaries are missing.
func needBinaries(tb testing.TB, v variant) {
	tb.Helper()
	for _, bin := range []string{v.v4, v.v6} {
		if _, err := exec.LookPath(bin); err != nil {
			tb.Fatalf("variant %s needs %s: %v", v.name, bin, err)
		}
	}
}

// newBackend makes an IPTables for v; its logs are shown if the test fails.
// It is stopped when the test ends unless crash is set.
func newBackend(tb testing.TB, v variant, cfg IPTablesConfig, crash bool) *IPTables {
	tb.Helper()
	return newTestBackend(tb, v, cfg, crash, NewIPTables)
}

// newTestBackend builds a backend with build, on v's binaries and a debug
// logger whose output is shown if the test fails, and stops it when the
// test ends unless crash is set.
func newTestBackend[B interface{ Stop(context.Context) error }](tb testing.TB, v variant, cfg IPTablesConfig, crash bool,
	build func(IPTablesConfig) (B, error)) B {
	tb.Helper()
	logs := &syncBuffer{}
	cfg.Path, cfg.Path6 = v.v4, v.v6
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b, err := build(cfg)
	if err != nil {
		tb.Fatalf("building the backend: %v", err)
	}
	tb.Cleanup(func() {
		if !crash {
			if err := b.Stop(context.Background()); err != nil {
				tb.Errorf("Stop: %v", err)
			}
		}
		if tb.Failed() {
			tb.Logf("backend logs:\n%s", logs)
		}
	})
	return b
}

func start(tb testing.TB, ipt *IPTables, ctx context.Context) {
	tb.Helper()
	if err := ipt.Start(ctx); err != nil {
		tb.Fatalf("Start: %v", err)
	}
}

var hookedBuiltins = []struct{ table, builtin, chain string }{
	{"filter", "INPUT", "FTPGATE-INPUT"},
	{"filter", "FORWARD", "FTPGATE-FORWARD"},
	{"nat", "PREROUTING", "FTPGATE-PREROUTING"},
	{"nat", "POSTROUTING", "FTPGATE-POSTROUTING"},
	{"nat", "OUTPUT", "FTPGATE-OUTPUT"},
}

// wantHooked checks that every chain exists and is empty, and that its
// built-in chain jumps to it exactly once, from the top.
func wantHooked(t *testing.T, bin string) {
	t.Helper()
	for _, h := range hookedBuiltins {
		if got := list(t, bin, h.table, h.chain); !slices.Equal(got, []string{"-N " + h.chain}) {
			t.Errorf("%s -t %s -S %s = %q, want the empty chain", bin, h.table, h.chain, got)
		}
		rs := list(t, bin, h.table, h.builtin)
		jump := "-A " + h.builtin + " -j " + h.chain
		if n := count(rs, jump); n != 1 || len(rs) < 2 || rs[1] != jump {
			t.Errorf("%s -t %s -S %s = %q, want %q once, first", bin, h.table, h.builtin, rs, jump)
		}
	}
}

func count(lines []string, s string) int {
	n := 0
	for _, l := range lines {
		if l == s {
			n++
		}
	}
	return n
}

// wantNoFtpgate checks that nothing of ftpgate is left in bin's tables.
func wantNoFtpgate(t *testing.T, bin string) {
	t.Helper()
	for _, l := range snapshot(t, bin) {
		if strings.Contains(l, "FTPGATE") || strings.Contains(l, "ftpgate") {
			t.Errorf("%s: left over: %s", bin, l)
		}
	}
}

func TestIntegrationStart(t *testing.T) {
	forEachVariant(t, func(t *testing.T, v variant) {
		ipt := newBackend(t, v, IPTablesConfig{}, false)
		if got := ipt.Variant(); got != v.version {
			t.Errorf("Variant() = %q, want %q", got, v.version)
		}
		start(t, ipt, t.Context())
		wantHooked(t, v.v4)
		wantHooked(t, v.v6)
		start(t, ipt, t.Context()) // twice: still one jump each
		wantHooked(t, v.v4)
		wantHooked(t, v.v6)
	})
}

func TestIntegrationStartFlushesLeftovers(t *testing.T) {
	forEachVariant(t, func(t *testing.T, v variant) {
		// What a killed ftpgate leaves: chains with pinholes, hooked twice.
		for _, bin := range []string{v.v4, v.v6} {
			from, to := "198.18.0.2", "198.18.0.1"
			if bin == v.v6 {
				from, to = "2001:db8::2", "2001:db8::1"
			}
			run(t, bin, "-N", "FTPGATE-INPUT")
			run(t, bin, "-A", "FTPGATE-INPUT", "-s", from, "-d", to, "-p", "tcp", "--dport", "40001",
				"-m", "comment", "--comment", "ftpgate s=1 p=1", "-j", "ACCEPT")
			run(t, bin, "-I", "INPUT", "1", "-j", "FTPGATE-INPUT")
			run(t, bin, "-A", "INPUT", "-j", "FTPGATE-INPUT")
			run(t, bin, "-t", "nat", "-N", "FTPGATE-PREROUTING")
			run(t, bin, "-t", "nat", "-A", "FTPGATE-PREROUTING", "-s", from, "-j", "RETURN")
			run(t, bin, "-t", "nat", "-A", "PREROUTING", "-j", "FTPGATE-PREROUTING")
		}
		ipt := newBackend(t, v, IPTablesConfig{}, false)
		start(t, ipt, t.Context())
		wantHooked(t, v.v4)
		wantHooked(t, v.v6)
	})
}

// TestIntegrationRulespecs opens a pinhole of every delivery and family and
// reads its rules back: the kernel lists each exactly as it was added (so
// that deleting by rulespec finds it), and close removes them all.
func TestIntegrationRulespecs(t *testing.T) {
	forEachVariant(t, func(t *testing.T, v variant) {
		ipt := newBackend(t, v, IPTablesConfig{}, false)
		start(t, ipt, t.Context())
		for _, p := range []Pinhole{
			{From: peer4, To: netip.AddrPortFrom(gw4, 40001)},
			{From: peer6, To: netip.AddrPortFrom(gw6, 40001)},
			{From: peer4, To: netip.AddrPortFrom(gw4, 40001), Deliver: AcceptForward},
			{From: peer6, To: netip.AddrPortFrom(gw6, 40001), Deliver: AcceptForward},
			{From: peer4, To: netip.AddrPortFrom(gw4, 40001), Deliver: Redirect, RedirectPort: 2121},
			{From: peer6, To: netip.AddrPortFrom(gw6, 40001), Deliver: Redirect, RedirectPort: 2121},
			{From: peer4, To: netip.AddrPortFrom(gw4, 40001), Deliver: DNAT, DNATTo: netip.MustParseAddrPort("198.19.0.5:30000")},
			{From: peer4, To: netip.AddrPortFrom(gw4, 40001), Deliver: DNAT, DNATTo: netip.MustParseAddrPort("198.19.0.5:30000"), SNATTo: gw4},
			{From: peer6, To: netip.AddrPortFrom(gw6, 40001), Deliver: DNAT, DNATTo: netip.MustParseAddrPort("[2001:db8:5::5]:30000"), SNATTo: gw6},
		} {
			p.Session, p.Seq = 12, 3
			bin := v.v4
			if p.From.Is6() {
				bin = v.v6
			}
			closeFn, err := ipt.Open(t.Context(), p)
			if err != nil {
				t.Fatalf("Open(%s): %v", p, err)
			}
			want := map[string][]string{}
			for _, r := range buildRules(newChains("FTPGATE"), p) {
				want[r.table+" "+r.chain] = append(want[r.table+" "+r.chain], "-A "+r.chain+" "+formatSpec(r.spec))
			}
			for _, h := range hookedBuiltins {
				got := list(t, bin, h.table, h.chain)[1:]
				if w := want[h.table+" "+h.chain]; !slices.Equal(got, w) {
					t.Errorf("%s: %s -t %s -S %s =\n\t%s\nwant\n\t%s", p, bin, h.table, h.chain,
						strings.Join(got, "\n\t"), strings.Join(w, "\n\t"))
				}
			}
			if err := closeFn(t.Context()); err != nil {
				t.Fatalf("close(%s): %v", p, err)
			}
			wantHooked(t, bin)
		}
		// The one the brief spells out, literally.
		closeFn, err := ipt.Open(t.Context(), Pinhole{Session: 12, Seq: 3, From: peer4, To: netip.AddrPortFrom(gw4, 40001)})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"-N FTPGATE-INPUT",
			`-A FTPGATE-INPUT -s 198.18.0.2/32 -d 198.18.0.1/32 -p tcp -m tcp --dport 40001 -m conntrack --ctstate NEW -m comment --comment "ftpgate s=12 p=3" -j ACCEPT`}
		if got := list(t, v.v4, "filter", "FTPGATE-INPUT"); !slices.Equal(got, want) {
			t.Errorf("got\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
		}
		if err := closeFn(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := closeFn(t.Context()); err != nil {
			t.Errorf("second close: %v", err)
		}
		if got := list(t, v.v4, "filter", "FTPGATE-INPUT"); !slices.Equal(got, want[:1]) {
			t.Errorf("after close: %q", got)
		}
	})
}

// echoServer listens on addr:0, echoes what it reads, and is closed when the
// test ends.
func echoServer(t *testing.T, addr netip.Addr) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// dial connects from src to dst, giving up after 300ms.
func dial(src netip.Addr, dst netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{Timeout: 300 * time.Millisecond, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
	return d.Dial("tcp", dst.String())
}

func wantDropped(t *testing.T, src netip.Addr, dst netip.AddrPort, why string) {
	t.Helper()
	c, err := dial(src, dst)
	if err == nil {
		c.Close()
		t.Errorf("%s -> %s connected, want it dropped (%s)", src, dst, why)
		return
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("%s -> %s: %v, want a timeout (dropped: %s)", src, dst, err, why)
	}
}

func echo(c net.Conn, msg string) error {
	if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return err
	}
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return nil
}

// TestIntegrationConnection puts a stateful firewall in front of local
// listeners (INPUT policy DROP, ESTABLISHED accepted) and shows that a
// pinhole admits exactly the connection it names.
func TestIntegrationConnection(t *testing.T) {
	forEachVariant(t, func(t *testing.T, v variant) {
		statefulInput(t, v)
		ipt := newBackend(t, v, IPTablesConfig{}, false)
		start(t, ipt, t.Context())
		testConnection(t, ipt)
	})
}

// statefulInput makes INPUT drop what it does not know, ESTABLISHED and
// RELATED accepted, for both families of v.
func statefulInput(t *testing.T, v variant) {
	for _, bin := range []string{v.v4, v.v6} {
		run(t, bin, "-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
		run(t, bin, "-P", "INPUT", "DROP")
	}
}

// testConnection shows, behind statefulInput, that an AcceptLocal pinhole
// of ph admits exactly the connection it names, and nothing after it
// closed.
func testConnection(t *testing.T, ph Pinholer) {
	for _, fam := range testFamilies {
		t.Run(fam.name, func(t *testing.T) {
			dst := echoServer(t, fam.gw)
			other := echoServer(t, fam.gw)
			wantDropped(t, fam.peer, dst, "no pinhole")

			closeFn, err := ph.Open(t.Context(), Pinhole{Session: 1, Seq: 1, From: fam.peer, To: dst})
			if err != nil {
				t.Fatal(err)
			}
			c, err := dial(fam.peer, dst)
			if err != nil {
				t.Fatalf("%s -> %s through the pinhole: %v", fam.peer, dst, err)
			}
			defer c.Close()
			if err := echo(c, "through the pinhole"); err != nil {
				t.Fatal(err)
			}
			wantDropped(t, fam.thief, dst, "pinhole is for another source")
			wantDropped(t, fam.peer, other, "pinhole is for another port")

			if err := closeFn(t.Context()); err != nil {
				t.Fatal(err)
			}
			// conntrack carries the established flow; new ones are dropped again.
			if err := echo(c, "after close"); err != nil {
				t.Errorf("established connection after the pinhole closed: %v", err)
			}
			wantDropped(t, fam.peer, dst, "pinhole closed")
		})
	}
}

func TestIntegrationReaper(t *testing.T) {
	forEachVariant(t, func(t *testing.T, v variant) {
		ipt := newBackend(t, v, IPTablesConfig{}, false)
		start(t, ipt, t.Context())
		closeFn, err := ipt.Open(t.Context(), Pinhole{Session: 5, Seq: 1, From: peer6, To: netip.AddrPortFrom(gw6, 40001), TTL: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ipt.Open(t.Context(), Pinhole{Session: 5, Seq: 2, From: peer4, To: netip.AddrPortFrom(gw4, 40001), TTL: 300 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		if n := len(list(t, v.v6, "filter", "FTPGATE-INPUT")); n != 2 {
			t.Fatalf("IPv6 FTPGATE-INPUT has %d lines, want the chain and one rule", n)
		}
		deadline := time.Now().Add(5 * time.Second)
		for len(list(t, v.v6, "filter", "FTPGATE-INPUT"))+len(list(t, v.v4, "filter", "FTPGATE-INPUT")) > 2 {
			if time.Now().After(deadline) {
				t.Fatal("pinholes still there 5s after a 300ms TTL")
			}
			time.Sleep(50 * time.Millisecond)
		}
		if n := ipt.Active(); n != 0 {
			t.Errorf("Active() = %d after expiry", n)
		}
		if err := closeFn(t.Context()); err != nil {
			t.Errorf("close after expiry = %v", err)
		}
	})
}

// otherRules adds another program's rules and chain to bin's tables.
func otherRules(t *testing.T, bin string, six bool) {
	src, dst := "198.18.5.5", "198.18.6.6"
	if six {
		src, dst = "2001:db8:5::5", "2001:db8:6::6"
	}
	run(t, bin, "-A", "INPUT", "-s", src, "-j", "ACCEPT")
	run(t, bin, "-N", "OTHER")
	run(t, bin, "-A", "OTHER", "-p", "tcp", "--dport", "22", "-m", "comment", "--comment", "not ours", "-j", "ACCEPT")
	run(t, bin, "-A", "INPUT", "-j", "OTHER")
	run(t, bin, "-A", "FORWARD", "-d", dst, "-j", "DROP")
	run(t, bin, "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "21", "-j", "REDIRECT", "--to-ports", "2121")
	run(t, bin, "-t", "nat", "-A", "POSTROUTING", "-s", src, "-j", "MASQUERADE")
}

func withoutFtpgate(lines []string) []string {
	return slices.DeleteFunc(slices.Clone(lines), func(l string) bool { return strings.Contains(l, "FTPGATE") })
}

func TestIntegrationOthersUntouched(t *testing.T) {
	forEachVariant(t, func(t *testing.T, v variant) {
		otherRules(t, v.v4, false)
		otherRules(t, v.v6, true)
		before4, before6 := snapshot(t, v.v4), snapshot(t, v.v6)
		ipt := newBackend(t, v, IPTablesConfig{}, false)
		start(t, ipt, t.Context())
		for i, p := range []Pinhole{
			{From: peer4, To: netip.AddrPortFrom(gw4, 40001)},
			{From: peer6, To: netip.AddrPortFrom(gw6, 40001), Deliver: Redirect, RedirectPort: 2121},
			{From: peer4, To: netip.AddrPortFrom(gw4, 40002), Deliver: DNAT, DNATTo: netip.MustParseAddrPort("198.19.0.5:30000"), SNATTo: gw4},
			{From: peer6, To: netip.AddrPortFrom(gw6, 40002), Deliver: AcceptForward},
		} {
			p.Seq = i
			if _, err := ipt.Open(t.Context(), p); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range []struct {
			bin    string
			before []string
		}{{v.v4, before4}, {v.v6, before6}} {
			if got := withoutFtpgate(snapshot(t, c.bin)); !slices.Equal(got, c.before) {
				t.Errorf("%s while running, others' rules =\n\t%s\nwant\n\t%s", c.bin, strings.Join(got, "\n\t"), strings.Join(c.before, "\n\t"))
			}
		}
		if err := ipt.Stop(t.Context()); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			bin    string
			before []string
		}{{v.v4, before4}, {v.v6, before6}} {
			if got := snapshot(t, c.bin); !slices.Equal(got, c.before) {
				t.Errorf("%s after Stop =\n\t%s\nwant\n\t%s", c.bin, strings.Join(got, "\n\t"), strings.Join(c.before, "\n\t"))
			}
		}
	})
}

func TestIntegrationStop(t *testing.T) {
	forEachVariant(t, func(t *testing.T, v variant) {
		ipt := newBackend(t, v, IPTablesConfig{}, false)
		start(t, ipt, t.Context())
		for i := range 4 {
			p := Pinhole{Seq: i, From: peer4, To: netip.AddrPortFrom(gw4, uint16(40000+i))}
			if i%2 == 1 {
				p.From, p.To = peer6, netip.AddrPortFrom(gw6, p.To.Port())
			}
			if _, err := ipt.Open(t.Context(), p); err != nil {
				t.Fatal(err)
			}
		}
		if err := ipt.Stop(t.Context()); err != nil {
			t.Fatal(err)
		}
		wantNoFtpgate(t, v.v4)
		wantNoFtpgate(t, v.v6)
		if n := ipt.Active(); n != 0 {
			t.Errorf("Active() = %d after Stop", n)
		}
		if err := ipt.Stop(t.Context()); err != nil {
			t.Errorf("second Stop: %v", err)
		}
	})
}

// TestIntegrationCrash kills (drops without Stop) one backend with a pinhole
// open, starts another one over its leftovers, kills that too, and cleans up.
func TestIntegrationCrash(t *testing.T) {
	forEachVariant(t, func(t *testing.T, v variant) {
		crash := func(ipt *IPTables, cancel context.CancelFunc) {
			cancel() // the reaper dies with the process
			ipt.mu.Lock()
			r := ipt.reaper
			ipt.mu.Unlock()
			<-r.done
		}
		p := Pinhole{Session: 9, Seq: 1, From: peer4, To: netip.AddrPortFrom(gw4, 40001)}

		ctx1, cancel1 := context.WithCancel(t.Context())
		first := newBackend(t, v, IPTablesConfig{}, true)
		start(t, first, ctx1)
		if _, err := first.Open(t.Context(), p); err != nil {
			t.Fatal(err)
		}
		crash(first, cancel1)
		if n := len(list(t, v.v4, "filter", "FTPGATE-INPUT")); n != 2 {
			t.Fatalf("after the crash FTPGATE-INPUT has %d lines, want the chain and the pinhole", n)
		}

		ctx2, cancel2 := context.WithCancel(t.Context())
		second := newBackend(t, v, IPTablesConfig{}, true)
		start(t, second, ctx2)
		wantHooked(t, v.v4) // the old pinhole is gone, one jump each
		wantHooked(t, v.v6)
		if _, err := second.Open(t.Context(), p); err != nil {
			t.Fatal(err)
		}
		crash(second, cancel2)

		cleaner := newBackend(t, v, IPTablesConfig{}, true)
		if err := cleaner.Cleanup(t.Context()); err != nil {
			t.Fatalf("Cleanup: %v", err)
		}
		wantNoFtpgate(t, v.v4)
		wantNoFtpgate(t, v.v6)
		if err := cleaner.Cleanup(t.Context()); err != nil {
			t.Errorf("Cleanup with nothing to clean: %v", err)
		}
	})
}

func TestIntegrationOpenClose200(t *testing.T) {
	forEachVariant(t, func(t *testing.T, v variant) {
		ipt := newBackend(t, v, IPTablesConfig{}, false)
		start(t, ipt, t.Context())
		for i := range 200 {
			p := Pinhole{Session: uint64(i), Seq: 1, From: peer4, To: netip.AddrPortFrom(gw4, uint16(40000+i))}
			switch i % 4 {
			case 1:
				p.From, p.To = peer6, netip.AddrPortFrom(gw6, p.To.Port())
			case 2:
				p.Deliver, p.DNATTo, p.SNATTo = DNAT, netip.MustParseAddrPort("198.19.0.5:30000"), gw4
			case 3:
				p.From, p.To = peer6, netip.AddrPortFrom(gw6, p.To.Port())
				p.Deliver, p.RedirectPort = Redirect, 2121
			}
			closeFn, err := ipt.Open(t.Context(), p)
			if err != nil {
				t.Fatalf("cycle %d: Open: %v", i, err)
			}
			if err := closeFn(t.Context()); err != nil {
				t.Fatalf("cycle %d: close: %v", i, err)
			}
		}
		wantHooked(t, v.v4)
		wantHooked(t, v.v6)
		if n := ipt.Active(); n != 0 {
			t.Errorf("Active() = %d", n)
		}
	})
}

func TestIntegrationNoIP6tables(t *testing.T) {
	v := variants[0]
	needBinaries(t, v)
	resetFirewall(t)
	ipt, err := NewIPTables(IPTablesConfig{Path: v.v4, Path6: "/nonexistent/ip6tables"})
	if err != nil {
		t.Fatal(err)
	}
	start(t, ipt, t.Context())
	defer ipt.Stop(context.Background())
	if _, err := ipt.Open(t.Context(), Pinhole{From: peer6, To: netip.AddrPortFrom(gw6, 40001)}); !errors.Is(err, ErrFamily) {
		t.Errorf("IPv6 Open without ip6tables = %v, want ErrFamily", err)
	}
	if _, err := ipt.Open(t.Context(), Pinhole{From: peer4, To: netip.AddrPortFrom(gw4, 40001)}); err != nil {
		t.Errorf("IPv4 Open: %v", err)
	}
}
