package ftp

import (
	"bytes"
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

// maxVerbLen is the longest verb looked up among the known verbs. RFC 959
// verbs have 3 or 4 letters; later extensions stay well below this.
const maxVerbLen = 16

// knownVerbs maps the verbs of RFC 959 and its common extensions to
// themselves, so that parsing them returns a constant string and does not
// allocate.
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
		// common non-standard ones
		"CLNT", "AVBL", "XCRC", "HASH",
	}
	m := make(map[string]string, len(verbs))
	for _, v := range verbs {
		m[v] = v
	}
	return m
}()

// Command is one parsed client command.
type Command struct {
	// Verb is the command verb in upper case (ASCII letters only are
	// mapped), e.g. "PASV". It is empty for an empty line.
	Verb string
	// Arg is everything after the first space, byte for byte, without the
	// line terminator: inner and trailing spaces, Telnet IAC IAC pairs and
	// bytes >= 0x80 are kept. It is empty if there is no space.
	Arg string
}

// ParseCommand parses a command line as returned by LineReader.ReadLine.
// It first skips the leading Telnet sequences that TelnetPrefix returns, then
// takes the verb as the bytes up to the first space or the line terminator
// (CRLF, or a bare LF), and the argument as the bytes after that space. The
// verb is upper-cased; RFC 959 verbs are 3 or 4 letters, and a verb of any
// length or with bytes other than letters is returned upper-cased as it is,
// for the caller to reject. Parsing the common verbs does not allocate.
// ParseCommand never fails; a line without a terminator is parsed as if it
// had one.
func ParseCommand(line []byte) Command {
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
