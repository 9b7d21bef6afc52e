package ftp

import (
	"errors"
	"strings"
	"testing"
)

// splitCommandTests are lines as liberal servers split them (SplitCommand).
var splitCommandTests = []struct {
	name   string
	line   string
	verb   string
	arg    string
	prefix string // TelnetPrefix
}{
	{name: "no argument", line: "PASV\r\n", verb: "PASV"},
	{name: "bare LF", line: "PASV\n", verb: "PASV"},
	{name: "no terminator", line: "NOOP", verb: "NOOP"},
	{name: "lower case", line: "pasv\r\n", verb: "PASV"},
	{name: "mixed case with argument", line: "ReTr file.txt\r\n", verb: "RETR", arg: "file.txt"},
	{name: "argument bare LF", line: "retr file.txt\n", verb: "RETR", arg: "file.txt"},
	{name: "spaces kept", line: "STOR  two  spaces  \r\n", verb: "STOR", arg: " two  spaces  "},
	{name: "trailing space kept", line: "CWD dir \r\n", verb: "CWD", arg: "dir "},
	{name: "password trailing space", line: "pAsS secret \n", verb: "PASS", arg: "secret "},
	{name: "space without argument", line: "LIST \r\n", verb: "LIST"},
	{name: "IAC IAC in argument", line: "STOR a\xff\xffb\r\n", verb: "STOR", arg: "a\xff\xffb"},
	{name: "high bytes in argument", line: "RETR caf\xc3\xa9 \xe9\r\n", verb: "RETR", arg: "caf\xc3\xa9 \xe9"},
	{name: "CR inside argument", line: "RETR a\rb\r\n", verb: "RETR", arg: "a\rb"},
	{name: "only one CR stripped", line: "RETR a\r\r\n", verb: "RETR", arg: "a\r"},
	{name: "CR without LF kept", line: "PASV\r", verb: "PASV\r"},
	{name: "arguments with spaces", line: "SITE CHMOD 755 f\n", verb: "SITE", arg: "CHMOD 755 f"},
	{name: "PORT", line: "port 10,0,0,1,4,1\r\n", verb: "PORT", arg: "10,0,0,1,4,1"},
	{name: "EPRT", line: "EPRT |2|::1|5282|\r\n", verb: "EPRT", arg: "|2|::1|5282|"},
	{name: "unknown verb", line: "frob x\r\n", verb: "FROB", arg: "x"},
	{name: "16 letters", line: "abcdefghijklmnop\r\n", verb: "ABCDEFGHIJKLMNOP"},
	{name: "20 letters", line: "abcdefghijklmnopqrst x\r\n", verb: "ABCDEFGHIJKLMNOPQRST", arg: "x"},
	{name: "verb with other bytes", line: "x-y\tz\xe9 a\r\n", verb: "X-Y\tZ\xe9", arg: "a"},
	{name: "leading space", line: " PASV\r\n", verb: "", arg: "PASV"},
	{name: "empty line CRLF", line: "\r\n"},
	{name: "empty line LF", line: "\n"},
	{name: "empty", line: ""},
	{
		name: "IAC IP IAC DM ABOR", line: "\xff\xf4\xff\xf2ABOR\r\n",
		verb: "ABOR", prefix: "\xff\xf4\xff\xf2",
	},
	{
		name: "IAC IP IAC DM abor, bare LF", line: "\xff\xf4\xff\xf2abor\n",
		verb: "ABOR", prefix: "\xff\xf4\xff\xf2",
	},
	{
		name: "IAC WILL option then IAC IP", line: "\xff\xfb\x01\xff\xf4abor\r\n",
		verb: "ABOR", prefix: "\xff\xfb\x01\xff\xf4",
	},
	{
		name: "IAC DONT option", line: "\xff\xfe\x22STAT\r\n",
		verb: "STAT", prefix: "\xff\xfe\x22",
	},
	{name: "IAC SE", line: "\xff\xf0NOOP\r\n", verb: "NOOP", prefix: "\xff\xf0"},
	{name: "IAC IAC is data", line: "\xff\xffABOR\r\n", verb: "\xff\xffABOR"},
	{name: "IAC then letter is data", line: "\xffABOR\r\n", verb: "\xffABOR"},
	{name: "lone IAC", line: "\xff", verb: "\xff"},
	{name: "IAC WILL without option", line: "\xff\xfb", verb: "\xff\xfb"},
	{name: "IAC IP then IAC WILL without option", line: "\xff\xf4\xff\xfb", verb: "\xff\xfb", prefix: "\xff\xf4"},
	{name: "IAC WILL with LF as option", line: "\xff\xfb\n", prefix: "\xff\xfb\n"},
	{name: "only a Telnet prefix", line: "\xff\xf4\xff\xf2\r\n", prefix: "\xff\xf4\xff\xf2"},
	{name: "IAC IP then space", line: "\xff\xf4 ABOR\r\n", arg: "ABOR", prefix: "\xff\xf4"},
}

