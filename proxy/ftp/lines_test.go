package ftp

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"
)

// readerWraps are the ways the tests hand input to a reader, so that every
// path through LineReader.fill is taken: all at once, one byte per Read, half
// of each Read, and io.EOF together with the last bytes.
var readerWraps = []struct {
	name string
	wrap func(io.Reader) io.Reader
}{
	{"whole", func(r io.Reader) io.Reader { return r }},
	{"onebyte", iotest.OneByteReader},
	{"half", iotest.HalfReader},
	{"dataerr", iotest.DataErrReader},
}

// readResult is one ReadLine outcome.
type readResult struct {
	line string
	err  error // compared with errors.Is
}

// readAll calls ReadLine until io.EOF or until max calls, collecting every
// outcome.
func readAll(lr *LineReader, max int) []readResult {
	var got []readResult
	for range max {
		line, err := lr.ReadLine()
		got = append(got, readResult{string(line), err})
		if err == io.EOF {
			break
		}
	}
	return got
}

func TestReadLine(t *testing.T) {
	a62, a63, a100 := strings.Repeat("a", 62), strings.Repeat("a", 63), strings.Repeat("a", 100)
	tests := []struct {
		name string
		in   string
		max  int
		want []readResult
	}{
		{
			name: "empty",
			in:   "",
			want: []readResult{{"", io.EOF}},
		},
		{
			name: "CRLF",
			in:   "USER anonymous\r\nPASS x\r\n",
			want: []readResult{{"USER anonymous\r\n", nil}, {"PASS x\r\n", nil}, {"", io.EOF}},
		},
		{
			name: "bare LF",
			in:   "USER anonymous\nPASV\r\n\n",
			want: []readResult{{"USER anonymous\n", nil}, {"PASV\r\n", nil}, {"\n", nil}, {"", io.EOF}},
		},
		{
			name: "CR not before LF is data",
			in:   "RETR a\rb\r\r\n",
			want: []readResult{{"RETR a\rb\r\r\n", nil}, {"", io.EOF}},
		},
		{
			name: "bytes kept",
			in:   "\xff\xf4\xff\xf2ABOR\r\nSTOR \xff\xff\x00\xe9 \r\n",
			want: []readResult{{"\xff\xf4\xff\xf2ABOR\r\n", nil}, {"STOR \xff\xff\x00\xe9 \r\n", nil}, {"", io.EOF}},
		},
		{
			name: "partial line at EOF",
			in:   "QUIT\r\nNOO",
			want: []readResult{{"QUIT\r\n", nil}, {"NOO", io.ErrUnexpectedEOF}, {"", io.EOF}},
		},
		{
			name: "CR at EOF",
			in:   "QUIT\r",
			want: []readResult{{"QUIT\r", io.ErrUnexpectedEOF}, {"", io.EOF}},
		},
		{
			name: "exactly max",
			in:   a62 + "\r\n" + a63 + "\n",
			max:  64,
			want: []readResult{{a62 + "\r\n", nil}, {a63 + "\n", nil}, {"", io.EOF}},
		},
		{
			name: "max plus one",
			in:   a63 + "\r\nNOOP\r\n",
			max:  64,
			want: []readResult{{a63 + "\r", ErrLineTooLong}, {"NOOP\r\n", nil}, {"", io.EOF}},
		},
		{
			name: "too long, then EOF",
			in:   a100,
			max:  64,
			want: []readResult{{a100[:64], ErrLineTooLong}, {"", io.ErrUnexpectedEOF}, {"", io.EOF}},
		},
		{
			name: "too long twice",
			in:   a100 + "\r\n" + a100 + "\nPASV\r\n",
			max:  64,
			want: []readResult{
				{a100[:64], ErrLineTooLong},
				{a100[:64], ErrLineTooLong},
				{"PASV\r\n", nil},
				{"", io.EOF},
			},
		},
		{
			name: "max below minimum is raised",
			in:   a62 + "\r\n",
			max:  10,
			want: []readResult{{a62 + "\r\n", nil}, {"", io.EOF}},
		},
	}
	for _, tt := range tests {
		for _, rw := range readerWraps {
			t.Run(tt.name+"/"+rw.name, func(t *testing.T) {
				max := tt.max
				if max == 0 {
					max = 512
				}
				lr := NewLineReader(rw.wrap(strings.NewReader(tt.in)), max)
				got := readAll(lr, len(tt.want)+2)
				if len(got) != len(tt.want) {
					t.Fatalf("got %d results %v, want %d %v", len(got), got, len(tt.want), tt.want)
				}
				for i, w := range tt.want {
					g := got[i]
					if g.line != w.line || !errors.Is(g.err, w.err) || (w.err == nil) != (g.err == nil) {
						t.Errorf("ReadLine #%d = (%q, %v), want (%q, %v)", i, g.line, g.err, w.line, w.err)
					}
				}
			})
		}
	}
}

