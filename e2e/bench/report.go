package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// median returns the median of v (the mean of the middle two for an even
// count).
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// figure formats the median of v with its ratio to direct, or the reason
// there is none.
func figure(p *path, v, ratio []float64, format string) string {
	switch {
	case p.na != "":
		return p.na
	case len(v) == 0 && p.err != nil:
		return "FAIL"
	case len(v) == 0:
		return "—"
	}
	s := fmt.Sprintf(format, median(v))
	if len(ratio) > 0 {
		s += fmt.Sprintf(" (%.2f)", median(ratio))
	}
	if p.err != nil {
		s += fmt.Sprintf(" [%d runs, then FAIL]", len(v))
	}
	return s
}

// render returns the results as one Markdown table, columns aligned so that
// it reads as well on a terminal.
func render(paths []*path, o options) string {
	head := []string{"measurement"}
	for _, p := range paths {
		head = append(head, p.title)
	}
	rows := [][]string{head}
	for i, c := range cells {
		row := []string{fmt.Sprintf("%s, MiB/s", c)}
		for _, p := range paths {
			row = append(row, figure(p, p.mbps[i], p.ratio[i], "%.0f"))
		}
		rows = append(rows, row)
	}
	for i, label := range []string{
		fmt.Sprintf("sessions/s, %d sequential", o.sessions),
		fmt.Sprintf("sessions/s, %d from %d concurrent clients", o.sessions, o.conc),
	} {
		row := []string{label}
		for _, p := range paths {
			row = append(row, figure(p, p.rate[i], p.rateRat[i], "%.0f"))
		}
		rows = append(rows, row)
	}
	row := []string{"ftpgate CPU s per GiB (user+system)"}
	for _, p := range paths {
		if p.data == "" || p.onlyRate {
			row = append(row, "—")
			continue
		}
		row = append(row, figure(p, p.cpuPerGB, nil, "%.3f"))
	}
	rows = append(rows, row)

	width := make([]int, len(head))
	for _, r := range rows {
		for j, s := range r {
			width[j] = max(width[j], len([]rune(s)))
		}
	}
	var b strings.Builder
	line := func(r []string) {
		b.WriteString("|")
		for j, s := range r {
			fmt.Fprintf(&b, " %s%s |", s, strings.Repeat(" ", width[j]-len([]rune(s))))
		}
		b.WriteString("\n")
	}
	line(rows[0])
	b.WriteString("|")
	for j := range head {
		if j == 0 {
			b.WriteString(strings.Repeat("-", width[j]+2) + "|")
		} else {
			b.WriteString(strings.Repeat("-", width[j]+1) + ":|")
		}
	}
	b.WriteString("\n")
	for _, r := range rows[1:] {
		line(r)
	}
	return b.String()
}

// targetNotes comments on the targets of issue 4 (kernel path within 5% of
// direct, relay path at least 80% of direct) and issue 13 (FTPS through
// ftpgate against direct FTPS); they are not asserted.
func targetNotes(paths []*path) string {
	var b strings.Builder
	for _, t := range []struct {
		key, what string
		min       float64
	}{
		{"kernel", "kernel path within 5% of direct", 0.95},
		{"relay", "relay path at least 80% of direct", 0.80},
		{"ftps-both", "FTPS terminating both sides at least 0.9× direct FTPS", 0.90},
		{"ftps-offload", "FTPS offload at least as fast as direct FTPS", 1.0},
	} {
		for _, p := range paths {
			if p.key != t.key {
				continue
			}
			if p.na != "" || p.err != nil {
				why := strings.TrimSuffix(strings.TrimPrefix(p.na, "n/a ("), ")")
				fmt.Fprintf(&b, "Target %s: not measured (%s).\n", t.what, cmp(why, "a measurement failed"))
				continue
			}
			worst, which := 0.0, ""
			for i, c := range cells {
				if len(p.ratio[i]) == 0 {
					continue // not measured (active FTPS)
				}
				if r := median(p.ratio[i]); which == "" || r < worst {
					worst, which = r, c.String()
				}
			}
			verdict := "met"
			if worst < t.min {
				verdict = "NOT met"
			}
			fmt.Fprintf(&b, "Target %s: %s (lowest median ratio %.3f, %s).\n", t.what, verdict, worst, which)
		}
	}
	return b.String()
}

// cmp returns a unless it is the zero value, else b.
func cmp[T comparable](a, b T) T {
	var zero T
	if a != zero {
		return a
	}
	return b
}

