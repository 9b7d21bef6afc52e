package ftp

import (
	"fmt"
	"io"
	"strconv"
)

// maxQuoted is how many bytes of an offending line an error quotes.
const maxQuoted = 64

// ReplyReader reads server replies line by line and tracks the multi-line
// replies of RFC 959 section 4.2: a first line "ddd-text" starts a reply that
// ends at the first later line that starts with the same three digits
// followed by a space or by the line terminator. Lines in between may hold
// anything, including lines that start with other digits ("123 foo") or with
// the same code followed by '-'. Lines are returned as they were read, one at
// a time, so a long multi-line reply (a directory listing in STAT, a banner)
// never needs more memory than one line.
type ReplyReader struct {
	lr LineReader

	code   int     // code of the multi-line reply in progress, 0 if none
	digits [3]byte // code as text
}

// NewReplyReader returns a ReplyReader reading from r lines of at most max
// bytes, terminator included (see NewLineReader).
func NewReplyReader(r io.Reader, max int) *ReplyReader {
	return &ReplyReader{lr: *NewLineReader(r, max)}
}

// ReplyLine is one line of a server reply.
type ReplyLine struct {
	// Raw is the line including its terminator, exactly as read. It is
	// valid until the next call to Next or Reset.
	Raw []byte
	// Code is the code of the reply the line belongs to, 100..599; the
	// inner lines of a multi-line reply carry the code of their reply.
	Code int
	// Last is true on the line that ends its reply, which is the only line
	// of a single-line reply.
	Last bool
}

// Next returns the next line of the reply in progress, or the first line of
// the next reply.
//
// If a line that should start a reply does not begin with three digits
// 1xx..5xx followed by a space, '-' or the line terminator, Next returns it
// in Raw (with Code 0) and an error wrapping ErrBadReply; the next call
// expects a reply start again. Errors from the line reader (ErrLineTooLong,
// io.EOF, io.ErrUnexpectedEOF, network errors) are returned as
// LineReader.ReadLine returns them, with whatever bytes it returned in Raw;
// after ErrLineTooLong the rest of the line is skipped and a multi-line reply
// in progress stays in progress.
func (rr *ReplyReader) Next() (ReplyLine, error) {
	line, err := rr.lr.ReadLine()
	if err != nil {
		return ReplyLine{Raw: line}, err
	}
	body := trimEOL(line)
	if rr.code != 0 {
		code := rr.code
		last := len(body) >= 3 && [3]byte(body) == rr.digits && (len(body) == 3 || body[3] == ' ')
		if last {
			rr.code = 0
		}
		return ReplyLine{Raw: line, Code: code, Last: last}, nil
	}
	code, ok := replyCode(body)
	if !ok {
		return ReplyLine{Raw: line}, fmt.Errorf("parsing reply line %q: %w", quoted(line), ErrBadReply)
	}
	if len(body) > 3 && body[3] == '-' {
		rr.code = code
		rr.digits = [3]byte(body)
		return ReplyLine{Raw: line, Code: code}, nil
	}
	return ReplyLine{Raw: line, Code: code, Last: true}, nil
}

// replyCode parses the code at the start of a reply's first line, given
// without its terminator.
func replyCode(body []byte) (int, bool) {
	if len(body) < 3 || body[0] < '1' || body[0] > '5' || !isDigit(body[1]) || !isDigit(body[2]) {
		return 0, false
	}
	if len(body) > 3 && body[3] != ' ' && body[3] != '-' {
		return 0, false
	}
	return int(body[0]-'0')*100 + int(body[1]-'0')*10 + int(body[2]-'0'), true
}

// ReplyCode is the code of a complete reply (as AppendReply builds it, or
// as read from a server), or 0 if it does not start with one.
func ReplyCode(reply []byte) int {
	head := reply[:min(len(reply), 4)]
	if len(head) == 4 && (head[3] == '\r' || head[3] == '\n') {
		head = head[:3]
	}
	code, _ := replyCode(head)
	return code
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// quoted returns line cut to maxQuoted bytes, for quoting in an error.
func quoted(line []byte) []byte {
	return line[:min(len(line), maxQuoted)]
}

// InReply reports whether a multi-line reply is in progress: the last line
// returned by Next started or continued a reply without ending it.
func (rr *ReplyReader) InReply() bool {
	return rr.code != 0
}

// Buffered returns the number of bytes read but not yet returned (see
// LineReader.Buffered).
func (rr *ReplyReader) Buffered() int {
	return rr.lr.Buffered()
}

// Reset makes rr read from r, discarding buffered bytes and any multi-line
// reply in progress (see LineReader.Reset).
func (rr *ReplyReader) Reset(r io.Reader) {
	rr.lr.Reset(r)
	rr.code = 0
}

// AppendReply appends the single-line reply "ddd text\r\n" to dst and
// returns the extended slice. code should be in 100..599. CR and LF bytes in
// text are written as spaces, so the result is always exactly one line.
func AppendReply(dst []byte, code int, text string) []byte {
	dst = strconv.AppendInt(dst, int64(code), 10)
	dst = append(dst, ' ')
	dst = appendOneLine(dst, text)
	return append(dst, '\r', '\n')
}

// FormatReply returns the single-line reply "ddd text\r\n" (see
// AppendReply).
func FormatReply(code int, text string) []byte {
	return AppendReply(make([]byte, 0, 3+1+len(text)+2), code, text)
}

// IsPreliminary reports whether code is a positive preliminary reply,
// 100..199: another reply to the same command follows (RFC 959 section
// 4.2.1), as "150 Opening data connection" precedes "226".
func IsPreliminary(code int) bool {
	return 100 <= code && code <= 199
}

// IsPositiveCompletion reports whether code is a positive completion reply,
// 200..299.
func IsPositiveCompletion(code int) bool {
	return 200 <= code && code <= 299
}
