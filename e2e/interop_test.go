//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// The interoperability matrix: each server runs in the home router's server
// namespace at its own port (vsftpd is the network's own, at 21), and
// ftpgate has one reverse listener per server and address family, on the
// gateway's public addresses at the listener port.
var interopServers = []struct {
	kind         netlab.ServerKind
	port         int // the server's control port
	listener     int // ftpgate's listener port, IPv4 and IPv6
	clientPorts  int // first of 100 client_ports; IPv6 at +1000
	serverPorts  int // first of 100 server_ports; IPv6 at +1000
	name4, name6 string
}{
	{netlab.Vsftpd, 21, 2131, 42000, 52000, "vsftpd4", "vsftpd6"},
	{netlab.PureFTPd, 2100, 2132, 42100, 52100, "pureftpd4", "pureftpd6"},
	{netlab.ProFTPD, 2200, 2133, 42200, 52200, "proftpd4", "proftpd6"},
}

// interopOps are the operations of the matrix.
var interopOps = []netlab.Op{netlab.OpList, netlab.OpRetr, netlab.OpStor}

// interopFamilies are the address families of the matrix: the client's
// connection to ftpgate, and ftpgate's to the server.
var interopFamilies = []string{"ipv4", "ipv6"}

// interopNA lists the cells that a server itself cannot do, with the
// reason, keyed by server/family/client/op ("*" matches any). Empty: every
// server does every cell.
var interopNA = map[string]string{}

// notApplicable returns why a cell cannot run, or "".
func notApplicable(c netlab.InteropClient, server netlab.ServerKind, family string, op netlab.Op) string {
	if why := c.NotApplicable(op); why != "" {
		return why
	}
	for _, k := range []string{
		fmt.Sprintf("%s/%s/%s/%s", server, family, c.Name, op),
		fmt.Sprintf("%s/%s/%s/*", server, family, c.Name),
		fmt.Sprintf("%s/%s/*/%s", server, family, op),
		fmt.Sprintf("%s/%s/*/*", server, family),
		fmt.Sprintf("%s/*/%s/*", server, c.Name),
	} {
		if why := interopNA[k]; why != "" {
			return why
		}
	}
	return ""
}

// interopConfig is the configuration of the matrix's ftpgate: reverse
// mode, relay path, server_mode same.
func interopConfig() string {
	var b strings.Builder
	b.WriteString("listeners:\n")
	for _, s := range interopServers {
		fmt.Fprintf(&b, `  - name: %s
    listen: %s
    upstream: %s
    data: {client_ports: %d-%d, server_ports: %d-%d}
`, s.name4, netlab.GatewayOut+":"+strconv.Itoa(s.listener), netlab.ServerAddr+":"+strconv.Itoa(s.port),
			s.clientPorts, s.clientPorts+99, s.serverPorts, s.serverPorts+99)
		fmt.Fprintf(&b, `  - name: %s
    listen: "[%s]:%d"
    upstream: "[%s]:%d"
    data: {client_ports: %d-%d, server_ports: %d-%d}
`, s.name6, netlab.GatewayOut6, s.listener, netlab.ServerAddr6, s.port,
			s.clientPorts+1000, s.clientPorts+1099, s.serverPorts+1000, s.serverPorts+1099)
	}
	b.WriteString(`limits: {idle_timeout: 2m, data_timeout: 10s}
log: {level: debug, format: text}
firewall: ` + withPinholes + "\n")
	return b.String()
}

// interopResult is the outcome of one cell: "pass", "FAIL" or "n/a: why".
type interopResult struct {
	status  string
	elapsed time.Duration
}