// countingReader returns an endless line of 'a' bytes without a terminator
// and counts the bytes it hands out.
type countingReader struct{ n int }

func (c *countingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	c.n += len(p)
	return len(p), nil
}

func TestReadLineBounded(t *testing.T) {
	for _, max := range []int{64, 512, 4096} {
		cr := &countingReader{}
		lr := NewLineReader(io.LimitReader(cr, 1<<20), max)
		line, err := lr.ReadLine()
		if !errors.Is(err, ErrLineTooLong) {
			t.Fatalf("max %d: ReadLine error = %v, want ErrLineTooLong", max, err)
		}
		if len(line) != max {
			t.Errorf("max %d: ReadLine returned %d bytes, want %d", max, len(line), max)
		}
		if cr.n > max {
			t.Errorf("max %d: read %d bytes before ErrLineTooLong, want at most %d", max, cr.n, max)
		}
		if lr.Buffered() != 0 {
			t.Errorf("max %d: Buffered() = %d after ErrLineTooLong, want 0", max, lr.Buffered())
		}
	}
}

func TestReadLineTooLongMessage(t *testing.T) {
	lr := NewLineReader(strings.NewReader(strings.Repeat("x", 200)), 100)
	_, err := lr.ReadLine()
	if want := "reading line of more than 100 bytes: line too long"; err == nil || err.Error() != want {
		t.Errorf("ReadLine error = %v, want %q", err, want)
	}
}

// step is one scripted Read result.
type step struct {
	data string
	err  error
}

// scriptReader returns its steps in order, then io.EOF.
type scriptReader struct{ steps []step }

func (s *scriptReader) Read(p []byte) (int, error) {
	if len(s.steps) == 0 {
		return 0, io.EOF
	}
	st := s.steps[0]
	n := copy(p, st.data)
	if n < len(st.data) {
		s.steps[0].data = st.data[n:]
		return n, nil
	}
	s.steps = s.steps[1:]
	return n, st.err
}

func TestReadLineRetryAfterError(t *testing.T) {
	lr := NewLineReader(&scriptReader{steps: []step{
		{"NOOP\r\nPA", os.ErrDeadlineExceeded},
		{"SV\r\n", nil},
	}}, 64)
	if line, err := lr.ReadLine(); err != nil || string(line) != "NOOP\r\n" {
		t.Fatalf("ReadLine #1 = (%q, %v), want (%q, nil)", line, err, "NOOP\r\n")
	}
	if line, err := lr.ReadLine(); !errors.Is(err, os.ErrDeadlineExceeded) || line != nil {
		t.Fatalf("ReadLine #2 = (%q, %v), want (nil, %v)", line, err, os.ErrDeadlineExceeded)
	}
	if n := lr.Buffered(); n != 2 {
		t.Errorf("Buffered() = %d after timeout, want 2", n)
	}
	if line, err := lr.ReadLine(); err != nil || string(line) != "PASV\r\n" {
		t.Fatalf("ReadLine #3 = (%q, %v), want (%q, nil)", line, err, "PASV\r\n")
	}
	if line, err := lr.ReadLine(); err != io.EOF || line != nil {
		t.Fatalf("ReadLine #4 = (%q, %v), want (nil, EOF)", line, err)
	}
}

