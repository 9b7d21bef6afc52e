package ftp

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Telnet bytes that may precede a command on the control connection, which
// RFC 959 section 4.1.3 defines as a Telnet session: a client aborting a
// transfer sends "IAC IP IAC DM ABOR" (the DM as TCP urgent data).
const (
	telnetIAC  = 0xff // interpret as command
	telnetWILL = 0xfb // WILL, WONT, DO and DONT (0xfb..0xfe) take an option byte
	telnetSE   = 0xf0 // lowest Telnet command byte
)

// maxVerbLen is the longest verb ParseCommand accepts. RFC 959 verbs have
// 3 or 4 letters; later extensions stay well below this.
const maxVerbLen = 16

// ErrCommandSyntax is what ParseCommand returns, wrapped, for a line that
// is not "VERB" or "VERB SP arguments".
var ErrCommandSyntax = errors.New("command line is not VERB or VERB SP arguments")

// knownVerbs maps the verbs that ftpgate knows to themselves, so that
// parsing them returns a constant string and does not allocate. A verb is
// here because an RFC or a widespread server defines it and ftpgate knows
// what it does: none of them carries an address that ftpgate does not
// intercept (PORT, EPRT, PASV, EPSV, LPRT, LPSV are handled by the proxy).
var knownVerbs = func() map[string]string {
	verbs := []string{
		// RFC 959
		"USER", "PASS", "ACCT", "CWD", "CDUP", "SMNT", "REIN", "QUIT",
		"PORT", "PASV", "TYPE", "STRU", "MODE", "RETR", "STOR", "STOU",
		"APPE", "ALLO", "REST", "RNFR", "RNTO", "ABOR", "DELE", "RMD",
		"MKD", "PWD", "LIST", "NLST", "SITE", "SYST", "STAT", "HELP",
		"NOOP",
		// RFC 775 (X-prefixed directory commands), RFC 1639 (LPRT/LPSV)
		"XCUP", "XCWD", "XMKD", "XPWD", "XRMD", "LPRT", "LPSV",
		// RFC 2228, RFC 4217 (security)
		"AUTH", "ADAT", "PROT", "PBSZ", "CCC", "MIC", "CONF", "ENC",
		// RFC 2389 (FEAT, OPTS), RFC 2428 (EPRT, EPSV), RFC 2640 (LANG)
		"FEAT", "OPTS", "EPRT", "EPSV", "LANG",
		// RFC 3659, RFC 7151, draft-somers-ftp-mfxx
		"MDTM", "SIZE", "MLST", "MLSD", "HOST", "MFMT", "MFCT", "MFF",
		// common non-standard ones: client identification, free space,
		// checksums (draft-bryan-ftpext-hash and the X-prefixed forms; a
		// verb is letters only, so XMD5, XSHA1 and such cannot be known)
		"CLNT", "AVBL", "XCRC", "XSHA", "HASH",
	}
	m := make(map[string]string, len(verbs))
	for _, v := range verbs {
		m[v] = v
	}
	return m
}()

// KnownVerb reports whether verb, in upper case, is one that ftpgate knows
// (see knownVerbs).
func KnownVerb(verb string) bool {
	_, ok := knownVerbs[verb]
	return ok
}

// KnownVerbs returns the verbs that ftpgate knows, sorted.
func KnownVerbs() []string {
	return slices.Sorted(maps.Keys(knownVerbs))
}

// Command is one parsed client command.
type Command struct {
	// Verb is the command verb in upper case, e.g. "PASV". ParseCommand
	// returns letters only; SplitCommand whatever the line had.
	Verb string
	// Arg is everything after the first space, byte for byte, without the
	// line terminator: inner and trailing spaces, Telnet IAC IAC pairs and
	// bytes >= 0x80 are kept. It is empty if there is no space.
	Arg string
}

