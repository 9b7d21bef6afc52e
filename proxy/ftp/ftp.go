// Package ftp is the FTP control-channel codec (RFC 959): it reads commands
// from clients and replies from servers one line at a time, keeping each
// line's bytes exactly as they arrived, so that a proxy can forward the lines
// it does not rewrite byte for byte, line terminator included.
//
// Every reader is bounded: a line is held in a buffer of a fixed size chosen
// by the caller, and a peer that sends a longer line gets ErrLineTooLong, not
// more memory. Readers are not safe for concurrent use; a session owns one
// reader per direction.
package ftp

import "errors"

// Errors reported by the readers. They are returned wrapped with context;
// test for them with errors.Is.
var (
	// ErrLineTooLong means a peer sent more bytes than the reader's limit
	// without a line terminator.
	ErrLineTooLong = errors.New("line too long")
	// ErrBadReply means a line that should start a server reply does not
	// begin with a three-digit reply code (RFC 959 section 4.2).
	ErrBadReply = errors.New("malformed reply")
)

// trimEOL returns line without its terminator: a trailing LF, and one CR
// directly before it. A CR that is not followed by LF is kept.
func trimEOL(line []byte) []byte {
	n := len(line)
	if n == 0 || line[n-1] != '\n' {
		return line
	}
	n--
	if n > 0 && line[n-1] == '\r' {
		n--
	}
	return line[:n]
}
