package proxy

import (
	"bytes"
	"strings"

	"github.com/ftpgate/ftpgate/proxy/ftp"
)

// unavailableFeatures are FEAT entries that ftpgate cannot carry: the TLS
// ones (RFC 2228, RFC 4217) while it does not terminate TLS, since it
// refuses AUTH, and the long-address commands that it refuses (RFC 1639).
var unavailableFeatures = []string{"AUTH", "PBSZ", "PROT", "CCC", "LPRT", "LPSV"}

// offeredFeatures are offered to every client: ftpgate answers EPSV and
// EPRT itself, whatever the server supports.
var offeredFeatures = []string{"EPRT", "EPSV"}

// tlsFeatures are offered when ftpgate speaks TLS to clients (RFC 4217
// section 6): it answers AUTH, PBSZ and PROT itself.
var tlsFeatures = []string{"AUTH TLS", "PBSZ", "PROT"}

// onFeatReply filters the server's FEAT reply (RFC 2389: "211-Features:",
// one feature per line, each starting with a space, then "211 End"): the
// features ftpgate cannot carry are removed, and EPRT and EPSV are offered
// if the server did not list them. Any other reply passes unchanged. It
// runs with mu held.
func (ss *session) onFeatReply(reply []byte, code int) []byte {
	if code != 211 {
		return reply
	}
	lines := bytes.SplitAfter(reply, []byte("\n"))
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1] // after the last line's LF
	}
	if len(lines) < 2 || !bytes.HasPrefix(lines[0], []byte("211-")) {
		return reply // a single-line 211: no features listed
	}
	out := append([]byte(nil), lines[0]...)
	seen := map[string]bool{}
	for _, l := range lines[1 : len(lines)-1] {
		name := featureName(l)
		if name != "" && isOneOf(name, unavailableFeatures) {
			ss.log.Debug("feature hidden from the client", "feature", strings.TrimSpace(string(l)))
			continue
		}
		seen[name] = true
		out = append(out, l...)
	}
	offered := offeredFeatures
	if ss.srv.ClientTLSMode != TLSOff {
		offered = append(offered[:len(offered):len(offered)], tlsFeatures...)
	}
	for _, f := range offered {
		if !seen[f] {
			out = append(out, ' ')
			out = append(out, f...)
			out = append(out, '\r', '\n')
		}
	}
	return append(out, lines[len(lines)-1]...)
}

// featureName is the upper-cased first word of a FEAT line, or "" if the
// line is not a feature line (it must start with a space).
func featureName(line []byte) string {
	if len(line) == 0 || line[0] != ' ' {
		return ""
	}
	return ftp.SplitCommand(bytes.TrimLeft(line, " ")).Verb
}

func isOneOf(s string, list []string) bool {
	for _, x := range list {
		if s == x {
			return true
		}
	}
	return false
}
