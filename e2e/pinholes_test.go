//go:build e2e

package e2e

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// otherProgram's rules stand for another program's firewall rules on the
// gateway: ftpgate must leave them alone.
const otherProgram = `
iptables -N OTHERPROG
iptables -A OTHERPROG -s 198.19.9.9 -j DROP
iptables -A INPUT -s 198.19.9.8 -m comment --comment other-program -j DROP
iptables -A FORWARD -s 198.19.9.8 -m comment --comment other-program -j DROP
iptables -t nat -A PREROUTING -s 198.19.9.7 -m comment --comment other-program -j RETURN
iptables -t nat -A POSTROUTING -s 198.19.9.7 -m comment --comment other-program -j RETURN
`

const removeOtherProgram = `
iptables -D INPUT -s 198.19.9.8 -m comment --comment other-program -j DROP
iptables -D FORWARD -s 198.19.9.8 -m comment --comment other-program -j DROP
iptables -t nat -D PREROUTING -s 198.19.9.7 -m comment --comment other-program -j RETURN
iptables -t nat -D POSTROUTING -s 198.19.9.7 -m comment --comment other-program -j RETURN
iptables -F OTHERPROG
iptables -X OTHERPROG
`

// TestPinholeLifecycle follows ftpgate's firewall objects through a run,
// with each backend: at start its chains and one jump each (and for
// netlink its static set rules, ipsets and nftables tables), one exact
// pinhole per announced data port (a rule, or an ipset element), none once
// the connection is made or the session ends (also after 200 sessions in a
// row), nothing of ftpgate after it stops, and another program's rules
// untouched throughout.
func TestPinholeLifecycle(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		if err := net4.Gateway.Script(otherProgram); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { net4.Gateway.Script(removeOtherProgram) })
		before := othersRules(t)

		gw := startFtpgate(t, spareConfig(pinholeFirewall(backend)), portSpare)
		checkSetup(t, net4, backend, 10*time.Second)
		if holes := pinholes(t); len(holes) != 0 {
			t.Errorf("pinholes before any session:\n%s", strings.Join(holes, "\n"))
		}

		c := startPaused(t, portSpare)
		checkPinhole(t, gw, backend, c.Port, 10*time.Second)
		c.Resume(t)
		waitNoPinholes(t)

		out, errOut, err := net4.Client.Exec(5*time.Minute, nil, "python3", net4.PythonClient(),
			netlab.GatewayOut, strconv.Itoa(portSpare), "passive", "sessions", "200", "-", "--strict")
		if err != nil || !strings.Contains(out, "SESSIONS 200") {
			t.Fatalf("200 sessions: %v\n%s%s", err, out, errOut)
		}
		waitNoPinholes(t)
		if n := strings.Count(gw.Stderr.String(), "msg=transfer"); n < 201 {
			t.Errorf("ftpgate logged %d transfers, want at least 201", n)
		}
		checkSetup(t, net4, backend, 10*time.Second)

		if err := gw.Signal(syscall.SIGTERM, 10*time.Second); err != nil {
			t.Fatalf("stopping ftpgate: %v", err)
		}
		if left := ftpgateLines(t); len(left) > 0 {
			t.Errorf("ftpgate's firewall objects after it stopped:\n%s", strings.Join(left, "\n"))
		}
		if after := othersRules(t); after != before {
			t.Errorf("another program's rules changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})
}

// TestPinholeKernelPath: the pinhole of the kernel data path, with each
// backend, is exactly the one ftpgate logged: with iptables a DNAT rule in
// FTPGATE-PREROUTING, an accept in FTPGATE-FORWARD and an SNAT in
// FTPGATE-POSTROUTING; with netlink an element of FTPGATE-dnat4 and
// elements of the nftables maps dnat_to and snat_to. The kernel forwards
// the transfer through it, and then it is gone.
func TestPinholeKernelPath(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		config := strings.Replace(spareConfig(pinholeFirewall(backend)), "data: {", "data: {path: kernel, ", 1)
		gw := startFtpgate(t, config, portSpare)
		c := startPaused(t, portSpare)
		comment, m := loggedPinhole(t, gw, c.Port, `dnat (`+regexp.QuoteMeta(netlab.ServerAddr)+`):(\d+) snat (\S+)`)
		server, serverPort, snat := m[0], m[1], m[2]
		if snat != netlab.GatewayIn {
			t.Errorf("the pinhole SNATs to %s, want the gateway's inside address %s", snat, netlab.GatewayIn)
		}
		var want []string
		switch backend {
		case "iptables":
			toServer := fmt.Sprintf("-s %s/32 -d %s/32 -p tcp -m tcp --dport %s -m conntrack --ctstate NEW --ctorigdst %s --ctorigdstport %s -m comment --comment %q",
				netlab.ClientAddr, server, serverPort, netlab.GatewayOut, c.Port, comment)
			want = []string{
				"-A FTPGATE-FORWARD " + toServer + " -j ACCEPT",
				"-A FTPGATE-POSTROUTING " + toServer + " -j SNAT --to-source " + snat,
				"-A FTPGATE-PREROUTING " + exactMatch(netlab.ClientAddr, netlab.GatewayOut, c.Port, comment) + " -j DNAT --to-destination " + server + ":" + serverPort,
			}
		case "netlink":
			want = []string{
				netlab.Element{Set: "FTPGATE-dnat4", Member: netlab.ClientAddr + ",tcp:" + serverPort + "," + server, Comment: comment}.String(),
				netlab.Element{Set: "ip FTPGATE snat_to", Member: netlab.ClientAddr + " . " + server + " . " + serverPort + " : " + snat}.String(),
				netlab.Element{Set: "ip FTPGATE dnat_to", Member: netlab.ClientAddr + " . " + netlab.GatewayOut + " . " + c.Port + " : " + server + " . " + serverPort}.String(),
			}
		}
		checkPinholes(t, want, 10*time.Second)
		c.Resume(t)
		waitNoPinholes(t)
		waitLog(t, gw, "data_path=kernel mode=passive", 1)
	})
}