// parseCommandTests are lines as ParseCommand takes them: VERB or VERB SP
// arguments, or an error (bad). The bad ones include every spelling that a
// real server executes as another verb than ftpgate would see.
var parseCommandTests = []struct {
	name   string
	line   string
	verb   string
	arg    string
	bad    bool
	prefix string // TelnetPrefix
}{
	{name: "no argument", line: "PASV\r\n", verb: "PASV"},
	{name: "bare LF", line: "PASV\n", verb: "PASV"},
	{name: "no terminator", line: "NOOP", verb: "NOOP"},
	{name: "lower case", line: "pasv\r\n", verb: "PASV"},
	{name: "mixed case with argument", line: "ReTr file.txt\r\n", verb: "RETR", arg: "file.txt"},
	{name: "spaces kept", line: "STOR  two  spaces  \r\n", verb: "STOR", arg: " two  spaces  "},
	{name: "password trailing space", line: "pAsS secret \n", verb: "PASS", arg: "secret "},
	{name: "space without argument", line: "LIST \r\n", verb: "LIST"},
	{name: "IAC IAC in argument", line: "STOR a\xff\xffb\r\n", verb: "STOR", arg: "a\xff\xffb"},
	{name: "high bytes in argument", line: "RETR caf\xc3\xa9 \xe9\r\n", verb: "RETR", arg: "caf\xc3\xa9 \xe9"},
	{name: "tab inside argument", line: "RETR a\tb\r\n", verb: "RETR", arg: "a\tb"},
	{name: "arguments with spaces", line: "SITE CHMOD 755 f\n", verb: "SITE", arg: "CHMOD 755 f"},
	{name: "PORT", line: "port 10,0,0,1,4,1\r\n", verb: "PORT", arg: "10,0,0,1,4,1"},
	{name: "unknown verb", line: "frob x\r\n", verb: "FROB", arg: "x"},
	{name: "16 letters", line: "abcdefghijklmnop\r\n", verb: "ABCDEFGHIJKLMNOP"},
	{name: "IAC IP IAC DM ABOR", line: "\xff\xf4\xff\xf2ABOR\r\n", verb: "ABOR", prefix: "\xff\xf4\xff\xf2"},
	{name: "IAC DONT option", line: "\xff\xfe\x22STAT\r\n", verb: "STAT", prefix: "\xff\xfe\x22"},

	// ProFTPD splits the verb at any white space.
	{name: "PORT TAB", line: "PORT\t198,18,0,1,200,1\r\n", bad: true},
	{name: "PASV TAB", line: "PASV\t\r\n", bad: true},
	{name: "PASS TAB", line: "PASS\tsecret\r\n", bad: true},
	{name: "EPSV vertical tab", line: "EPSV\v\r\n", bad: true},
	{name: "EPRT form feed", line: "EPRT\f|1|198.18.0.1|5000|\r\n", bad: true},
	// vsftpd and pure-ftpd take P@SW for PASV.
	{name: "P@SW", line: "P@SW\r\n", bad: true},
	{name: "digit in the verb", line: "PASV1\r\n", bad: true},
	{name: "byte after the verb", line: "PASV@\r\n", bad: true},
	{name: "NUL after the verb", line: "PASV\x00\r\n", bad: true},
	{name: "leading space", line: " PASV\r\n", bad: true},
	{name: "leading tab", line: "\tPASV\r\n", bad: true},
	{name: "empty line CRLF", line: "\r\n", bad: true},
	{name: "empty line LF", line: "\n", bad: true},
	{name: "empty", line: "", bad: true},
	{name: "17 letters", line: "abcdefghijklmnopq\r\n", bad: true},
	{name: "high byte in the verb", line: "PAS\xd6\r\n", bad: true},
	// A second command hidden behind a bare CR.
	{name: "CR inside argument", line: "RETR a\rPASV\r\n", bad: true},
	{name: "CR without LF", line: "PASV\r", bad: true},
	{name: "NUL in argument", line: "RETR a\x00b\r\n", bad: true},
	// A server that processes Telnet inside the line would drop these.
	{name: "Telnet IP inside the verb", line: "PA\xff\xf4SV\r\n", bad: true},
	{name: "Telnet IP inside the argument", line: "RETR a\xff\xf4\r\n", bad: true},
	{name: "lone IAC at the end", line: "RETR a\xff\r\n", bad: true},
	{name: "IAC IAC before the verb", line: "\xff\xffABOR\r\n", bad: true},
	{name: "only a Telnet prefix", line: "\xff\xf4\xff\xf2\r\n", bad: true, prefix: "\xff\xf4\xff\xf2"},
	{name: "IAC IP then space", line: "\xff\xf4 ABOR\r\n", bad: true, prefix: "\xff\xf4"},
}

