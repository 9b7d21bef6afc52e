package nat

import (
	"bufio"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The replies of real servers, collected by the end-to-end test TestInterop
// (e2e/interop_test.go) over real control connections and kept under
// testdata/replies/<server>.txt: what vsftpd, pure-ftpd and proftpd say to
// PASV, EPSV, EPRT, PORT, LPSV and EPSV ALL, over IPv4 and IPv6.

// replyServers are the servers whose replies must be there.
var replyServers = []string{"vsftpd", "pure-ftpd", "proftpd"}

// replyForms is every form of 227 and 229 reply the servers sent, their
// numbers written as N, with the outcome the parsers must give for it:
// nil, or the error (errors.Is) Parse227 or Parse229 must return. A form
// seen in testdata and missing here fails the test, so a new server version
// that phrases its replies differently is noticed.
var replyForms = []struct {
	server, family, form string
	err                  error
	note                 string
}{
	{"vsftpd", "ipv4", "227 Entering Passive Mode (N,N,N,N,N,N).", nil, "RFC 959 with a final period"},
	{"vsftpd", "ipv6", "227 Entering Passive Mode (N,N,N,N,N,N).", nil, "PASV over IPv6: address 0.0.0.0, the port is valid"},
	{"vsftpd", "ipv4", "229 Entering Extended Passive Mode (|||N|)", nil, "RFC 2428"},
	{"vsftpd", "ipv6", "229 Entering Extended Passive Mode (|||N|)", nil, "RFC 2428"},
	{"pure-ftpd", "ipv4", "227 Entering Passive Mode (N,N,N,N,N,N)", nil, "no final period"},
	{"pure-ftpd", "ipv4", "229 Extended Passive mode OK (|||N|)", nil, "its own text"},
	{"pure-ftpd", "ipv6", "229 Extended Passive mode OK (|||N|)", nil, "its own text"},
	{"proftpd", "ipv4", "227 Entering Passive Mode (N,N,N,N,N,N).", nil, "RFC 959 with a final period"},
	{"proftpd", "ipv6", "227 Entering Passive Mode (N,N,N).", ErrSyntax, "PASV over IPv6: three numbers, not an address"},
	{"proftpd", "ipv4", "229 Entering Extended Passive Mode (|||N|)", nil, "RFC 2428"},
	{"proftpd", "ipv6", "229 Entering Extended Passive Mode (|||N|)", nil, "RFC 2428"},
}

// serverReply is one line of a replies file.
type serverReply struct {
	family, command, reply string
	line                   int
}

// serverReplies is one replies file.
type serverReplies struct {
	version         string
	addr4, addr6    netip.Addr
	passive         PortRange
	replies         []serverReply
	sawPASV, sawEPS bool
}

func readServerReplies(t *testing.T, path string) serverReplies {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r serverReplies
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, "\t")
		switch {
		case fields[0] == "server" && len(fields) == 2:
			r.version = fields[1]
		case fields[0] == "address" && len(fields) == 3:
			r.addr4, r.addr6 = netip.MustParseAddr(fields[1]), netip.MustParseAddr(fields[2])
		case fields[0] == "passive" && len(fields) == 2:
			if r.passive, err = ParsePortRange(fields[1]); err != nil {
				t.Fatalf("%s:%d: %v", path, n, err)
			}
		case (fields[0] == "ipv4" || fields[0] == "ipv6") && len(fields) == 3:
			reply := fields[2]
			if strings.HasPrefix(reply, `"`) {
				if reply, err = strconv.Unquote(reply); err != nil {
					t.Fatalf("%s:%d: %v", path, n, err)
				}
			}
			r.replies = append(r.replies, serverReply{family: fields[0], command: fields[1], reply: reply, line: n})
		default:
			t.Fatalf("%s:%d: unknown line %q", path, n, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if r.version == "" || !r.addr4.IsValid() || !r.addr6.IsValid() || r.passive.Len() == 0 || len(r.replies) == 0 {
		t.Fatalf("%s: lacks the server, address or passive line, or replies", path)
	}
	return r
}

var replyNumbers = regexp.MustCompile(`[0-9]+`)

// formOf is a reply with the numbers after its code written as N.
func formOf(reply string) string {
	if len(reply) < 3 {
		return reply
	}
	return reply[:3] + replyNumbers.ReplaceAllString(reply[3:], "N")
}

// TestServerReplies parses every 227 and 229 reply that vsftpd, pure-ftpd
// and proftpd really sent with Parse227 and Parse229, checks that each
// leads ftpgate to the server's control address and a port of its passive
// range, and checks the EPRT and PORT forms ftpgate sends against what the
// servers accepted.
func TestServerReplies(t *testing.T) {
	for _, server := range replyServers {
		t.Run(server, func(t *testing.T) {
			path := filepath.Join("testdata", "replies", server+".txt")
			r := readServerReplies(t, path)
			t.Logf("%s: %d replies", r.version, len(r.replies))
			for _, rep := range r.replies {
				where := path + ":" + strconv.Itoa(rep.line)
				control := r.addr4
				if rep.family == "ipv6" {
					control = r.addr6
				}
				code := rep.reply[:min(3, len(rep.reply))]
				if code == "227" || code == "229" {
					checkReplyForm(t, where, server, rep)
				}
				switch code {
				case "227":
					ap, err := Parse227(rep.reply)
					if err != nil {
						if want := formErr(server, rep); want == nil || !errors.Is(err, want) {
							t.Errorf("%s: Parse227(%q): %v", where, rep.reply, err)
						}
						continue
					}
					if rep.family == "ipv4" && ap.Addr() != r.addr4 {
						t.Errorf("%s: Parse227(%q) = %v, want the server's address %v", where, rep.reply, ap, r.addr4)
					}
					if rep.family == "ipv6" && !ap.Addr().IsUnspecified() {
						t.Errorf("%s: a 227 over IPv6 names %v; only 0.0.0.0 (no address) was seen", where, ap.Addr())
					}
					checkTarget(t, where, control, ap, r.passive)
					r.sawPASV = true
				case "229":
					port, err := Parse229(rep.reply)
					if err != nil {
						t.Errorf("%s: Parse229(%q): %v", where, rep.reply, err)
						continue
					}
					checkTarget(t, where, control, netip.AddrPortFrom(netip.Addr{}, port), r.passive)
					r.sawEPS = true
				default:
					// No other reply is taken for a 227 or 229.
					if _, err := Parse227(rep.reply); !errors.Is(err, ErrSyntax) {
						t.Errorf("%s: Parse227(%q) = %v, want ErrSyntax", where, rep.reply, err)
					}
					if _, err := Parse229(rep.reply); !errors.Is(err, ErrSyntax) {
						t.Errorf("%s: Parse229(%q) = %v, want ErrSyntax", where, rep.reply, err)
					}
				}
				checkActiveForm(t, where, rep, code)
			}
			if !r.sawPASV || !r.sawEPS {
				t.Errorf("%s: want at least one good 227 and one 229 reply (227: %v, 229: %v)", path, r.sawPASV, r.sawEPS)
			}
		})
	}
}

// checkReplyForm fails when a 227 or 229 reply has a form missing from
// replyForms.
func checkReplyForm(t *testing.T, where, server string, rep serverReply) {
	t.Helper()
	form := formOf(rep.reply)
	for _, f := range replyForms {
		if f.server == server && f.family == rep.family && f.form == form {
			return
		}
	}
	t.Errorf("%s: %s sent a new form over %s: %q (add it to replyForms)", where, server, rep.family, form)
}

// formErr is the error replyForms wants for rep's form, or nil.
func formErr(server string, rep serverReply) error {
	form := formOf(rep.reply)
	for _, f := range replyForms {
		if f.server == server && f.family == rep.family && f.form == form {
			return f.err
		}
	}
	return nil
}

// checkTarget checks where ftpgate connects for a passive reply: the
// server's control address and the advertised port, which must be in the
// server's passive range.
func checkTarget(t *testing.T, where string, control netip.Addr, advertised netip.AddrPort, passive PortRange) {
	t.Helper()
	target, _ := PassiveTarget(control, advertised)
	if target.Addr() != control || !passive.Contains(target.Port()) {
		t.Errorf("%s: PassiveTarget(%v, %v) = %v, want %v and a port in %v", where, control, advertised, target, control, passive)
	}
}

// checkActiveForm checks an EPRT or PORT that a server answered: the
// argument parses, ftpgate formats the same text for it (it is the form
// ftpgate sends), a server accepts it (200) on a control connection of the
// same family, and an unknown network protocol is ErrFamily and refused.
func checkActiveForm(t *testing.T, where string, rep serverReply, code string) {
	t.Helper()
	verb, arg, _ := strings.Cut(rep.command, " ")
	var ap netip.AddrPort
	var err error
	switch verb {
	case "EPRT":
		ap, err = ParseEPRT(arg)
		if strings.HasPrefix(arg, "|3|") {
			if !errors.Is(err, ErrFamily) {
				t.Errorf("%s: ParseEPRT(%q) = %v, want ErrFamily", where, arg, err)
			}
			if code[0] != '5' {
				t.Errorf("%s: a server accepted %q: %q", where, rep.command, rep.reply)
			}
			return
		}
		if err == nil && FormatEPRT(ap) != arg {
			t.Errorf("%s: FormatEPRT(%v) = %q, want %q", where, ap, FormatEPRT(ap), arg)
		}
	case "PORT":
		ap, err = ParsePORT(arg)
		if err == nil && FormatPORT(ap) != arg {
			t.Errorf("%s: FormatPORT(%v) = %q, want %q", where, ap, FormatPORT(ap), arg)
		}
	default:
		return
	}
	if err != nil {
		t.Errorf("%s: parsing %q: %v", where, rep.command, err)
		return
	}
	sameFamily := ap.Addr().Is6() == (rep.family == "ipv6")
	if sameFamily && code != "200" {
		t.Errorf("%s: the server refused %q, the form ftpgate sends: %q", where, rep.command, rep.reply)
	}
	if !sameFamily && code[0] != '5' {
		t.Errorf("%s: the server accepted %q over %s: %q", where, rep.command, rep.family, rep.reply)
	}
}
