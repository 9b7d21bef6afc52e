package ftp

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// replyResult is one ReplyReader.Next outcome.
type replyResult struct {
	raw  string
	code int
	last bool
	err  error // compared with errors.Is
}

func (r replyResult) String() string {
	return fmt.Sprintf("{%q %d %v %v}", r.raw, r.code, r.last, r.err)
}

// nextAll calls Next until io.EOF or until max calls, collecting every
// outcome.
func nextAll(rr *ReplyReader, max int) []replyResult {
	var got []replyResult
	for range max {
		l, err := rr.Next()
		got = append(got, replyResult{string(l.Raw), l.Code, l.Last, err})
		if err == io.EOF {
			break
		}
	}
	return got
}

var replyTests = []struct {
	name string
	in   string
	max  int
	want []replyResult
}{
	{
		name: "single line",
		in:   "220 ftp.example.com ready\r\n",
		want: []replyResult{{"220 ftp.example.com ready\r\n", 220, true, nil}},
	},
	{
		name: "bare LF",
		in:   "230 ok\n227 Entering Passive Mode (10,0,0,1,4,1).\n",
		want: []replyResult{
			{"230 ok\n", 230, true, nil},
			{"227 Entering Passive Mode (10,0,0,1,4,1).\n", 227, true, nil},
		},
	},
	{
		name: "code only",
		in:   "200\r\n200\n",
		want: []replyResult{{"200\r\n", 200, true, nil}, {"200\n", 200, true, nil}},
	},
	{
		name: "FEAT",
		in:   "211-Features:\r\n EPRT\r\n EPSV\r\n211 End\r\n",
		want: []replyResult{
			{"211-Features:\r\n", 211, false, nil},
			{" EPRT\r\n", 211, false, nil},
			{" EPSV\r\n", 211, false, nil},
			{"211 End\r\n", 211, true, nil},
		},
	},
	{
		name: "inner lines with digits and the same code",
		in:   "220-Welcome\r\n220-more\r\n123 inner\r\n220-still\r\n2200 not yet\r\n220 ready\r\n",
		want: []replyResult{
			{"220-Welcome\r\n", 220, false, nil},
			{"220-more\r\n", 220, false, nil},
			{"123 inner\r\n", 220, false, nil},
			{"220-still\r\n", 220, false, nil},
			{"2200 not yet\r\n", 220, false, nil},
			{"220 ready\r\n", 220, true, nil},
		},
	},
	{
		name: "ended by a different code only at the same code",
		in:   "230-Hello\r\n550 not the end\r\n230-\r\n\r\n230\r\n",
		want: []replyResult{
			{"230-Hello\r\n", 230, false, nil},
			{"550 not the end\r\n", 230, false, nil},
			{"230-\r\n", 230, false, nil},
			{"\r\n", 230, false, nil},
			{"230\r\n", 230, true, nil},
		},
	},
	{
		name: "replies in sequence",
		in:   "150 Opening\r\n226-Transfer complete\n 1 file\n226 done\n221 Bye\r\n",
		want: []replyResult{
			{"150 Opening\r\n", 150, true, nil},
			{"226-Transfer complete\n", 226, false, nil},
			{" 1 file\n", 226, false, nil},
			{"226 done\n", 226, true, nil},
			{"221 Bye\r\n", 221, true, nil},
		},
	},
	{
		name: "malformed",
		in:   "hello\r\n200 ok\r\n",
		want: []replyResult{{"hello\r\n", 0, false, ErrBadReply}, {"200 ok\r\n", 200, true, nil}},
	},
	{
		name: "malformed codes",
		in:   "600 x\r\n099 x\r\n20 x\r\n2000\r\n20a x\r\n200x\r\n200\rx\r\n 200 x\r\n\r\n",
		want: []replyResult{
			{"600 x\r\n", 0, false, ErrBadReply},
			{"099 x\r\n", 0, false, ErrBadReply},
			{"20 x\r\n", 0, false, ErrBadReply},
			{"2000\r\n", 0, false, ErrBadReply},
			{"20a x\r\n", 0, false, ErrBadReply},
			{"200x\r\n", 0, false, ErrBadReply},
			{"200\rx\r\n", 0, false, ErrBadReply},
			{" 200 x\r\n", 0, false, ErrBadReply},
			{"\r\n", 0, false, ErrBadReply},
		},
	},
	{
		name: "partial line at EOF",
		in:   "220-a\r\n220 b",
		want: []replyResult{{"220-a\r\n", 220, false, nil}, {"220 b", 0, false, io.ErrUnexpectedEOF}},
	},
	{
		name: "too long inside a multi-line reply",
		in:   "214-Help\r\n" + strings.Repeat("x", 100) + "\r\n214 end\r\n",
		max:  64,
		want: []replyResult{
			{"214-Help\r\n", 214, false, nil},
			{strings.Repeat("x", 64), 0, false, ErrLineTooLong},
			{"214 end\r\n", 214, true, nil},
		},
	},
}