func TestParseCommand(t *testing.T) {
	for _, tt := range parseCommandTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCommand([]byte(tt.line))
			switch {
			case tt.bad && !errors.Is(err, ErrCommandSyntax):
				t.Errorf("ParseCommand(%q) = %+q, %v; want ErrCommandSyntax", tt.line, got, err)
			case tt.bad && strings.Contains(err.Error(), "secret"):
				t.Errorf("ParseCommand(%q): the error quotes the line: %v", tt.line, err)
			case !tt.bad && err != nil:
				t.Errorf("ParseCommand(%q): %v", tt.line, err)
			case !tt.bad && got != (Command{Verb: tt.verb, Arg: tt.arg}):
				t.Errorf("ParseCommand(%q) = %+q, want %+q", tt.line, got, Command{Verb: tt.verb, Arg: tt.arg})
			}
			if p := TelnetPrefix([]byte(tt.line)); string(p) != tt.prefix {
				t.Errorf("TelnetPrefix(%q) = %q, want %q", tt.line, p, tt.prefix)
			}
		})
	}
}

func TestKnownVerb(t *testing.T) {
	for _, v := range []string{"USER", "PASS", "PASV", "EPSV", "MLSD", "SITE", "XMKD", "MFMT", "CLNT", "HOST", "AUTH"} {
		if !KnownVerb(v) {
			t.Errorf("KnownVerb(%q) = false", v)
		}
	}
	// SPSV and ESTP answer with addresses ftpgate does not rewrite.
	for _, v := range []string{"", "pasv", "FROB", "SPSV", "ESTP", "ESTA", "P@SW"} {
		if KnownVerb(v) {
			t.Errorf("KnownVerb(%q) = true", v)
		}
	}
}

func TestSplitCommand(t *testing.T) {
	for _, tt := range splitCommandTests {
		t.Run(tt.name, func(t *testing.T) {
			got := SplitCommand([]byte(tt.line))
			if want := (Command{Verb: tt.verb, Arg: tt.arg}); got != want {
				t.Errorf("SplitCommand(%q) = %+q, want %+q", tt.line, got, want)
			}
			if p := TelnetPrefix([]byte(tt.line)); string(p) != tt.prefix {
				t.Errorf("TelnetPrefix(%q) = %q, want %q", tt.line, p, tt.prefix)
			}
		})
	}
}