// TestPinholeTTL: a client that never connects to its data port; ftpgate
// (and with netlink the kernel too) removes the pinhole after pinhole_ttl,
// although the session still runs.
func TestPinholeTTL(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		gw := startFtpgate(t, spareConfig("{backend: "+backend+", pinhole_ttl: 2s}"), portSpare)
		start := time.Now()
		c := startPaused(t, portSpare)
		checkPinhole(t, gw, backend, c.Port, 2*time.Second)
		waitNoPinholes(t)
		if d := time.Since(start); d < 1500*time.Millisecond {
			t.Errorf("pinhole gone after %s, before its TTL of 2s", d)
		}
		waitLog(t, gw, "pinhole expired", 1)
		syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	})
}

// TestCrashRecovery: ftpgate killed with SIGKILL leaves its pinhole behind;
// the next start flushes it and transfers work; `ftpgate cleanup` removes
// what a killed ftpgate left (chains and jumps; for netlink also the
// static rules, ipsets and nftables tables).
func TestCrashRecovery(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		config := spareConfig(pinholeFirewall(backend))
		first := startFtpgate(t, config, portSpare)
		c := startPaused(t, portSpare)
		first.Signal(syscall.SIGKILL, 5*time.Second)
		syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		if holes := pinholes(t); len(holes) != 1 {
			t.Fatalf("after SIGKILL: %d pinholes, want the 1 left behind:\n%s", len(holes), strings.Join(holes, "\n"))
		}
		restartAndCleanUp(t, config)
	})
}