// ParseCommand parses a command line as returned by LineReader.ReadLine,
// strictly: after the leading Telnet sequences that TelnetPrefix returns,
// the line must be VERB or VERB SP arguments, then the terminator (CRLF, a
// bare LF, or nothing at the end of the input). VERB is 1 to 16 ASCII
// letters, returned in upper case; the arguments may hold any byte but CR,
// LF and NUL, and Telnet IAC only doubled (an escaped 0xff data byte).
// Anything else (a tab or another byte after the verb, a leading space, an
// empty line, a Telnet command inside the line) is an error wrapping
// ErrCommandSyntax, whose text never quotes the line: it may hold a
// password.
//
// Servers split a verb more liberally (ProFTPD at any white space,
// vsftpd and pure-ftpd treat "P@SW" as PASV), so a proxy that forwards a
// line it could not parse this way lets an address-bearing command past
// its rewriting. Parsing the known verbs does not allocate.
func ParseCommand(line []byte) (Command, error) {
	body := trimEOL(line[len(TelnetPrefix(line)):])
	n := 0
	for n < len(body) && isLetter(body[n]) {
		n++
	}
	switch {
	case n == 0 && len(body) == 0:
		return Command{}, fmt.Errorf("empty line: %w", ErrCommandSyntax)
	case n == 0:
		return Command{}, fmt.Errorf("the line starts with byte %#02x, not a letter: %w", body[0], ErrCommandSyntax)
	case n > maxVerbLen:
		return Command{}, fmt.Errorf("a verb of more than %d letters: %w", maxVerbLen, ErrCommandSyntax)
	case n < len(body) && body[n] != ' ':
		return Command{}, fmt.Errorf("byte %#02x after the verb, not a space: %w", body[n], ErrCommandSyntax)
	}
	var arg []byte
	if n < len(body) {
		arg = body[n+1:]
	}
	for i := 0; i < len(arg); i++ {
		switch arg[i] {
		case '\r', '\n', 0:
			return Command{}, fmt.Errorf("byte %#02x in the arguments: %w", arg[i], ErrCommandSyntax)
		case telnetIAC:
			if i+1 == len(arg) || arg[i+1] != telnetIAC {
				return Command{}, fmt.Errorf("a Telnet command inside the line: %w", ErrCommandSyntax)
			}
			i++ // IAC IAC: one 0xff data byte
		}
	}
	return Command{Verb: upperVerb(body[:n]), Arg: string(arg)}, nil
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// SplitCommand splits a command line as liberal servers do: the verb is
// the bytes up to the first space, upper-cased (ASCII letters only are
// mapped), and may hold any byte; the argument is the bytes after that
// space. It never fails. It describes what a server may have understood
// (the trace tool), and must never decide what a proxy forwards: that is
// ParseCommand's job.
func SplitCommand(line []byte) Command {
	body := trimEOL(line[len(TelnetPrefix(line)):])
	verb, arg := body, []byte(nil)
	if i := bytes.IndexByte(body, ' '); i >= 0 {
		verb, arg = body[:i], body[i+1:]
	}
	return Command{Verb: upperVerb(verb), Arg: string(arg)}
}

// upperVerb returns b with its ASCII letters in upper case, as a constant
// string if it is a known verb.
func upperVerb(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) <= maxVerbLen {
		var up [maxVerbLen]byte
		letters := true
		for i, c := range b {
			switch {
			case 'a' <= c && c <= 'z':
				up[i] = c - ('a' - 'A')
			case 'A' <= c && c <= 'Z':
				up[i] = c
			default:
				letters = false
			}
		}
		if letters {
			if v, ok := knownVerbs[string(up[:len(b)])]; ok {
				return v
			}
			return string(up[:len(b)])
		}
	}
	// Not a verb: upper-case the ASCII letters only, keeping every other
	// byte (strings.ToUpper would replace invalid UTF-8).
	var sb strings.Builder
	sb.Grow(len(b))
	for _, c := range b {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		sb.WriteByte(c)
	}
	return sb.String()
}

// TelnetPrefix returns the Telnet command sequences at the start of line, as
// a subslice of line (empty if there are none). It recognises IAC followed by
// a command byte 240..250 (two bytes, e.g. IAC IP and IAC DM, which RFC 959
// section 4.1.3 has clients send before ABOR), and IAC WILL, WONT, DO or DONT
// followed by an option byte (three bytes). IAC IAC is an escaped data byte,
// not a command, and ends the prefix. A proxy forwarding "IAC IP IAC DM ABOR"
// keeps the prefix in front of the command it sends on.
func TelnetPrefix(line []byte) []byte {
	i := 0
	for i+1 < len(line) && line[i] == telnetIAC {
		switch c := line[i+1]; {
		case telnetSE <= c && c < telnetWILL:
			i += 2
		case telnetWILL <= c && c < telnetIAC:
			if i+2 >= len(line) {
				return line[:i]
			}
			i += 3
		default:
			return line[:i]
		}
	}
	return line[:i]
}

// AppendCommand appends the command line "VERB arg\r\n" to dst, or
// "VERB\r\n" if arg is empty, and returns the extended slice. CR and LF bytes
// in verb and arg are written as spaces, so the result is always exactly one
// line and cannot smuggle a second command.
func AppendCommand(dst []byte, verb, arg string) []byte {
	dst = appendOneLine(dst, verb)
	if arg != "" {
		dst = append(dst, ' ')
		dst = appendOneLine(dst, arg)
	}
	return append(dst, '\r', '\n')
}

// appendOneLine appends s to dst with each CR and LF replaced by a space.
func appendOneLine(dst []byte, s string) []byte {
	for {
		i := strings.IndexAny(s, "\r\n")
		if i < 0 {
			return append(dst, s...)
		}
		dst = append(dst, s[:i]...)
		dst = append(dst, ' ')
		s = s[i+1:]
	}
}

// IsTransferCommand reports whether verb, in upper case as ParseCommand
// returns it, is a command that opens a data connection: RETR, STOR, STOU,
// APPE, LIST, NLST or MLSD.
func IsTransferCommand(verb string) bool {
	switch verb {
	case "RETR", "STOR", "STOU", "APPE", "LIST", "NLST", "MLSD":
		return true
	}
	return false
}
