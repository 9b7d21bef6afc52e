package ftp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// MinLineBytes is the smallest line limit a LineReader accepts; smaller
// limits are raised to it.
const MinLineBytes = 64

// maxEmptyReads is how many consecutive (0, nil) reads a LineReader accepts
// before it gives up with io.ErrNoProgress, as bufio does.
const maxEmptyReads = 100

var errInvalidRead = errors.New("reader returned an invalid count")

// LineReader reads lines terminated by LF (CRLF or a bare LF) of at most a
// fixed number of bytes, terminator included, from an io.Reader. Its only
// buffer is allocated once, at that size, so a peer cannot make it hold more.
// It reads from the underlying reader only when the buffer holds no complete
// line, and never reads more than fits in the buffer.
type LineReader struct {
	rd      io.Reader
	buf     []byte // len(buf) is the line limit
	r, w    int    // buf[r:w] holds the bytes read but not yet returned
	scanned int    // buf[r:r+scanned] is known to contain no LF
	discard bool   // the rest of an over-long line must be skipped
	err     error  // error from the underlying reader, not yet returned

	tooLong error // ErrLineTooLong wrapped with the limit, built once
}

// NewLineReader returns a LineReader reading from r lines of at most max
// bytes, terminator included. A max below MinLineBytes is raised to
// MinLineBytes. RFC 959 sets no limit; OpenBSD's ftp-proxy uses 500 bytes.
func NewLineReader(r io.Reader, max int) *LineReader {
	if max < MinLineBytes {
		max = MinLineBytes
	}
	return &LineReader{
		rd:      r,
		buf:     make([]byte, max),
		tooLong: fmt.Errorf("reading line of more than %d bytes: %w", max, ErrLineTooLong),
	}
}

// ReadLine returns the next line, including its terminator, exactly as it
// was read. The slice points into the reader's buffer and is valid only until
// the next call to ReadLine or Reset, like bufio.Reader.ReadSlice.
//
// A line longer than the limit returns the limit's worth of its first bytes
// and an error wrapping ErrLineTooLong, having read no more than the limit
// from the underlying reader; the next call skips the rest of that line
// (reading, but not keeping, the bytes up to and including its LF) and then
// returns the line after it.
//
// At the end of input ReadLine returns (nil, io.EOF) if no bytes are left,
// and the partial line with io.ErrUnexpectedEOF if the input ended in the
// middle of a line. Other errors from the underlying reader are returned as
// they are, so callers can test them with errors.Is (for example against
// os.ErrDeadlineExceeded); the bytes of a partial line stay buffered, and a
// later call continues where this one stopped.
func (lr *LineReader) ReadLine() ([]byte, error) {
	if lr.discard {
		if err := lr.skipLine(); err != nil {
			return nil, err
		}
	}
	for {
		start := lr.r + lr.scanned
		if i := bytes.IndexByte(lr.buf[start:lr.w], '\n'); i >= 0 {
			end := start + i + 1
			line := lr.buf[lr.r:end:end]
			lr.r, lr.scanned = end, 0
			return line, nil
		}
		lr.scanned = lr.w - lr.r
		if lr.scanned == len(lr.buf) {
			// The buffer is full (so lr.r == 0) and holds no LF.
			line := lr.buf[:len(lr.buf):len(lr.buf)]
			lr.r, lr.w, lr.scanned = 0, 0, 0
			lr.discard = true
			return line, lr.tooLong
		}
		if lr.err != nil {
			return lr.takeErr()
		}
		lr.fill()
	}
}

// takeErr returns the pending error from the underlying reader, turning
// io.EOF after a partial line into the partial line and io.ErrUnexpectedEOF.
func (lr *LineReader) takeErr() ([]byte, error) {
	err := lr.err
	lr.err = nil
	if err != io.EOF { // io.EOF is never wrapped, by the io.Reader contract
		return nil, err
	}
	if lr.r == lr.w {
		return nil, io.EOF
	}
	line := lr.buf[lr.r:lr.w:lr.w]
	lr.r, lr.w, lr.scanned = 0, 0, 0
	return line, io.ErrUnexpectedEOF
}

// skipLine discards input up to and including the next LF.
func (lr *LineReader) skipLine() error {
	for {
		if i := bytes.IndexByte(lr.buf[lr.r:lr.w], '\n'); i >= 0 {
			lr.r += i + 1
			lr.scanned = 0
			lr.discard = false
			return nil
		}
		lr.r, lr.w, lr.scanned = 0, 0, 0
		if lr.err != nil {
			err := lr.err
			lr.err = nil
			if err == io.EOF {
				lr.discard = false
				return io.ErrUnexpectedEOF
			}
			return err
		}
		lr.fill()
	}
}

// fill moves the unread bytes to the front of the buffer and reads into the
// free space after them, once, recording any error in lr.err. The caller makes
// sure the buffer is not full.
func (lr *LineReader) fill() {
	if lr.r > 0 {
		copy(lr.buf, lr.buf[lr.r:lr.w])
		lr.w -= lr.r
		lr.r = 0
	}
	for range maxEmptyReads {
		p := lr.buf[lr.w:]
		n, err := lr.rd.Read(p)
		if n < 0 || n > len(p) {
			lr.err = fmt.Errorf("reading line: %w (%d of %d bytes)", errInvalidRead, n, len(p))
			return
		}
		lr.w += n
		if err != nil {
			lr.err = err
			return
		}
		if n > 0 {
			return
		}
	}
	lr.err = io.ErrNoProgress
}

// Buffered returns the number of bytes read from the underlying reader but
// not yet returned by ReadLine. Before switching a connection to TLS (AUTH
// TLS, RFC 4217) a proxy should check that it is zero: bytes that arrived in
// plaintext after the AUTH command must not be taken as sent under TLS.
func (lr *LineReader) Buffered() int {
	return lr.w - lr.r
}

// Reset makes lr read from r, discarding any buffered bytes, pending error
// and the state of an over-long line being skipped. The line limit is kept.
// It is meant for switching the underlying connection, e.g. to TLS.
func (lr *LineReader) Reset(r io.Reader) {
	lr.rd = r
	lr.r, lr.w, lr.scanned = 0, 0, 0
	lr.discard = false
	lr.err = nil
}