// TestInterop runs the interoperability matrix through ftpgate on the home
// router: servers vsftpd, pure-ftpd and proftpd × the clients of
// netlab.InteropClients × IPv4 and IPv6 × LIST, RETR and STOR, each file's
// SHA-256 checked and each client's data command checked in its protocol
// log. A cell the client or server itself cannot do is "n/a" with the
// reason; every other cell must pass. The matrix is written to
// docs/interop.md, and the 227/229 replies and EPRT forms of each server to
// nat/testdata/replies/<server>.txt (when their form changed).
func TestInterop(t *testing.T) {
	servers := map[netlab.ServerKind]*netlab.Server{}
	for _, s := range interopServers {
		srv, err := net4.StartServer(s.kind, s.port)
		if err != nil {
			t.Fatal(err)
		}
		servers[s.kind] = srv
		t.Cleanup(func() {
			if err := srv.Stop(); err != nil {
				t.Error(err)
			}
			if t.Failed() {
				for _, l := range srv.Logs {
					if b, err := os.ReadFile(l); err == nil {
						t.Logf("--- %s ---\n%s", l, tail(string(b), 40))
					}
				}
			}
		})
		t.Logf("%s on port %d: %s", s.kind, s.port, srv.Version)
	}
	openInteropPorts(t)
	var listeners []int
	for _, s := range interopServers {
		listeners = append(listeners, s.listener)
	}
	gw := startFtpgate(t, interopConfig(), listeners...)
	baseline := openFDs(t, gw)

	// The servers' own replies, straight from the gateway.
	for _, s := range interopServers {
		replies, err := net4.CollectReplies(servers[s.kind])
		if err != nil {
			t.Fatal(err)
		}
		if err := writeReplies(servers[s.kind], replies); err != nil {
			t.Fatal(err)
		}
	}

	results := map[string]interopResult{}
	key := func(server netlab.ServerKind, family, client string, op netlab.Op) string {
		return fmt.Sprintf("%s/%s/%s/%s", server, family, client, op)
	}
	start := time.Now()
	for _, s := range interopServers {
		t.Run(string(s.kind), func(t *testing.T) {
			for _, family := range interopFamilies {
				host := netlab.GatewayOut
				if family == "ipv6" {
					host = netlab.GatewayOut6
				}
				t.Run(family, func(t *testing.T) {
					for _, c := range netlab.InteropClients {
						for _, op := range interopOps {
							k := key(s.kind, family, c.Name, op)
							t.Run(strings.ReplaceAll(c.Name, " ", "_")+"/"+string(op), func(t *testing.T) {
								if why := notApplicable(c, s.kind, family, op); why != "" {
									results[k] = interopResult{status: "n/a: " + why}
									t.Logf("n/a: %s", why)
									return
								}
								cell := net4.DoInterop(c, host, s.listener, op)
								if cell.Err != nil {
									results[k] = interopResult{status: "FAIL", elapsed: cell.Elapsed}
									t.Fatalf("%v\n--- client log ---\n%s", cell.Err, tail(cell.Log, 60))
								}
								results[k] = interopResult{status: "pass", elapsed: cell.Elapsed}
							})
						}
					}
				})
			}
		})
	}
	elapsed := time.Since(start)

	pass, fail, na := 0, 0, 0
	for _, r := range results {
		switch {
		case r.status == "pass":
			pass++
		case strings.HasPrefix(r.status, "n/a"):
			na++
		default:
			fail++
		}
	}
	want := len(interopServers) * len(interopFamilies) * len(netlab.InteropClients) * len(interopOps)
	if len(results) != want {
		t.Errorf("%d cells ran, want %d", len(results), want)
	}
	t.Logf("interoperability matrix: %d pass, %d fail, %d n/a in %s", pass, fail, na, elapsed.Round(time.Second))
	if err := writeInteropDoc(servers, results, key, pass, fail, na); err != nil {
		t.Error(err)
	}
	assertNoLeftovers(t, gw, baseline)
	if n, err := net4.StrayPackets(); err != nil || n > 0 {
		t.Errorf("%d packets to addresses outside the test space (err %v): a server or client looked something up", n, err)
	}
}

// TestInteropWithoutFtpgateFails shows that the checks of the clients that
// only the interoperability matrix uses (wget, tnftp) see a failed
// transfer: through the gateway's plain DNAT of port 21, without an ALG,
// their passive LIST fails.
func TestInteropWithoutFtpgateFails(t *testing.T) {
	for _, c := range netlab.InteropClients {
		if c.Program != "wget" && c.Program != "tnftp" || !c.Passive {
			continue
		}
		t.Run(strings.ReplaceAll(c.Name, " ", "_"), func(t *testing.T) {
			t.Parallel()
			cell := net4.DoInterop(c, netlab.GatewayDNAT, 21, netlab.OpList)
			if cell.Err == nil {
				t.Fatalf("LIST through a plain DNAT worked; the firewall should have dropped the data connection\n%s", cell.Log)
			}
			t.Logf("failed as expected after %s: %v", cell.Elapsed.Round(time.Millisecond), cell.Err)
		})
	}
}

