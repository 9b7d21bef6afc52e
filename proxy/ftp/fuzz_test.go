package ftp

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// FuzzParseCommand checks that ParseCommand never panics, and that what it
// accepts is VERB or VERB SP arguments by construction: the verb is 1 to 16
// upper-case letters, byte-exact (case aside) at the start of the line; the
// argument is the rest, without CR, LF, NUL or a lone IAC; a liberal
// server's split (SplitCommand, and ProFTPD's split at any white space)
// sees the same verb; and the command ftpgate would forward parses back to
// the same result. What it refuses, it refuses with ErrCommandSyntax.
func FuzzParseCommand(f *testing.F) {
	for _, tt := range parseCommandTests {
		f.Add([]byte(tt.line))
	}
	for _, tt := range splitCommandTests {
		f.Add([]byte(tt.line))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		prefix := TelnetPrefix(line)
		if !bytes.HasPrefix(line, prefix) {
			t.Fatalf("TelnetPrefix(%q) = %q, not a prefix", line, prefix)
		}
		cmd, err := ParseCommand(line)
		if err != nil {
			if !errors.Is(err, ErrCommandSyntax) || cmd != (Command{}) {
				t.Fatalf("ParseCommand(%q) = %+q, %v; want a zero Command and ErrCommandSyntax", line, cmd, err)
			}
			return
		}
		if n := len(cmd.Verb); n == 0 || n > maxVerbLen ||
			strings.ContainsFunc(cmd.Verb, func(r rune) bool { return r < 'A' || r > 'Z' }) {
			t.Fatalf("ParseCommand(%q).Verb = %q, not 1 to %d upper-case letters", line, cmd.Verb, maxVerbLen)
		}
		if strings.ContainsAny(cmd.Arg, "\r\n\x00") || strings.Count(cmd.Arg, "\xff")%2 != 0 {
			t.Fatalf("ParseCommand(%q).Arg = %q holds CR, LF, NUL or a lone IAC", line, cmd.Arg)
		}
		rest := line[len(prefix):]
		if !asciiUpperEqual(rest[:len(cmd.Verb)], cmd.Verb) {
			t.Fatalf("ParseCommand(%q).Verb = %q, line has %q", line, cmd.Verb, rest[:len(cmd.Verb)])
		}
		if split := SplitCommand(line); split != cmd {
			t.Fatalf("ParseCommand(%q) = %+q, but a server splitting at the first space sees %+q", line, cmd, split)
		}
		if f := strings.Fields(strings.ToUpper(string(rest))); len(f) == 0 || f[0] != cmd.Verb {
			t.Fatalf("ParseCommand(%q).Verb = %q, but a server splitting at any white space sees %q", line, cmd.Verb, f)
		}
		built := AppendCommand(nil, cmd.Verb, cmd.Arg)
		if again, err := ParseCommand(built); err != nil || again != cmd {
			t.Fatalf("ParseCommand(%q) = %+q, but ParseCommand(AppendCommand(...) = %q) = %+q, %v", line, cmd, built, again, err)
		}
	})
}

// asciiUpperEqual reports whether b with its ASCII letters upper-cased is s.
func asciiUpperEqual(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// FuzzReplyReader feeds arbitrary bytes to a ReplyReader, whole and one byte
// per Read. It checks that Next never panics, that every line it accepts
// carries a code in 100..599 (the code of the reply's first line, for every
// line of a multi-line reply), and that the lines it returns are the input,
// byte for byte, unless a line was too long.
func FuzzReplyReader(f *testing.F) {
	for _, tt := range replyTests {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, wrap := range []func(io.Reader) io.Reader{
			func(r io.Reader) io.Reader { return r },
			iotest.OneByteReader,
		} {
			const max = 64
			rr := NewReplyReader(wrap(bytes.NewReader(data)), max)
			var (
				out     []byte
				tooLong bool
				code    int // code of the reply in progress, 0 between replies
			)
			for i := 0; ; i++ {
				if i > len(data)+1 {
					t.Fatalf("Next made no progress after %d calls on %q", i, data)
				}
				l, err := rr.Next()
				if len(l.Raw) > max {
					t.Fatalf("Next returned %d bytes, more than the limit %d", len(l.Raw), max)
				}
				out = append(out, l.Raw...)
				if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
					break
				}
				if errors.Is(err, ErrLineTooLong) {
					tooLong = true
					continue
				}
				if errors.Is(err, ErrBadReply) {
					if code != 0 {
						t.Fatalf("ErrBadReply inside reply %d: %v", code, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("Next: unexpected error %v", err)
				}
				if l.Code < 100 || l.Code > 599 {
					t.Fatalf("Next returned line %q with code %d", l.Raw, l.Code)
				}
				if code != 0 && l.Code != code {
					t.Fatalf("line %q of reply %d has code %d", l.Raw, code, l.Code)
				}
				if !bytes.HasSuffix(l.Raw, []byte("\n")) {
					t.Fatalf("line %q has no terminator", l.Raw)
				}
				if l.Last {
					code = 0
				} else {
					code = l.Code
				}
				if (code != 0) != rr.InReply() {
					t.Fatalf("InReply() = %v after line %+v", rr.InReply(), l)
				}
			}
			if !tooLong && !bytes.Equal(out, data) {
				t.Fatalf("lines returned %q, input was %q", out, data)
			}
		}
	})
}
