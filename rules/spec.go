package rules

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Tables and built-in chains that ftpgate hooks.
const (
	tableFilter = "filter"
	tableNat    = "nat"
)

// hook is one of ftpgate's own chains and the built-in chain that jumps to
// it.
type hook struct {
	table   string // "filter" or "nat"
	builtin string // e.g. "INPUT"
	chain   string // e.g. "FTPGATE-INPUT"
}

// chains names ftpgate's chains for one prefix.
type chains struct {
	input, forward, prerouting, postrouting, output string
}

func newChains(prefix string) chains {
	return chains{
		input:       prefix + "-INPUT",
		forward:     prefix + "-FORWARD",
		prerouting:  prefix + "-PREROUTING",
		postrouting: prefix + "-POSTROUTING",
		output:      prefix + "-OUTPUT",
	}
}

// hooks lists every chain ftpgate owns, in the order Start creates them.
// PREFIX-OUTPUT (nat) holds no rules yet: it is there so that a later
// pinhole for a locally generated connection needs no new hook.
func (c chains) hooks() []hook {
	return []hook{
		{tableFilter, "INPUT", c.input},
		{tableFilter, "FORWARD", c.forward},
		{tableNat, "PREROUTING", c.prerouting},
		{tableNat, "POSTROUTING", c.postrouting},
		{tableNat, "OUTPUT", c.output},
	}
}

// rule is one firewall rule: appended with -A, deleted with -D and the same
// rulespec.
type rule struct {
	table, chain string
	spec         []string
}

// String renders r the way `iptables -t TABLE -S` shows it, for logs and
// tests: "nat -A FTPGATE-PREROUTING -s ...".
func (r rule) String() string {
	return r.table + " -A " + r.chain + " " + formatSpec(r.spec)
}

// host renders a as a single-host network, the form `iptables -S` prints
// for -s and -d, so that a rule reads back exactly as it was added.
func host(a netip.Addr) string {
	return netip.PrefixFrom(a, a.BitLen()).String()
}

func port(p uint16) string { return strconv.Itoa(int(p)) }

// comment is the comment on every rule of p: "ftpgate s=12 p=3".
func comment(p Pinhole) string {
	return fmt.Sprintf("ftpgate s=%d p=%d", p.Session, p.Seq)
}

// match builds the exact match shared by every pinhole rule, in the order
// `iptables -S` prints it:
//
//	-s SRC -d DST -p tcp -m tcp --dport PORT -m conntrack --ctstate NEW
//	   [--ctorigdst ODST --ctorigdstport OPORT] -m comment --comment "ftpgate s=S p=N"
//
// dst is left out if invalid (a REDIRECT rewrites it to an address of the
// receiving interface); the original-destination match is left out if orig
// is the zero value. `-m tcp` is what iptables adds implicitly for --dport;
// spelling it out keeps the rulespec identical to the listing.
func match(p Pinhole, src, dst netip.Addr, dport uint16, orig netip.AddrPort) []string {
	m := make([]string, 0, 24)
	m = append(m, "-s", host(src))
	if dst.IsValid() {
		m = append(m, "-d", host(dst))
	}
	m = append(m, "-p", "tcp", "-m", "tcp", "--dport", port(dport),
		"-m", "conntrack", "--ctstate", "NEW")
	if orig.IsValid() {
		m = append(m, "--ctorigdst", orig.Addr().String(), "--ctorigdstport", port(orig.Port()))
	}
	return append(m, "-m", "comment", "--comment", comment(p))
}