func TestParseCommandAllocs(t *testing.T) {
	tests := []struct {
		line string
		max  float64
	}{
		{"PASV\r\n", 0},
		{"pasv\n", 0},
		{"EPSV\r\n", 0},
		{"\xff\xf4\xff\xf2ABOR\r\n", 0},
		{"RETR file\r\n", 1}, // the Arg string
	}
	for _, tt := range tests {
		line := []byte(tt.line)
		allocs := testing.AllocsPerRun(1000, func() {
			if _, err := ParseCommand(line); err != nil {
				t.Fatal(err)
			}
		})
		if allocs > tt.max {
			t.Errorf("ParseCommand(%q): %v allocs per run, want at most %v", tt.line, allocs, tt.max)
		}
	}
}

func TestReadLineParseCommandAllocs(t *testing.T) {
	for _, in := range []string{"PASV\r\n", "QUIT\n"} {
		lr := NewLineReader(&loopReader{data: []byte(in)}, 512)
		want := strings.TrimSpace(in)
		allocs := testing.AllocsPerRun(1000, func() {
			line, err := lr.ReadLine()
			if err != nil {
				t.Fatal(err)
			}
			if cmd, err := ParseCommand(line); err != nil || cmd.Verb != want || cmd.Arg != "" {
				t.Fatalf("ParseCommand(%q) = %+q, %v", line, cmd, err)
			}
		})
		if allocs != 0 {
			t.Errorf("ReadLine + ParseCommand of %q: %v allocs per run, want 0", in, allocs)
		}
	}
}

func TestKnownVerbsAreUpperCaseLetters(t *testing.T) {
	for k, v := range knownVerbs {
		if k != v || len(k) > maxVerbLen || strings.Trim(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
			t.Errorf("knownVerbs[%q] = %q: want an upper-case verb of at most %d letters mapped to itself", k, v, maxVerbLen)
		}
	}
}

func TestAppendCommand(t *testing.T) {
	tests := []struct {
		dst, verb, arg string
		want           string
	}{
		{"", "PASV", "", "PASV\r\n"},
		{"", "PORT", "10,0,0,1,4,1", "PORT 10,0,0,1,4,1\r\n"},
		{"", "STOR", " a  b ", "STOR  a  b \r\n"},
		{"\xff\xf4\xff\xf2", "ABOR", "", "\xff\xf4\xff\xf2ABOR\r\n"},
		{"", "STOR", "a\r\nDELE b", "STOR a  DELE b\r\n"},
		{"", "NO\nOP", "", "NO OP\r\n"},
	}
	for _, tt := range tests {
		got := AppendCommand([]byte(tt.dst), tt.verb, tt.arg)
		if string(got) != tt.want {
			t.Errorf("AppendCommand(%q, %q, %q) = %q, want %q", tt.dst, tt.verb, tt.arg, got, tt.want)
		}
	}
}

func TestIsTransferCommand(t *testing.T) {
	for _, v := range []string{"RETR", "STOR", "STOU", "APPE", "LIST", "NLST", "MLSD"} {
		if !IsTransferCommand(v) {
			t.Errorf("IsTransferCommand(%q) = false, want true", v)
		}
	}
	for _, v := range []string{"", "PASV", "PORT", "MLST", "STAT", "SIZE", "retr", "ABOR"} {
		if IsTransferCommand(v) {
			t.Errorf("IsTransferCommand(%q) = true, want false", v)
		}
	}
}

func BenchmarkParseCommand(b *testing.B) {
	for _, bb := range []struct{ name, line string }{
		{"PASV", "PASV\r\n"},
		{"RETR", "RETR some/longer/path/to/a/file.tar.gz\r\n"},
		{"TelnetABOR", "\xff\xf4\xff\xf2ABOR\r\n"},
		{"unknown", "frob\r\n"},
	} {
		b.Run(bb.name, func(b *testing.B) {
			l := []byte(bb.line)
			b.ReportAllocs()
			for b.Loop() {
				ParseCommand(l)
			}
		})
	}
}