// docHeader explains the method; writeDoc puts the machine and the table
// after it.
const docHeader = `# Benchmarks

This file is written by ` + "`sudo make bench`" + ` (the program is
[e2e/bench](../e2e/bench/main.go)); running it again overwrites it. The
figures below are from the run named underneath, on the machine named
there. They are measurements, not assertions: no test times anything.

## Method

The bench builds the home-router network of the end-to-end tests in network
namespaces on one machine: a client (198.19.0.2), a Linux gateway
(198.19.0.1 outside, 198.18.1.1 inside) and vsftpd (198.18.1.2), joined by
veth pairs. Client, gateway and server share the machine's cores, so the
figures measure the CPU cost of each path as much as anything else. Every
path runs over the same namespaces and links; between paths only the
gateway's firewall (emptied with ` + "`nft flush ruleset`" + ` in the gateway
namespace, then written for the path; without the nft command the tables
are flushed with iptables, which leaves empty built-in chains) and what runs
on the gateway change.
The paths:

- **direct**: the gateway is a plain router: no firewall rules, no NAT, no
  ALG (and so no conntrack). The client uses the server's own address.
- **Linux FTP helper**: the kernel's own ALG. The gateway has INPUT and
  FORWARD policy DROP, accepts RELATED and ESTABLISHED, DNATs port 21 of
  198.19.0.1 to the server and attaches the helper with
  ` + "`iptables -t raw -A PREROUTING -p tcp --dport 21 -j CT --helper ftp`" + `;
  nf_conntrack_ftp admits the data connections and nf_nat_ftp rewrites the
  control channel. The helper must already be in the kernel (built in or
  loaded): the bench never loads a module, and shows the column as
  "n/a (nf_conntrack_ftp not loaded)" otherwise.
- **ftpgate kernel path**: ftpgate listens on 198.19.0.1:21 with
  ` + "`data: {path: kernel}`" + ` and ` + "`firewall: {backend: netlink}`" + ` (the
  default backend); the gateway accepts only ESTABLISHED and port 21
  (policy DROP) and ftpgate installs DNAT, ACCEPT and SNAT pinholes (ipset
  and nftables map elements), so the kernel forwards the data. Shown as
  "n/a (kernel path not built)" while ` + "`ftpgate check`" + ` refuses that
  configuration.
- **ftpgate relay path**: the same with ` + "`data: {path: relay}`" + `:
  ftpgate copies the data connections itself (splice).
- **kernel path, iptables backend** and **relay path, iptables backend**:
  the same two with ` + "`firewall: {backend: iptables}`" + ` (one exact
  iptables rule per pinhole, added and deleted by the iptables program).
  Only the session rate is measured: the backend decides how a pinhole is
  made, not how an admitted connection is forwarded.
- **direct FTPS**: the plain router, and a second vsftpd on the server
  (port 2300) that requires TLS on the control and data connections and
  session reuse (its defaults with ` + "`ssl_enable=YES`" + `); curl
  ` + "`--ssl-reqd`" + `. The baseline of the two FTPS paths below: their
  ratios are to direct FTPS, not to direct.
- **ftpgate FTPS, both sides**: ftpgate on the relay path with ` + "`tls`" + `
  (explicit, required, session reuse required) and ` + "`upstream_tls`" + `
  to the TLS vsftpd: each data connection is decrypted and encrypted again.
- **ftpgate FTPS offload**: ` + "`tls`" + ` only, to the plain vsftpd: TLS on
  the client side, plain FTP to the server.

FTPS is measured passive only: Debian 12's curl (7.88) sends active FTPS
data in clear (curl/curl#10666, fixed in curl 8.0), which every FTPS
server refuses.

Measurements:

- **Throughput**: one transfer of a file of random bytes (1 GiB) with curl,
  RETR to /dev/null and STOR from the file (in the page cache), passive
  (EPSV) and active (EPRT). The figure is MiB/s over the data phase, from
  curl's ` + "`time_pretransfer`" + ` (logged in, data connection negotiated,
  command sent) to the 226 reply. Each stored file's size is checked on the
  server, then removed.
- **Session rate** (direct and the ftpgate paths): sessions of login, EPSV,
  RETR of a 1 KiB file and QUIT (for FTPS: AUTH TLS, PBSZ 0, PROT P, and a
  TLS data connection that resumes the control connection's session), one after the other, and then the same
  number spread over concurrent clients; the client is a small Go client
  (this program, run again inside the client namespace).
- **CPU**: ftpgate's user+system CPU time (` + "`/proc/PID/stat`" + ` utime+stime)
  before and after each 1 GiB transfer (four, two for FTPS), summed and
  divided by the GiB transferred. The iptables processes ftpgate runs for its pinholes
  and the kernel's forwarding work are not counted.

Each run takes each measurement on every path in turn (the gateway is
switched between paths, and ftpgate started afresh, before each
measurement), so a path's figure and direct's are taken seconds apart; runs
alternate the order of the paths (direct first, then direct last). Each
figure is the **median over the runs** (5 by default); the figure in
parentheses is the median of the per-run **ratios to direct (for the
FTPS paths through ftpgate: to direct FTPS) measured in the same run**. The bench starts no run that would end after its time budget (8
minutes; a watchdog stops it at 12), so on a slow or busy machine it may
report fewer runs: the run count is listed with the results, and every
run's figures are listed under the table. The targets of
issue 4 (kernel path within 5% of direct, relay path at least 80% of direct
on a 2-core machine) are commented on below the table, not asserted.

## Reading the table

- Client, gateway and server run on the same cores, and so does anything
  else running on the machine at the time: compare the load averages listed
  with the results (the one at the start shows other work; the one at the
  end includes the bench's own) before comparing two runs of the bench.
- Direct has no connection tracking at all. The kernel's FTP helper and
  ftpgate's kernel path both pay for conntrack and NAT on every packet, so
  the difference between those two columns is what ftpgate's kernel path
  itself costs in throughput; the difference to direct is the price of a
  stateful NAT gateway.
- The relay path adds ftpgate's copy (splice between two sockets) and a
  second TCP connection per transfer, on the same two cores as everything
  else.
- The session rate is bounded by vsftpd, which forks processes for every
  session, and, through ftpgate, by the pinholes: the iptables backend runs
  one iptables process per rule added or removed (one rule per data
  connection on the relay path; DNAT, ACCEPT and SNAT on the kernel path);
  the netlink backend sends one netlink message per set or map element
  instead (see [pinholes.md](pinholes.md) for the backends alone).
- The CPU figure is ftpgate's own process only: the kernel's forwarding
  work and the iptables processes are not in it.
`