// openInteropPorts accepts new connections to ftpgate's interop listener
// ports in the gateway's firewall (IPv4 and IPv6), until the test ends.
func openInteropPorts(t *testing.T) {
	t.Helper()
	var ports []int
	for _, s := range interopServers {
		ports = append(ports, s.listener)
	}
	openGatewayPorts(t, ports...)
}

// openGatewayPorts accepts new connections to the gateway's listener ports
// (IPv4 and IPv6) until the test ends.
func openGatewayPorts(t *testing.T, listeners ...int) {
	t.Helper()
	ports := make([]string, len(listeners))
	for i, p := range listeners {
		ports[i] = strconv.Itoa(p)
	}
	var rules []string
	for _, bin := range []string{net4.IPTables, strings.Replace(net4.IPTables, "iptables", "ip6tables", 1)} {
		rules = append(rules, bin+" -w {op} INPUT -p tcp -m multiport --dports "+strings.Join(ports, ",")+
			" -m conntrack --ctstate NEW -j ACCEPT")
	}
	script := func(op string) string {
		return strings.ReplaceAll(strings.Join(rules, "\n"), "{op}", op)
	}
	if err := net4.Gateway.Script(script("-A")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := net4.Gateway.Script(script("-D")); err != nil {
			t.Errorf("removing the interop listener ports from the gateway's firewall: %v", err)
		}
	})
}

// writeInteropDoc writes the matrix to docs/interop.md.
func writeInteropDoc(servers map[netlab.ServerKind]*netlab.Server, results map[string]interopResult,
	key func(netlab.ServerKind, string, string, netlab.Op) string, pass, fail, na int) error {
	var b strings.Builder
	fmt.Fprintf(&b, `# Interoperability matrix

Written by `+"`TestInterop`"+` (e2e/interop_test.go, `+"`sudo make e2e`"+`) on %s.

Each cell is one run of a real client program through ftpgate (reverse mode,
relay path, `+"`server_mode: same`"+`) on the home-router network of the
end-to-end tests: the client at 198.19.0.2 / 2001:db8:19::2, ftpgate on the
gateway at 198.19.0.1 / 2001:db8:19::1, the server behind it at 198.18.1.2 /
2001:db8:18:1::2, advertising its private address. The gateway's firewall
admits only ESTABLISHED traffic and the control ports, so every data
connection gets through by ftpgate's pinholes alone.

- **LIST** lists pub/ and must name the file; **RETR** fetches and **STOR**
  sends a 10 MiB file whose SHA-256 must match on the other side.
- The client's protocol log must show the data command of its column (PASV,
  EPSV, PORT or EPRT; over IPv6 every client uses EPSV or EPRT) and not its
  fallback.
- Passive clients connect to the address in the 227 reply (curl
  `+"`--no-ftp-skip-pasv-ip`"+`, lftp `+"`ftp:fix-pasv-address no`"+`, ftplib
  `+"`trust_server_pasv_ipv4_address`"+`; wget always does; tnftp refuses a 227
  that names another address than its control peer's), so a wrong rewrite
  fails.
- **n/a** marks what the client or server program itself cannot do, with the
  reason.

**%d pass, %d fail, %d n/a** (%d cells).

`, time.Now().UTC().Format("2006-01-02"), pass, fail, na, pass+fail+na)

	b.WriteString("Servers (Debian 12 packages, each configured by the test):\n\n")
	for _, s := range interopServers {
		fmt.Fprintf(&b, "- %s: %s\n", s.kind, servers[s.kind].Version)
	}
	b.WriteString("\nClients:\n\n")
	seen := map[string]bool{}
	for _, c := range netlab.InteropClients {
		if seen[c.Program] {
			continue
		}
		seen[c.Program] = true
		fmt.Fprintf(&b, "- %s: %s %s\n", c.Program, c.Package, netlab.PackageVersion(c.Package))
	}
	for _, s := range interopServers {
		fmt.Fprintf(&b, "\n## %s\n\n", s.kind)
		b.WriteString("| client | data command (IPv4 / IPv6) |")
		for _, f := range interopFamilies {
			for _, op := range interopOps {
				fmt.Fprintf(&b, " %s %s |", map[string]string{"ipv4": "IPv4", "ipv6": "IPv6"}[f], op)
			}
		}
		b.WriteString("\n|---|---|" + strings.Repeat("---|", len(interopFamilies)*len(interopOps)) + "\n")
		for _, c := range netlab.InteropClients {
			cmd4 := dataCommand(c.Want)
			cmd6 := strings.NewReplacer("PASV", "EPSV", "PORT", "EPRT").Replace(cmd4)
			fmt.Fprintf(&b, "| %s | %s / %s |", c.Name, cmd4, cmd6)
			for _, f := range interopFamilies {
				for _, op := range interopOps {
					r, ok := results[key(s.kind, f, c.Name, op)]
					status := r.status
					if !ok {
						status = "not run"
					}
					if status == "FAIL" {
						status = "**FAIL**"
					}
					fmt.Fprintf(&b, " %s |", status)
				}
			}
			b.WriteString("\n")
		}
	}
	if err := os.MkdirAll("../docs", 0o755); err != nil {
		return err
	}
	return os.WriteFile("../docs/interop.md", []byte(b.String()), 0o644)
}

