package proxy

import (
	"log/slog"
	"slices"
	"strings"

	"github.com/ftpgate/ftpgate/proxy/ftp"
)

// refusal is the reply ftpgate gives itself to a command it does not
// forward.
type refusal struct {
	code int
	text string
	end  bool // the session ends after the reply
}

// parseCommand parses one of the client's command lines and polices it:
// nothing crosses ftpgate unparsed (docs/security.md, "Smuggled commands").
// A line that is not VERB or VERB SP arguments is refused with 500, a verb
// that ftpgate does not know (ftp.KnownVerb, or the listener's ExtraVerbs)
// with 502; both are logged and counted, and neither is forwarded. The log
// never holds a refused line's bytes, nor the argument of PASS or ACCT.
func (ss *session) parseCommand(line []byte) (ftp.Command, *refusal) {
	cmd, err := ftp.ParseCommand(line)
	if err != nil {
		ss.srv.Metrics.command(ss.srv.Name, "")
		ss.reject("command refused", "command_syntax", "err", err, "bytes", len(line))
		return ftp.Command{}, &refusal{code: 500, text: "Syntax error: a command is a verb of letters, then a space and its arguments."}
	}
	ss.srv.Metrics.command(ss.srv.Name, cmd.Verb)
	if cmd.Verb == "PROXY" && ss.srv.ProxyProtocol {
		// A PROXY protocol header from a source that is not a trusted
		// load balancer (a trusted one's was read before the session):
		// not believed, and the connection is refused.
		ss.refused = true
		ss.reject("session refused", "proxy_protocol", "from", ss.clientPeer.String())
		return ftp.Command{}, &refusal{code: 421, text: "PROXY protocol header from an untrusted source.", end: true}
	}
	if !ftp.KnownVerb(cmd.Verb) && !ss.srv.extraVerb(cmd.Verb) {
		ss.reject("command refused", "unknown_verb", "verb", cmd.Verb)
		return ftp.Command{}, &refusal{code: 502, text: "Command not implemented."}
	}
	if r := ss.srv.policyRefusal(cmd); r != nil {
		ss.reject("command refused", "policy", "verb", cmd.Verb)
		return ftp.Command{}, r
	}
	if ss.log.Enabled(ss.ctx, slog.LevelDebug) {
		arg := cmd.Arg
		if cmd.Verb == "PASS" || cmd.Verb == "ACCT" {
			arg = "****"
		}
		ss.log.Debug("client command", "verb", cmd.Verb, "arg", arg)
	}
	return cmd, nil
}

// canonicalLine is what ftpgate forwards for a command it parsed from
// line: the line's Telnet prefix (IAC IP, IAC DM before ABOR or STAT, say),
// then "VERB arg" as parsed, and CRLF. The server sees exactly the command
// ftpgate understood, in RFC 959's spelling.
func canonicalLine(line []byte, cmd ftp.Command) []byte {
	prefix := ftp.TelnetPrefix(line)
	out := make([]byte, 0, len(prefix)+len(cmd.Verb)+1+len(cmd.Arg)+2)
	out = append(out, prefix...)
	return ftp.AppendCommand(out, cmd.Verb, cmd.Arg)
}

// extraVerb reports whether verb is one of the listener's ExtraVerbs.
func (s *Server) extraVerb(verb string) bool {
	for _, v := range s.ExtraVerbs {
		if v == verb {
			return true
		}
	}
	return false
}

// writeVerbs change files on the server: a ReadOnly listener refuses them.
// SITE is among them (SITE CHMOD, ProFTPD's SITE CPFR/CPTO, SITE SYMLINK,
// SITE UTIME, ...) except SITE HELP.
var writeVerbs = []string{"STOR", "STOU", "APPE", "DELE", "RMD", "XRMD", "MKD", "XMKD",
	"RNFR", "RNTO", "MFMT", "MFCT", "MFF", "SITE"}

// policyRefusal is the listener's answer to a command that its policy
// (DenyCommands, ReadOnly) refuses, or nil.
func (s *Server) policyRefusal(cmd ftp.Command) *refusal {
	if slices.Contains(s.DenyCommands, cmd.Verb) {
		return &refusal{code: 502, text: cmd.Verb + " is not allowed through this gateway."}
	}
	if s.ReadOnly && (slices.Contains(writeVerbs, cmd.Verb) || setsModTime(cmd)) {
		if cmd.Verb == "SITE" && strings.EqualFold(strings.Fields(cmd.Arg + " x")[0], "HELP") {
			return nil
		}
		return &refusal{code: 550, text: "Permission denied: this gateway is read-only."}
	}
	return nil
}

// setsModTime reports whether cmd is MDTM in its writing form, "MDTM
// YYYYMMDDHHMMSS[.sss] path", which vsftpd (mdtm_write) and others take as
// setting the file's time rather than reading it.
func setsModTime(cmd ftp.Command) bool {
	if cmd.Verb != "MDTM" {
		return false
	}
	stamp, _, ok := strings.Cut(cmd.Arg, " ")
	stamp, _, _ = strings.Cut(stamp, ".")
	return ok && len(stamp) == 14 && strings.Trim(stamp, "0123456789") == ""
}