// buildRules returns the rules of a valid, normalized pinhole in the order
// they are added: the filter accept first, the nat rule that diverts the
// connection last, so that no connection is rewritten before it can be
// accepted. They are deleted in the reverse order.
func buildRules(c chains, p Pinhole) []rule {
	var none netip.AddrPort
	switch p.Deliver {
	case AcceptLocal:
		// -A PREFIX-INPUT -s From -d To.addr -p tcp -m tcp --dport To.port
		//    -m conntrack --ctstate NEW -m comment --comment "ftpgate s=S p=N" -j ACCEPT
		return []rule{{tableFilter, c.input,
			append(match(p, p.From, p.To.Addr(), p.To.Port(), none), "-j", "ACCEPT")}}

	case AcceptForward:
		// -A PREFIX-FORWARD -s From -d To.addr -p tcp -m tcp --dport To.port
		//    -m conntrack --ctstate NEW -m comment --comment "ftpgate s=S p=N" -j ACCEPT
		return []rule{{tableFilter, c.forward,
			append(match(p, p.From, p.To.Addr(), p.To.Port(), none), "-j", "ACCEPT")}}

	case Redirect:
		return []rule{
			// -A PREFIX-INPUT -s From -p tcp -m tcp --dport RedirectPort
			//    -m conntrack --ctstate NEW --ctorigdst To.addr --ctorigdstport To.port
			//    -m comment --comment "ftpgate s=S p=N" -j ACCEPT
			{tableFilter, c.input,
				append(match(p, p.From, netip.Addr{}, p.RedirectPort, p.To), "-j", "ACCEPT")},
			// -t nat -A PREFIX-PREROUTING -s From -d To.addr -p tcp -m tcp --dport To.port
			//    -m conntrack --ctstate NEW -m comment --comment "ftpgate s=S p=N"
			//    -j REDIRECT --to-ports RedirectPort
			{tableNat, c.prerouting,
				append(match(p, p.From, p.To.Addr(), p.To.Port(), none),
					"-j", "REDIRECT", "--to-ports", port(p.RedirectPort))},
		}

	case DNAT:
		rs := []rule{
			// -A PREFIX-FORWARD -s From -d DNATTo.addr -p tcp -m tcp --dport DNATTo.port
			//    -m conntrack --ctstate NEW --ctorigdst To.addr --ctorigdstport To.port
			//    -m comment --comment "ftpgate s=S p=N" -j ACCEPT
			{tableFilter, c.forward,
				append(match(p, p.From, p.DNATTo.Addr(), p.DNATTo.Port(), p.To), "-j", "ACCEPT")},
		}
		if p.SNATTo.IsValid() {
			// -t nat -A PREFIX-POSTROUTING -s From -d DNATTo.addr -p tcp -m tcp --dport DNATTo.port
			//    -m conntrack --ctstate NEW --ctorigdst To.addr --ctorigdstport To.port
			//    -m comment --comment "ftpgate s=S p=N" -j SNAT --to-source SNATTo
			rs = append(rs, rule{tableNat, c.postrouting,
				append(match(p, p.From, p.DNATTo.Addr(), p.DNATTo.Port(), p.To),
					"-j", "SNAT", "--to-source", p.SNATTo.String())})
		}
		// -t nat -A PREFIX-PREROUTING -s From -d To.addr -p tcp -m tcp --dport To.port
		//    -m conntrack --ctstate NEW -m comment --comment "ftpgate s=S p=N"
		//    -j DNAT --to-destination DNATTo       (IPv6: [addr]:port)
		return append(rs, rule{tableNat, c.prerouting,
			append(match(p, p.From, p.To.Addr(), p.To.Port(), none),
				"-j", "DNAT", "--to-destination", p.DNATTo.String())})
	}
	return nil
}

// formatSpec joins a rulespec the way `iptables -S` prints it: arguments
// that are empty or contain a space, a quote or a backslash are put in
// double quotes, with quotes and backslashes escaped (iptables quotes more
// eagerly, but never differently for the comments ftpgate writes).
func formatSpec(spec []string) string {
	var b strings.Builder
	for i, a := range spec {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a != "" && !strings.ContainsAny(a, " \t\"\\'") {
			b.WriteString(a)
			continue
		}
		b.WriteByte('"')
		for _, r := range a {
			if r == '"' || r == '\\' || r == '\'' {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
		b.WriteByte('"')
	}
	return b.String()
}

// splitSpec splits one line of `iptables -S` output into arguments, undoing
// the quoting of formatSpec (and of iptables' own save format).
func splitSpec(line string) []string {
	var (
		args   []string
		cur    strings.Builder
		inArg  bool
		quoted bool
	)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quoted && c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case quoted && c == '"':
			quoted = false
		case !quoted && c == '"':
			quoted, inArg = true, true
		case !quoted && (c == ' ' || c == '\t'):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args
}

// jumpSpec returns the rulespec of a listed rule (without "-A CHAIN") if the
// rule jumps or goes to target, or nil.
func jumpSpec(line, target string) []string {
	args := splitSpec(line)
	if len(args) < 2 || args[0] != "-A" {
		return nil
	}
	spec := args[2:]
	for i := 0; i+1 < len(spec); i++ {
		if (spec[i] == "-j" || spec[i] == "-g" || spec[i] == "--jump" || spec[i] == "--goto") && spec[i+1] == target {
			return spec
		}
	}
	return nil
}