// writeDoc writes docHeader, the machine, the table and the notes to path.
func writeDoc(path, table, notes string, paths []*path, o options) error {
	var b strings.Builder
	b.WriteString(docHeader)
	b.WriteString("\n## Results\n\n")
	fmt.Fprintf(&b, "- date: %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- kernel: %s (`uname -r`)\n", strings.TrimSpace(readFile("/proc/sys/kernel/osrelease")))
	fmt.Fprintf(&b, "- CPU: %s, %d cores\n", cpuModel(), runtime.NumCPU())
	fmt.Fprintf(&b, "- runs: %d; file %d MiB; %d sessions, %d concurrent clients\n", o.runs, o.size>>20, o.sessions, o.conc)
	fmt.Fprintf(&b, "- load average (1, 5, 15 min) at the start: %s; at the end: %s (anything else running on the machine shows here)\n", o.load0, o.load1)
	fmt.Fprintf(&b, "- tools: %s; %s; %s\n", version("curl", "--version"), version("iptables", "--version"), version("vsftpd"))
	b.WriteString("\nThroughput in MiB/s, session rates in sessions per second; in parentheses the ratio to direct (FTPS through ftpgate: to direct FTPS).\n\n")
	b.WriteString(table)
	b.WriteString("\n")
	for line := range strings.Lines(notes) {
		b.WriteString("- " + line)
	}
	for _, p := range paths {
		if p.err != nil {
			fmt.Fprintf(&b, "- FAIL %s: %s\n", p.title, strings.ReplaceAll(p.err.Error(), "\n", " "))
		}
	}
	b.WriteString("\nThe figure of each run, in run order (the spread shows how noisy the machine was):\n\n```\n")
	b.WriteString(rawFigures(paths, o))
	b.WriteString("```\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	for line := range strings.Lines(readFile("/proc/cpuinfo")) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// version returns the first line of a tool's version output, shortened.
func version(tool string, args ...string) string {
	if tool == "vsftpd" { // vsftpd -v writes to its standard input
		out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", "vsftpd").Output()
		if err != nil {
			return "vsftpd"
		}
		return "vsftpd " + strings.TrimSpace(string(out))
	}
	out, err := exec.Command(tool, args...).Output()
	if err != nil {
		return tool
	}
	f := strings.Fields(firstLine(string(out)))
	if len(f) > 3 {
		f = f[:3]
	}
	return strings.Join(f, " ")
}

// rawFigures lists every run's figure of every measurement.
func rawFigures(paths []*path, o options) string {
	var b strings.Builder
	list := func(v []float64, format string) string {
		f := make([]string, len(v))
		for i, x := range v {
			f[i] = fmt.Sprintf(format, x)
		}
		return strings.Join(f, " ")
	}
	for _, p := range paths {
		if p.na != "" {
			continue
		}
		for i, c := range cells {
			if !p.onlyRate {
				fmt.Fprintf(&b, "%-29s %-21s MiB/s   %s\n", p.title, c, list(p.mbps[i], "%.0f"))
			}
		}
		for i, conc := range []int{1, o.conc} {
			if p.sessions {
				fmt.Fprintf(&b, "%-29s %-21s sess/s  %s\n", p.title, fmt.Sprintf("sessions, %d client(s)", conc), list(p.rate[i], "%.1f"))
			}
		}
		if p.data != "" && !p.onlyRate {
			fmt.Fprintf(&b, "%-29s %-21s s/GiB   %s\n", p.title, "ftpgate CPU", list(p.cpuPerGB, "%.3f"))
		}
	}
	return b.String()
}

// busyNote warns when the load average shows other work on the machine.
func busyNote(o options) string {
	// Only the load at the start tells: at the end it counts the bench's
	// own client, gateway and server too.
	f := strings.Fields(o.load0)
	if len(f) == 0 {
		return ""
	}
	if v, err := strconv.ParseFloat(f[0], 64); err != nil || v < 1 {
		return ""
	}
	return fmt.Sprintf("Note: the machine was busy with other work when the bench started (load average %s): the figures are noisier than on an idle machine.\n", o.load0)
}