// TestCrashKernelExpiry: with the netlink backend, the pinhole of an
// ftpgate killed with SIGKILL is removed by the kernel itself at its
// timeout, pinhole_ttl after it was opened: no restart, no cleanup. The
// static rules, sets and tables stay until the next start or `ftpgate
// cleanup`, which remove them as after any crash.
func TestCrashKernelExpiry(t *testing.T) {
	const ttl = 3 * time.Second
	config := spareConfig("{backend: netlink, pinhole_ttl: 3s}")
	gw := startFtpgate(t, config, portSpare)
	beforePASV := time.Now() // the pinhole is opened after this...
	c := startPaused(t, portSpare)
	after227 := time.Now() // ... and before this
	if err := gw.Signal(syscall.SIGKILL, 5*time.Second); err != nil && !gw.Exited() {
		t.Fatalf("killing ftpgate: %v", err)
	}
	syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	if since := time.Since(beforePASV); since >= ttl {
		t.Fatalf("ftpgate was killed %s after the PASV, not before the TTL of %s: the test proves nothing", since, ttl)
	}
	els := checkPinhole(t, gw, "netlink", c.Port, ttl)
	t.Logf("right after the kill: %s (expires in %s)", els[0], els[0].Expires)

	// Only the kernel can remove it now.
	deadline := after227.Add(ttl + 2*time.Second)
	for len(pinholes(t)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the element is still there %s after the 227, its TTL being %s:\n%s",
				time.Since(after227).Round(time.Millisecond), ttl, strings.Join(pinholes(t), "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	gone := time.Now()
	t.Logf("the kernel removed the element %s after the client started, %s after the 227 (pinhole_ttl %s)",
		gone.Sub(beforePASV).Round(time.Millisecond), gone.Sub(after227).Round(time.Millisecond), ttl)
	if d := gone.Sub(beforePASV); d < ttl-250*time.Millisecond {
		t.Errorf("the element was gone %s after the PASV, before its TTL of %s", d, ttl)
	}
	// The element went alone: the rest is as the killed ftpgate left it.
	checkSetup(t, net4, "netlink", ttl)
	restartAndCleanUp(t, config)
}

// restartAndCleanUp follows a killed ftpgate of config on the home router:
// the next start flushes what it left and a transfer works; killed again,
// it leaves its chains (and sets and tables) behind, and `ftpgate cleanup`
// removes every trace of ftpgate, twice in a row (idempotent).
func restartAndCleanUp(t *testing.T, config string) {
	t.Helper()
	second := startFtpgate(t, config, portSpare)
	if holes := pinholes(t); len(holes) != 0 {
		t.Errorf("after restart: leftover pinholes not flushed:\n%s", strings.Join(holes, "\n"))
	}
	if cell := net4.Do(netlab.ClientByName("curl EPSV"), netlab.GatewayOut, portSpare, netlab.OpRetr); cell.Err != nil {
		t.Errorf("transfer after restart: %v", cell.Err)
	}
	second.Signal(syscall.SIGKILL, 5*time.Second)
	if len(ftpgateLines(t)) == 0 {
		t.Fatal("nothing left behind by a killed ftpgate")
	}
	path := filepath.Join(net4.Dir, "cleanup.yaml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range 2 { // idempotent
		if out, err := net4.Gateway.Run(ftpgateBin, "cleanup", "--config", path); err != nil {
			t.Fatalf("ftpgate cleanup (run %d): %v\n%s", i+1, err, out)
		}
		if left := ftpgateLines(t); len(left) > 0 {
			t.Errorf("after ftpgate cleanup (run %d):\n%s", i+1, strings.Join(left, "\n"))
		}
	}
}

// TestLegacyVariant runs transfers through a gateway whose firewall is
// iptables-legacy, with firewall.variant legacy and each backend: ftpgate's
// chains (and the netlink backend's static rules) go to the legacy tables,
// none to iptables-nft's (the netlink backend's own nftables tables
// aside), and nothing of ftpgate is left after it stops.
func TestLegacyVariant(t *testing.T) {
	h, err := netlab.NewHomeRouter("iptables-legacy", portSame)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	forEachBackend(t, func(t *testing.T, backend string) {
		config := `
listeners:
  - name: legacy
    listen: 198.19.0.1:21
    upstream: 198.18.1.2:21
log: {level: debug}
firewall: {backend: ` + backend + `, variant: legacy, pinhole_ttl: 10s}
`
		gw, err := h.StartFtpgate(ftpgateBin, config, portSame)
		if err != nil {
			t.Fatal(err)
		}
		stopOnCleanup(t, gw)
		checkSetup(t, h, backend, 10*time.Second)
		for _, name := range []string{"curl EPSV", "curl PORT", "ftplib passive strict", "ftplib active"} {
			for _, op := range []netlab.Op{netlab.OpRetr, netlab.OpStor} {
				if cell := h.Do(netlab.ClientByName(name), netlab.GatewayOut, portSame, op); cell.Err != nil {
					t.Errorf("%s %s: %v\n%s", name, op, cell.Err, tail(cell.Log, 30))
				}
			}
		}
		for _, tool := range []string{"iptables-nft-save", "ip6tables-nft-save"} {
			nft, err := h.Gateway.Run(tool)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(nft, "FTPGATE") {
				t.Errorf("ftpgate wrote to nf_tables' iptables although the variant is legacy (%s):\n%s", tool, nft)
			}
		}
		waitNoPinholesOn(t, h)
		if err := gw.Signal(syscall.SIGTERM, 10*time.Second); err != nil {
			t.Errorf("stopping ftpgate: %v\n%s", err, tail(gw.Stderr.String(), 50))
		}
		if left := ftpgateLinesOn(t, h); len(left) > 0 {
			t.Errorf("ftpgate's firewall objects remain after it stopped:\n%s", strings.Join(left, "\n"))
		}
	})
}

// fwState is what of ftpgate a gateway's firewall holds.
type fwState struct {
	// rules4 and rules6 are the lines of iptables-save and ip6tables-save
	// (the network's variant) that name ftpgate's chains.
	rules4, rules6 []string
	sets           []netlab.IPSet   // ipsets named FTPGATE-*
	tables         []string         // nftables tables FTPGATE, as "ip FTPGATE"
	elements       []netlab.Element // the sets' members and the tables' map elements
}

// readFirewall reads what of ftpgate nw's gateway holds, whatever the
// backend: rules, ipsets and nftables tables.
func readFirewall(t *testing.T, nw *netlab.Network) fwState {
	t.Helper()
	var s fwState
	for _, f := range []struct {
		save  func() (string, error)
		lines *[]string
	}{{nw.GatewayRules, &s.rules4}, {nw.GatewayRules6, &s.rules6}} {
		out, err := f.save()
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(out) {
			if strings.Contains(line, "FTPGATE") {
				*f.lines = append(*f.lines, strings.TrimSpace(line))
			}
		}
	}
	sets, members, err := nw.GatewaySets("FTPGATE")
	if err != nil {
		t.Fatal(err)
	}
	tables, elements, err := nw.GatewayTables("FTPGATE")
	if err != nil {
		t.Fatal(err)
	}
	s.sets, s.tables = sets, tables
	s.elements = append(members, elements...)
	return s
}

// staticRule reports whether a rule in ftpgate's chains is one of the
// netlink backend's static rules, which match its ipsets.
func staticRule(line string) bool {
	return strings.Contains(line, "--match-set FTPGATE-")
}

// pinholes are the rules in ftpgate's chains other than the static set
// rules (IPv6 ones marked "ip6:"), then the elements of its sets and maps.
func (s fwState) pinholes() []string {
	var holes []string
	for _, f := range []struct {
		mark  string
		lines []string
	}{{"", s.rules4}, {"ip6: ", s.rules6}} {
		for _, line := range f.lines {
			if strings.HasPrefix(line, "-A FTPGATE-") && !staticRule(line) {
				holes = append(holes, f.mark+line)
			}
		}
	}
	for _, e := range s.elements {
		holes = append(holes, e.String())
	}
	return holes
}

// all lists every trace of ftpgate: rules, chains and jumps (IPv6 ones
// marked "ip6:"), ipsets, nftables tables and their elements.
func (s fwState) all() []string {
	var all []string
	all = append(all, s.rules4...)
	for _, line := range s.rules6 {
		all = append(all, "ip6: "+line)
	}
	for _, set := range s.sets {
		all = append(all, "ipset "+set.Name)
	}
	for _, table := range s.tables {
		all = append(all, "nft table "+table)
	}
	for _, e := range s.elements {
		all = append(all, e.String())
	}
	return all
}

// hookChains are the built-in chains that jump to ftpgate's chains
// (FTPGATE-INPUT and so on).
var hookChains = []string{"INPUT", "FORWARD", "PREROUTING", "POSTROUTING", "OUTPUT"}

// checkSetup checks ftpgate's standing objects on nw's gateway for
// backend, ttl being its pinhole_ttl: in each family, its five chains and
// exactly one jump to each; for netlink also exactly its four static rules
// per family, its eight ipsets (type, family, timeout and comments) and
// its nftables tables ip and ip6 FTPGATE with their maps and nat chains;
// for iptables no static rule, ipset or table at all.
func checkSetup(t *testing.T, nw *netlab.Network, backend string, ttl time.Duration) {
	t.Helper()
	s := readFirewall(t, nw)
	for _, f := range []struct {
		family, v string
		rules     []string
	}{{"IPv4", "4", s.rules4}, {"IPv6", "6", s.rules6}} {
		rules := strings.Join(f.rules, "\n")
		for _, chain := range hookChains {
			jump := regexp.MustCompile(`(?m)^-A ` + chain + ` .*-j FTPGATE-` + chain + `$`)
			if n := len(jump.FindAllString(rules, -1)); n != 1 {
				t.Errorf("%s: %d jumps from %s to FTPGATE-%s, want 1:\n%s", f.family, n, chain, chain, rules)
			}
			if !strings.Contains(rules, ":FTPGATE-"+chain+" ") {
				t.Errorf("%s: chain FTPGATE-%s missing:\n%s", f.family, chain, rules)
			}
		}
		var static []string
		for _, line := range f.rules {
			if staticRule(line) {
				static = append(static, line)
			}
		}
		var want []string
		if backend == "netlink" {
			want = staticRules(f.v)
		}
		slices.Sort(static) // iptables-save prints the chains in its own order
		if slices.Sort(want); !slices.Equal(static, want) {
			t.Errorf("%s: static set rules:\n%s\nwant:\n%s", f.family, strings.Join(static, "\n"), strings.Join(want, "\n"))
		}
	}
	if backend != "netlink" {
		if len(s.sets) > 0 || len(s.tables) > 0 {
			t.Errorf("backend %s made ipsets %v and nftables tables %v", backend, s.sets, s.tables)
		}
		return
	}
	checkSets(t, s.sets, ttl)
	if !slices.Equal(s.tables, []string{"ip FTPGATE", "ip6 FTPGATE"}) {
		t.Errorf("nftables tables %q, want ip and ip6 FTPGATE", s.tables)
	}
	for _, f := range []struct{ family, addr string }{{"ip", "ipv4_addr"}, {"ip6", "ipv6_addr"}} {
		table, err := nw.Gateway.Run("nft", "list", "table", f.family, "FTPGATE")
		if err != nil {
			t.Fatal(err)
		}
		key := f.addr + " . " + f.addr + " . inet_service"
		lookup := f.family + ` saddr \. ` + f.family + ` daddr \. tcp dport map @`
		for _, want := range []string{
			`map dnat_to \{\s+type ` + regexp.QuoteMeta(key+" : "+f.addr+" . inet_service") + `\s+flags timeout\s`,
			`map redirect_to \{\s+type ` + regexp.QuoteMeta(key+" : inet_service") + `\s+flags timeout\s`,
			`map snat_to \{\s+type ` + regexp.QuoteMeta(key+" : "+f.addr) + `\s+flags timeout\s`,
			`chain prerouting \{\s+type nat hook prerouting priority dstnat - 10; policy accept;\s`,
			`chain postrouting \{\s+type nat hook postrouting priority srcnat - 10; policy accept;\s`,
			// nft renders the rules' family and protocol matches a little
			// differently per statement.
			`\sdnat (` + f.family + ` )?to ` + lookup + `dnat_to\n`,
			`\sredirect to :\s?` + lookup + `redirect_to\n`,
			`\ssnat (` + f.family + ` )?to ` + lookup + `snat_to\n`,
		} {
			if !regexp.MustCompile(want).MatchString(table) {
				t.Errorf("nft list table %s FTPGATE does not match %s:\n%s", f.family, want, table)
			}
		}
	}
}

// staticRules are the netlink backend's rules, as iptables-save prints
// them, that match its ipsets of IP version v ("4" or "6").
func staticRules(v string) []string {
	const rule = "-A FTPGATE-%s -p tcp -m set --match-set FTPGATE-%s%s %s -m conntrack --ctstate NEW%s -j ACCEPT"
	const dnated = " -m conntrack --ctstate DNAT"
	return []string{
		fmt.Sprintf(rule, "INPUT", "in", v, "src,dst,dst", ""),
		fmt.Sprintf(rule, "INPUT", "rdr", v, "src,dst", dnated),
		fmt.Sprintf(rule, "FORWARD", "fwd", v, "src,dst,dst", ""),
		fmt.Sprintf(rule, "FORWARD", "dnat", v, "src,dst,dst", dnated),
	}
}

// checkSets checks the netlink backend's ipsets: these eight, each of its
// type and family, with ttl as the default timeout and comments.
func checkSets(t *testing.T, sets []netlab.IPSet, ttl time.Duration) {
	t.Helper()
	want := map[string]string{}
	for _, f := range []struct{ v, family string }{{"4", "inet"}, {"6", "inet6"}} {
		for kind, typ := range map[string]string{"in": "hash:ip,port,ip", "fwd": "hash:ip,port,ip", "rdr": "hash:ip,port", "dnat": "hash:ip,port,ip"} {
			want["FTPGATE-"+kind+f.v] = typ + " family " + f.family
		}
	}
	got := map[string]string{}
	for _, set := range sets {
		family, _, _ := strings.Cut(set.Options, " hashsize")
		got[set.Name] = set.Type + " " + family
		if opts := " " + set.Options + " "; !strings.Contains(opts, fmt.Sprintf(" timeout %d comment ", int(ttl.Seconds()))) {
			t.Errorf("ipset %s: %s, want timeout %d and comments", set.Name, set.Options, int(ttl.Seconds()))
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("ipsets:\n%v\nwant:\n%v", got, want)
	}
}

// checkPinhole checks that the one pinhole on the home router is exactly
// the one ftpgate logged for the client's data port port (relay path,
// accept-local): with iptables one rule in FTPGATE-INPUT, with netlink one
// element of FTPGATE-in4, each with the session and sequence number in its
// comment. It returns the elements (see checkPinholes).
func checkPinhole(t *testing.T, gw *netlab.Proc, backend, port string, ttl time.Duration) []netlab.Element {
	t.Helper()
	comment, _ := loggedPinhole(t, gw, port, "accept-local")
	want := fmt.Sprintf(`-A FTPGATE-INPUT %s -j ACCEPT`, exactMatch(netlab.ClientAddr, netlab.GatewayOut, port, comment))
	if backend == "netlink" {
		want = netlab.Element{Set: "FTPGATE-in4", Member: netlab.ClientAddr + ",tcp:" + port + "," + netlab.GatewayOut, Comment: comment}.String()
	}
	return checkPinholes(t, []string{want}, ttl)
}

// exactMatch is the iptables backend's match of a pinhole, as
// iptables-save prints it.
func exactMatch(from, to, port, comment string) string {
	return fmt.Sprintf(`-s %s/32 -d %s/32 -p tcp -m tcp --dport %s -m conntrack --ctstate NEW -m comment --comment %q`,
		from, to, port, comment)
}

// loggedPinhole finds the pinhole that ftpgate logged for the client's
// data port port on the home router, described after the port by rest (a
// regular expression), and returns the comment that its rules or ipset
// element carry and rest's submatches.
func loggedPinhole(t *testing.T, gw *netlab.Proc, port, rest string) (comment string, sub []string) {
	t.Helper()
	logged := regexp.MustCompile(`pinhole="s=(\d+) p=(\d+) ` +
		regexp.QuoteMeta(netlab.ClientAddr+" -> "+netlab.GatewayOut+":"+port) + ` ` + rest + `"`)
	// ftpgate logs the pinhole before its reply announces the port, but its
	// standard error reaches the test through a pipe, some time later.
	var m []string
	for deadline := time.Now().Add(10 * time.Second); m == nil && time.Now().Before(deadline); {
		if m = logged.FindStringSubmatch(gw.Stderr.String()); m == nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if m == nil {
		t.Fatalf("ftpgate logged no pinhole for port %s like %s:\n%s", port, rest, tail(gw.Stderr.String(), 20))
	}
	return fmt.Sprintf("ftpgate s=%s p=%s", m[1], m[2]), m[3:]
}

// checkPinholes checks that the home router holds exactly the pinholes
// want (in any order; see fwState.pinholes), and that each element expires
// within ttl. It returns the elements.
func checkPinholes(t *testing.T, want []string, ttl time.Duration) []netlab.Element {
	t.Helper()
	s := readFirewall(t, net4)
	holes := s.pinholes()
	slices.Sort(holes)
	if want = slices.Sorted(slices.Values(want)); !slices.Equal(holes, want) {
		t.Fatalf("pinholes while the client holds the 227:\n%s\nwant exactly:\n%s", strings.Join(holes, "\n"), strings.Join(want, "\n"))
	}
	for _, e := range s.elements {
		if e.Expires <= 0 || e.Expires > ttl {
			t.Errorf("%s expires in %s, want within its TTL of %s", e, e.Expires, ttl)
		}
	}
	return s.elements
}

// gatewayRules is the home router gateway's iptables-save output.
func gatewayRules(t *testing.T) string {
	t.Helper()
	out, err := net4.GatewayRules()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ftpgateLines lists every trace of ftpgate in the home router gateway's
// firewall (see fwState.all).
func ftpgateLines(t *testing.T) []string {
	t.Helper()
	return ftpgateLinesOn(t, net4)
}

func ftpgateLinesOn(t *testing.T, nw *netlab.Network) []string {
	t.Helper()
	return readFirewall(t, nw).all()
}

// pinholes are the pinholes on the home router, of either backend (see
// fwState.pinholes).
func pinholes(t *testing.T) []string {
	t.Helper()
	return pinholesOn(t, net4)
}

func pinholesOn(t *testing.T, nw *netlab.Network) []string {
	t.Helper()
	return readFirewall(t, nw).pinholes()
}

// waitNoPinholes waits up to 10 s until the home router holds no pinhole
// of ftpgate: no rule in its chains but the static ones, no element in its
// sets and maps.
func waitNoPinholes(t *testing.T) {
	t.Helper()
	waitNoPinholesOn(t, net4)
}

func waitNoPinholesOn(t *testing.T, nw *netlab.Network) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		holes := pinholesOn(t, nw)
		if len(holes) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pinholes remain:\n%s", strings.Join(holes, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var (
	counters = regexp.MustCompile(`\[\d+:\d+\]`)
	// emptyChain is a built-in chain's line with policy ACCEPT, counters
	// removed.
	emptyChain = regexp.MustCompile(`^:[A-Z]+ ACCEPT\s*$`)
)

// othersRules is the gateway's IPv4 and IPv6 rule sets without ftpgate's
// lines, comments and counters, and without tables that hold nothing (the
// nf_tables variant keeps a table that ftpgate used after it stopped,
// empty).
func othersRules(t *testing.T) string {
	t.Helper()
	out6, err := net4.GatewayRules6()
	if err != nil {
		t.Fatal(err)
	}
	var b, table strings.Builder
	empty := true
	for line := range strings.Lines(gatewayRules(t) + out6) {
		line = counters.ReplaceAllString(line, "")
		switch {
		case strings.HasPrefix(line, "#") || strings.Contains(line, "FTPGATE"):
			continue
		case strings.HasPrefix(line, "*"):
			table.Reset()
			empty = true
		case strings.TrimSpace(line) != "COMMIT" && !emptyChain.MatchString(line):
			empty = false
		}
		table.WriteString(line)
		if strings.TrimSpace(line) == "COMMIT" && !empty {
			b.WriteString(table.String())
		}
	}
	return b.String()
}

// TestKernelPathLongTransfer: on the kernel path the data never passes
// ftpgate and the control channel is silent while it flows. A transfer
// whose server sends for longer than idle_timeout (256 MiB read at 64 MB/s,
// about 4 s, far more than the sockets buffer; idle_timeout 2s) ends with
// the server's 226, not with ftpgate's 421: the transfer runs until its
// final reply. With conntrack accounting on (in the gateway's namespace),
// the transfer line carries the bytes from conntrack's counters.
func TestKernelPathLongTransfer(t *testing.T) {
	old, err := net4.Gateway.Run("sysctl", "-n", "net.netfilter.nf_conntrack_acct")
	if err != nil {
		t.Fatalf("reading nf_conntrack_acct: %v %s", err, old)
	}
	if out, err := net4.Gateway.Run("sysctl", "-w", "net.netfilter.nf_conntrack_acct=1"); err != nil {
		t.Fatalf("turning conntrack accounting on: %v %s", err, out)
	}
	t.Cleanup(func() { net4.Gateway.Run("sysctl", "-w", "net.netfilter.nf_conntrack_acct="+strings.TrimSpace(old)) })
	config := strings.Replace(spareConfig(pinholeFirewall(defaultBackend)), "data: {", "data: {path: kernel, ", 1)
	config = strings.Replace(config, "idle_timeout: 2m", "idle_timeout: 2s", 1)
	gw := startFtpgate(t, config, portSpare)
	start := time.Now()
	if err := <-slowBigRetr(t, "pub/kernel-idle-256m.bin"); err != nil {
		t.Fatalf("a kernel-path transfer longer than idle_timeout: %v\n%s", err, tail(gw.Stderr.String(), 20))
	}
	if d := time.Since(start); d < 3*time.Second {
		t.Errorf("the transfer took %s: not longer than idle_timeout (2s), the test shows nothing", d)
	}
	waitLog(t, gw, `path=kernel-idle-256m.bin direction=download data_path=kernel`, 1)
	waitLog(t, gw, "code=226 outcome=forwarded", 1)
	waitLog(t, gw, "bytes_from=conntrack", 1)
	// Conntrack counts IP packets; ftpgate takes the headers off (52 bytes
	// a packet), but with GRO a counted packet carries many segments and
	// so many headers: an estimate a little above the file (+0.08% to +0.27%
	// seen here), within 1%.
	var got int64
	for line := range strings.Lines(gw.Stderr.String()) {
		if i := strings.Index(line, " bytes_to_client="); i >= 0 && strings.Contains(line, "kernel-idle-256m.bin") {
			fmt.Sscanf(line[i:], " bytes_to_client=%d", &got)
		}
	}
	if want := int64(256 << 20); got < want || got > want+want/100 {
		t.Errorf("bytes_to_client=%d from conntrack, want %d to 1%% above", got, want)
	}
	t.Logf("bytes_to_client from conntrack: %d (file: %d)", got, 256<<20)
}