func TestReplyReader(t *testing.T) {
	for _, tt := range replyTests {
		for _, rw := range readerWraps {
			t.Run(tt.name+"/"+rw.name, func(t *testing.T) {
				max := tt.max
				if max == 0 {
					max = 512
				}
				rr := NewReplyReader(rw.wrap(strings.NewReader(tt.in)), max)
				got := nextAll(rr, len(tt.want)+3)
				want := append(tt.want[:len(tt.want):len(tt.want)], replyResult{err: io.EOF})
				if len(got) != len(want) {
					t.Fatalf("got %d results %v, want %d %v", len(got), got, len(want), want)
				}
				for i, w := range want {
					g := got[i]
					if g.raw != w.raw || g.code != w.code || g.last != w.last ||
						!errors.Is(g.err, w.err) || (w.err == nil) != (g.err == nil) {
						t.Errorf("Next #%d = %v, want %v", i, g, w)
					}
				}
			})
		}
	}
}

func TestReplyReaderBadReplyMessage(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"hello\r\n", `parsing reply line "hello\r\n": malformed reply`},
		{strings.Repeat("y", 200) + "\r\n", `parsing reply line "` + strings.Repeat("y", 64) + `": malformed reply`},
	} {
		_, err := NewReplyReader(strings.NewReader(tt.in), 512).Next()
		if !errors.Is(err, ErrBadReply) || err.Error() != tt.want {
			t.Errorf("Next on %.10q: error = %v, want %s", tt.in, err, tt.want)
		}
	}
}

func TestReplyReaderReset(t *testing.T) {
	rr := NewReplyReader(strings.NewReader("234-AUTH TLS ok\r\n"), 512)
	if l, err := rr.Next(); err != nil || l.Last || !rr.InReply() {
		t.Fatalf("Next = (%+v, %v), InReply() = %v; want a first line and a reply in progress", l, err, rr.InReply())
	}
	rr.Reset(strings.NewReader("hello\r\n"))
	if rr.InReply() || rr.Buffered() != 0 {
		t.Errorf("after Reset: InReply() = %v, Buffered() = %d; want false, 0", rr.InReply(), rr.Buffered())
	}
	if _, err := rr.Next(); !errors.Is(err, ErrBadReply) {
		t.Errorf("Next after Reset: error = %v, want ErrBadReply", err)
	}
}

func TestReplyReaderAllocs(t *testing.T) {
	rr := NewReplyReader(&loopReader{data: []byte("211-Features:\r\n EPRT\r\n211 End\r\n200 ok\r\n")}, 512)
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := rr.Next(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("ReplyReader.Next: %v allocs per run, want 0", allocs)
	}
}

func TestAppendReply(t *testing.T) {
	tests := []struct {
		code int
		text string
		want string
	}{
		{220, "ftpgate ready", "220 ftpgate ready\r\n"},
		{421, "", "421 \r\n"},
		{500, "bad\r\n200 injected", "500 bad  200 injected\r\n"},
		{227, "Entering Passive Mode (192,0,2,1,195,80).", "227 Entering Passive Mode (192,0,2,1,195,80).\r\n"},
	}
	for _, tt := range tests {
		if got := string(AppendReply([]byte("x"), tt.code, tt.text)); got != "x"+tt.want {
			t.Errorf("AppendReply(%q, %d, %q) = %q, want %q", "x", tt.code, tt.text, got, "x"+tt.want)
		}
		if got := string(FormatReply(tt.code, tt.text)); got != tt.want {
			t.Errorf("FormatReply(%d, %q) = %q, want %q", tt.code, tt.text, got, tt.want)
		}
		l, err := NewReplyReader(strings.NewReader(tt.want), 512).Next()
		if err != nil || l.Code != tt.code || !l.Last || string(l.Raw) != tt.want {
			t.Errorf("reading back %q: (%+v, %v)", tt.want, l, err)
		}
	}
}

func TestReplyClasses(t *testing.T) {
	for _, tt := range []struct {
		code                  int
		preliminary, positive bool
	}{
		{99, false, false},
		{100, true, false},
		{150, true, false},
		{199, true, false},
		{200, false, true},
		{226, false, true},
		{299, false, true},
		{300, false, false},
		{550, false, false},
	} {
		if got := IsPreliminary(tt.code); got != tt.preliminary {
			t.Errorf("IsPreliminary(%d) = %v, want %v", tt.code, got, tt.preliminary)
		}
		if got := IsPositiveCompletion(tt.code); got != tt.positive {
			t.Errorf("IsPositiveCompletion(%d) = %v, want %v", tt.code, got, tt.positive)
		}
	}
}

func BenchmarkReplyReader(b *testing.B) {
	in := "150 Opening BINARY mode data connection\r\n226-Transfer complete\r\n 42 bytes\r\n226 done\r\n"
	rr := NewReplyReader(&loopReader{data: []byte(in)}, 4096)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rr.Next(); err != nil {
			b.Fatal(err)
		}
	}
}

func TestReplyCode(t *testing.T) {
	for in, want := range map[string]int{
		"226 Transfer complete.\r\n": 226,
		"150-multi\r\n150 end\r\n":   150,
		"426\r\n":                    426,
		"550":                        550,
		"":                           0,
		"22":                         0,
		"abc def\r\n":                0,
		"2260 too long\r\n":          0,
		"600 not a reply code\r\n":   0,
	} {
		if got := ReplyCode([]byte(in)); got != want {
			t.Errorf("ReplyCode(%q) = %d, want %d", in, got, want)
		}
	}
}