func TestReadLineErrorWhileSkipping(t *testing.T) {
	lr := NewLineReader(&scriptReader{steps: []step{
		{strings.Repeat("x", 70), os.ErrDeadlineExceeded},
		{"xx\r\nPASV\r\n", nil},
	}}, 64)
	if _, err := lr.ReadLine(); !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("ReadLine #1 error = %v, want ErrLineTooLong", err)
	}
	if _, err := lr.ReadLine(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadLine #2 error = %v, want %v", err, os.ErrDeadlineExceeded)
	}
	if line, err := lr.ReadLine(); err != nil || string(line) != "PASV\r\n" {
		t.Fatalf("ReadLine #3 = (%q, %v), want (%q, nil)", line, err, "PASV\r\n")
	}
}

type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

type liarReader struct{}

func (liarReader) Read(p []byte) (int, error) { return len(p) + 1, nil }

func TestReadLineBadReaders(t *testing.T) {
	if _, err := NewLineReader(zeroReader{}, 64).ReadLine(); err != io.ErrNoProgress {
		t.Errorf("ReadLine from a reader without progress: error = %v, want %v", err, io.ErrNoProgress)
	}
	if _, err := NewLineReader(liarReader{}, 64).ReadLine(); !errors.Is(err, errInvalidRead) {
		t.Errorf("ReadLine from a reader with an invalid count: error = %v, want %v", err, errInvalidRead)
	}
}

func TestLineReaderReset(t *testing.T) {
	lr := NewLineReader(strings.NewReader("AUTH TLS\r\nUSER injected\r\n"), 64)
	if line, err := lr.ReadLine(); err != nil || string(line) != "AUTH TLS\r\n" {
		t.Fatalf("ReadLine = (%q, %v), want (%q, nil)", line, err, "AUTH TLS\r\n")
	}
	if n, want := lr.Buffered(), len("USER injected\r\n"); n != want {
		t.Errorf("Buffered() = %d, want %d", n, want)
	}
	lr.Reset(strings.NewReader("USER alice\r\n"))
	if n := lr.Buffered(); n != 0 {
		t.Errorf("Buffered() after Reset = %d, want 0", n)
	}
	if line, err := lr.ReadLine(); err != nil || string(line) != "USER alice\r\n" {
		t.Fatalf("ReadLine after Reset = (%q, %v), want (%q, nil)", line, err, "USER alice\r\n")
	}

	// Reset also ends the skipping of an over-long line.
	lr = NewLineReader(strings.NewReader(strings.Repeat("x", 100)), 64)
	if _, err := lr.ReadLine(); !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("ReadLine error = %v, want ErrLineTooLong", err)
	}
	lr.Reset(strings.NewReader("x\r\n"))
	if line, err := lr.ReadLine(); err != nil || string(line) != "x\r\n" {
		t.Fatalf("ReadLine after Reset = (%q, %v), want (%q, nil)", line, err, "x\r\n")
	}
}

// loopReader hands out data over and over, without allocating.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], l.data[l.off:])
		n += c
		l.off = (l.off + c) % len(l.data)
	}
	return n, nil
}

func TestReadLineAllocs(t *testing.T) {
	for _, in := range []string{"RETR file\r\n", "PASV\r\n", "PASV\n"} {
		lr := NewLineReader(&loopReader{data: []byte(in)}, 512)
		allocs := testing.AllocsPerRun(1000, func() {
			line, err := lr.ReadLine()
			if err != nil || !bytes.Equal(line, []byte(in)) {
				t.Fatalf("ReadLine = (%q, %v), want (%q, nil)", line, err, in)
			}
		})
		if allocs != 0 {
			t.Errorf("ReadLine of %q: %v allocs per run, want 0", in, allocs)
		}
	}
}

func BenchmarkReadLine(b *testing.B) {
	for _, in := range []string{"PASV\r\n", "RETR some/longer/path/to/a/file.tar.gz\r\n"} {
		b.Run(strings.TrimSpace(in[:4]), func(b *testing.B) {
			lr := NewLineReader(&loopReader{data: []byte(strings.Repeat(in, 100))}, 4096)
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				if _, err := lr.ReadLine(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