// dataCommand is the FTP command in a client's Want string.
func dataCommand(want string) string {
	for _, c := range []string{"EPSV", "EPRT", "PASV", "PORT"} {
		if strings.Contains(want, c) {
			return c
		}
	}
	return want
}

// digits matches the numbers of a reply, which change from run to run.
var digits = regexp.MustCompile(`[0-9]+`)

// writeReplies writes the replies that server s sent to the address-bearing
// commands to nat/testdata/replies/<server>.txt, read by nat's
// TestServerReplies. The file is rewritten only when a reply's form
// changed (its numbers aside), so that runs do not churn it.
func writeReplies(s *netlab.Server, replies []netlab.Reply) error {
	var b strings.Builder
	fmt.Fprintf(&b, `# Replies of %s to the address-bearing commands, as received over a real
# control connection from the gateway (%s, %s) to the server (port %d),
# collected by TestInterop (e2e/interop_test.go); read by TestServerReplies
# (nat/replies_test.go). Rewritten only when a reply's form changes.
#
# Lines: "server <package version>", "address <IPv4> <IPv6>" (the server's),
# "passive <first>-<last>" (its passive ports), and one line per command:
# <family of the control connection> TAB <command> TAB <reply>; a multi-line
# reply is written as a Go string literal.
`, s.Kind, netlab.GatewayIn, netlab.GatewayIn6, s.Port)
	fmt.Fprintf(&b, "server\t%s\n", s.Version)
	fmt.Fprintf(&b, "address\t%s\t%s\n", netlab.ServerAddr, netlab.ServerAddr6)
	fmt.Fprintf(&b, "passive\t%d-%d\n", s.PassiveFirst, s.PassiveLast)
	for _, r := range replies {
		text := r.Text()
		if len(r.Lines) != 1 {
			text = strconv.Quote(text)
		}
		fmt.Fprintf(&b, "%s\t%s\t%s\n", r.Family, r.Command, text)
	}
	path := filepath.Join("..", "nat", "testdata", "replies", string(s.Kind)+".txt")
	if old, err := os.ReadFile(path); err == nil && replyForms(string(old)) == replyForms(b.String()) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// replyForms is the text of a replies file without comments and with the
// numbers in each reply after its code replaced by N.
func replyForms(text string) string {
	var b strings.Builder
	for line := range strings.Lines(text) {
		switch {
		case strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "server\t"): // a new version is a new file
			b.WriteString(line)
		default: // family, command, reply: the numbers after the reply's code
			f := strings.SplitN(line, "\t", 3)
			if len(f) == 3 && len(f[2]) > 3 {
				f[2] = f[2][:3] + digits.ReplaceAllString(f[2][3:], "N")
			}
			b.WriteString(strings.Join(f, "\t"))
		}
	}
	return b.String()
}
