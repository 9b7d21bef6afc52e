package nat

import (
	"errors"
	"strconv"
)

// Sentinel errors. Parsers return them inside a *ParseError; policy functions
// wrap them with the addresses involved. Test with errors.Is.
var (
	// ErrSyntax means the text does not have the shape the protocol requires.
	ErrSyntax = errors.New("syntax error")
	// ErrRange means a number is well formed but out of range (an octet above
	// 255, port 0, a port above 65535).
	ErrRange = errors.New("value out of range")
	// ErrFamily means an EPRT address family other than 1 (IPv4) or 2 (IPv6),
	// or an address that is not of the family named.
	ErrFamily = errors.New("unsupported network protocol")
	// ErrPoolExhausted means every port of a PortPool is handed out.
	ErrPoolExhausted = errors.New("port pool exhausted")
	// ErrOwnerShare means one owner (a client) holds its share of a
	// PortPool already.
	ErrOwnerShare = errors.New("client holds its share of the port pool")
	// ErrBounce means a PORT or EPRT named an address other than the control
	// connection's peer: an FTP bounce attempt (RFC 2577 section 3).
	ErrBounce = errors.New("address is not the control connection's peer")
	// ErrLowPort means a PORT or EPRT named a port below 1024.
	ErrLowPort = errors.New("port below 1024")
	// ErrDestination: a transparent session's destination is not allowed.
	ErrDestination = errors.New("destination not allowed")
)

// ParseError reports a failure to parse an FTP command argument, reply or
// configuration value. Its Unwrap returns ErrSyntax, ErrRange or ErrFamily,
// so errors.Is(err, ErrSyntax) and friends work on what the parsers return.
type ParseError struct {
	What   string // what was parsed: "PORT", "EPRT", "227 reply", "229 reply", "port range"
	Input  string // the input exactly as given to the parser
	Detail string // what was wrong, e.g. "octet 3 is 256"; may be empty
	Err    error  // ErrSyntax, ErrRange or ErrFamily
}

// Error returns e.g. `parsing PORT "1,2,3": want 6 comma-separated numbers: syntax error`.
func (e *ParseError) Error() string {
	s := "parsing " + e.What + " " + strconv.Quote(e.Input)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the sentinel error: ErrSyntax, ErrRange or ErrFamily.
func (e *ParseError) Unwrap() error { return e.Err }
