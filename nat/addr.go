// Package nat parses and formats the FTP control-channel messages that carry
// data-connection addresses, PORT and EPRT from the client (RFC 959,
// RFC 2428) and 227 and 229 replies from the server, and holds the policy
// that decides where ftpgate opens data connections (ActiveTarget,
// PassiveTarget) and the pool of ports it advertises (PortPool).
//
// The package is pure: no I/O, no clocks, standard library only. The parsers
// never panic, do not allocate on success, and return a *ParseError that
// wraps ErrSyntax, ErrRange or ErrFamily. They are liberal in what a server's
// reply looks like and strict about command arguments; the formatters always
// emit the canonical RFC forms.
package nat

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// cutset is the white space tolerated around command arguments.
const cutset = " \t\r\n"

// ParsePORT parses the argument of a PORT command, "h1,h2,h3,h4,p1,p2"
// (RFC 959 section 4.1.2): six decimal numbers of one to three digits
// (leading zeros allowed), each 0..255, separated by single commas with no
// spaces. White space and CRLF around the argument are ignored. The port is
// p1*256+p2 and must not be 0 (ErrRange). A seventh number is a syntax error.
// The address may be 0.0.0.0: whether to accept it is for ActiveTarget to
// decide.
func ParsePORT(arg string) (netip.AddrPort, error) {
	s := strings.Trim(arg, cutset)
	nums, n, fail, idx := scan6(s, false)
	var (
		ap     netip.AddrPort
		detail string
		err    error
	)
	switch {
	case fail != scanOK:
		detail, err = fail.detail(idx), ErrSyntax
	case n < len(s) && s[n] == ',':
		detail, err = "want 6 comma-separated numbers", ErrSyntax
	case n < len(s):
		detail, err = "unexpected text after 6 numbers", ErrSyntax
	default:
		ap, detail, err = addrPort6(nums)
	}
	if err != nil {
		return netip.AddrPort{}, &ParseError{What: "PORT", Input: arg, Detail: detail, Err: err}
	}
	return ap, nil
}

// FormatPORT returns the PORT argument "h1,h2,h3,h4,p1,p2" for ap. The
// address must be IPv4 or IPv4-mapped IPv6; for any other it returns "".
func FormatPORT(ap netip.AddrPort) string {
	a := ap.Addr().Unmap()
	if !a.Is4() {
		return ""
	}
	var buf [24]byte
	return string(append6(buf[:0], a.As4(), ap.Port()))
}

// Parse227 parses a 227 reply to PASV as received, e.g.
// "227 Entering Passive Mode (192,168,1,2,4,1).\r\n", and returns the
// address and port it advertises. The reply must start with the code 227;
// it may span several lines.
//
// RFC 1123 section 4.1.2.6 warns that servers vary the text, so after the
// code Parse227 scans for the first digit and reads h1,h2,h3,h4,p1,p2 from
// there, with or without parentheses ("227 =192,168,1,2,4,1",
// "227 Entering Passive Mode 192,168,1,2,4,1"). Where the digits found do not
// form six comma-separated numbers (a "227 " starting the last line of a
// multi-line reply, "for 2 minutes"), the scan moves on to the next run of
// digits. It reads exactly six numbers and ignores what follows, as the Linux
// conntrack helper does, so "(1,2,3,4,5,6,7)" yields 1.2.3.4:1286.
//
// Unlike PORT, spaces or tabs after a comma are accepted ("192, 168, 1, 2,
// 4, 1"): some servers send them and clients that parse with
// sscanf("%u,%u,...") (curl among them) accept them. Each number has one to
// three digits and must be 0..255, and the port must not be 0 (ErrRange).
// An all-zero address is accepted; PassiveTarget never follows the address.
func Parse227(reply string) (netip.AddrPort, error) {
	ap, detail, err := parse227(reply)
	if err != nil {
		return netip.AddrPort{}, &ParseError{What: "227 reply", Input: reply, Detail: detail, Err: err}
	}
	return ap, nil
}

func parse227(s string) (netip.AddrPort, string, error) {
	if !hasCode(s, "227") {
		return netip.AddrPort{}, "not a 227 reply", ErrSyntax
	}
	for i := 3; i < len(s); {
		if !isDigit(s[i]) {
			i++
			continue
		}
		nums, _, fail, _ := scan6(s[i:], true)
		if fail == scanOK {
			return addrPort6(nums)
		}
		for i < len(s) && isDigit(s[i]) { // skip to the next run of digits
			i++
		}
	}
	return netip.AddrPort{}, "no h1,h2,h3,h4,p1,p2 found", ErrSyntax
}

// Format227 returns the RFC 959 reply "227 Entering Passive Mode
// (h1,h2,h3,h4,p1,p2)." without CRLF. The address must be IPv4 or
// IPv4-mapped IPv6; for any other it returns "".
func Format227(ap netip.AddrPort) string {
	a := ap.Addr().Unmap()
	if !a.Is4() {
		return ""
	}
	var buf [56]byte
	b := append(buf[:0], "227 Entering Passive Mode ("...)
	b = append6(b, a.As4(), ap.Port())
	b = append(b, ")."...)
	return string(b)
}

// ParseEPRT parses the argument of an EPRT command (RFC 2428 section 2),
// "<d><af><d><addr><d><port><d>", e.g. "|1|198.18.1.1|50001|" or
// "|2|2001:db8::1|50001|". The delimiter d is any byte from 33 to 126 and
// must be the same at all four places. White space and CRLF around the
// argument are ignored.
//
// The address family af must be "1" (IPv4, dotted quad) or "2" (IPv6,
// without zone); any other number, or an address of the other family, is
// ErrFamily. The port is decimal, 1..65535. An IPv4-mapped IPv6 address
// under af 2 is returned as it is (FormatEPRT writes it back as af 1). The
// unspecified address is accepted; ActiveTarget decides.
func ParseEPRT(arg string) (netip.AddrPort, error) {
	ap, detail, err := parseEPRT(strings.Trim(arg, cutset))
	if err != nil {
		return netip.AddrPort{}, &ParseError{What: "EPRT", Input: arg, Detail: detail, Err: err}
	}
	return ap, nil
}

func parseEPRT(s string) (netip.AddrPort, string, error) {
	const shape = "want <d><af><d><addr><d><port><d>"
	if s == "" {
		return netip.AddrPort{}, "empty argument", ErrSyntax
	}
	d := s[0]
	if d < 33 || d > 126 {
		return netip.AddrPort{}, "delimiter is not a printable ASCII character", ErrSyntax
	}
	var field [3]string
	rest := s[1:]
	for i := range field {
		j := strings.IndexByte(rest, d)
		if j < 0 {
			return netip.AddrPort{}, shape, ErrSyntax
		}
		field[i], rest = rest[:j], rest[j+1:]
	}
	if rest != "" {
		return netip.AddrPort{}, "unexpected text after the last delimiter", ErrSyntax
	}
	af, addrText, portText := field[0], field[1], field[2]

	var want6 bool
	switch {
	case af == "1":
	case af == "2":
		want6 = true
	case af == "" || !allDigits(af):
		return netip.AddrPort{}, "address family is not a number", ErrSyntax
	default:
		return netip.AddrPort{}, "address family " + af + " is neither 1 (IPv4) nor 2 (IPv6)", ErrFamily
	}

	addr, err := netip.ParseAddr(addrText)
	switch {
	case err != nil:
		return netip.AddrPort{}, "invalid network address", ErrSyntax
	case addr.Zone() != "":
		return netip.AddrPort{}, "IPv6 zone not allowed", ErrSyntax
	case want6 && addr.Is4():
		return netip.AddrPort{}, "IPv4 address under address family 2", ErrFamily
	case !want6 && !addr.Is4():
		return netip.AddrPort{}, "IPv6 address under address family 1", ErrFamily
	}

	port, detail, err := parsePort(portText, "port")
	if err != nil {
		return netip.AddrPort{}, detail, err
	}
	return netip.AddrPortFrom(addr, port), "", nil
}

// FormatEPRT returns the EPRT argument for ap with "|" as delimiter:
// "|1|198.18.1.1|50001|" for IPv4 and IPv4-mapped IPv6 addresses,
// "|2|2001:db8::1|50001|" for other IPv6 addresses. It returns "" for an
// invalid address or one with a zone, which EPRT cannot carry.
func FormatEPRT(ap netip.AddrPort) string {
	a := ap.Addr().Unmap()
	if !a.IsValid() || a.Zone() != "" {
		return ""
	}
	var buf [64]byte
	b := buf[:0]
	if a.Is4() {
		b = append(b, "|1|"...)
	} else {
		b = append(b, "|2|"...)
	}
	b = a.AppendTo(b)
	b = append(b, '|')
	b = strconv.AppendUint(b, uint64(ap.Port()), 10)
	b = append(b, '|')
	return string(b)
}

// Parse229 parses a 229 reply to EPSV as received, e.g.
// "229 Entering Extended Passive Mode (|||6446|)\r\n", and returns the port
// (RFC 2428 section 3). The reply must start with the code 229. The
// delimiter is any byte from 33 to 126 except a digit, the same byte three
// times before the port and once after it. Parse229 looks inside the first
// "(...)"; if the reply has no "(", it scans the text for the first
// <d><d><d><port><d>. The port is decimal, 1..65535 (ErrRange).
func Parse229(reply string) (uint16, error) {
	port, detail, err := parse229(reply)
	if err != nil {
		return 0, &ParseError{What: "229 reply", Input: reply, Detail: detail, Err: err}
	}
	return port, nil
}

func parse229(s string) (uint16, string, error) {
	const shape = "want (<d><d><d><port><d>)"
	if !hasCode(s, "229") {
		return 0, "not a 229 reply", ErrSyntax
	}
	s = s[3:]
	if open := strings.IndexByte(s, '('); open >= 0 {
		body := s[open+1:]
		end := strings.IndexByte(body, ')')
		if end < 0 {
			return 0, "no closing parenthesis", ErrSyntax
		}
		body = body[:end]
		port, n, ok := scan229(body)
		if !ok || n != len(body) {
			return 0, shape, ErrSyntax
		}
		return checkPort229(port)
	}
	for i := range len(s) {
		if port, _, ok := scan229(s[i:]); ok {
			return checkPort229(port)
		}
	}
	return 0, shape, ErrSyntax
}

// scan229 reads <d><d><d><port><d> from the start of s and returns the port
// (capped at 65536), the bytes read, and whether s starts that way.
func scan229(s string) (port, n int, ok bool) {
	if len(s) < 5 {
		return 0, 0, false
	}
	d := s[0]
	if d < 33 || d > 126 || isDigit(d) || s[1] != d || s[2] != d {
		return 0, 0, false
	}
	i := 3
	for ; i < len(s) && isDigit(s[i]); i++ {
		port = min(port*10+int(s[i]-'0'), 65536)
	}
	if i == 3 || i >= len(s) || s[i] != d {
		return 0, 0, false
	}
	return port, i + 1, true
}

func checkPort229(port int) (uint16, string, error) {
	if port < 1 || port > 65535 {
		return 0, "port out of range 1-65535", ErrRange
	}
	return uint16(port), "", nil
}

// Format229 returns the RFC 2428 reply "229 Entering Extended Passive Mode
// (|||port|)" without CRLF. Port 0 is formatted but Parse229 rejects it.
func Format229(port uint16) string {
	var buf [56]byte
	b := append(buf[:0], "229 Entering Extended Passive Mode (|||"...)
	b = strconv.AppendUint(b, uint64(port), 10)
	b = append(b, "|)"...)
	return string(b)
}

// scanFail says why scan6 stopped.
type scanFail uint8

const (
	scanOK    scanFail = iota
	scanShort          // a comma or number missing: fewer than six numbers
	scanLong           // a number with more than three digits
)

func (f scanFail) detail(idx int) string {
	if f == scanLong {
		return fmt.Sprintf("number %d has more than 3 digits", idx+1)
	}
	return "want 6 comma-separated numbers"
}

// scan6 reads six comma-separated decimal numbers of one to three digits
// from the start of s, skipping spaces and tabs after each comma if spaces
// is set. It returns the numbers (each at most 999), the bytes read, and on
// failure why and the index of the number concerned. It checks no ranges.
func scan6(s string, spaces bool) (nums [6]int, n int, fail scanFail, idx int) {
	i := 0
	for k := range nums {
		if k > 0 {
			if i >= len(s) || s[i] != ',' {
				return nums, i, scanShort, k
			}
			i++
			for spaces && i < len(s) && (s[i] == ' ' || s[i] == '\t') {
				i++
			}
		}
		start := i
		for ; i < len(s) && isDigit(s[i]); i++ {
			if i-start == 3 {
				return nums, i, scanLong, k
			}
			nums[k] = nums[k]*10 + int(s[i]-'0')
		}
		if i == start {
			return nums, i, scanShort, k
		}
	}
	return nums, i, scanOK, 0
}

// addrPort6 checks the ranges of h1,h2,h3,h4,p1,p2 and builds the AddrPort.
func addrPort6(nums [6]int) (netip.AddrPort, string, error) {
	for i, v := range nums {
		if v <= 255 {
			continue
		}
		if i < 4 {
			return netip.AddrPort{}, fmt.Sprintf("octet %d is %d", i+1, v), ErrRange
		}
		return netip.AddrPort{}, fmt.Sprintf("p%d is %d", i-3, v), ErrRange
	}
	port := uint16(nums[4]<<8 | nums[5])
	if port == 0 {
		return netip.AddrPort{}, "port is 0", ErrRange
	}
	a := netip.AddrFrom4([4]byte{byte(nums[0]), byte(nums[1]), byte(nums[2]), byte(nums[3])})
	return netip.AddrPortFrom(a, port), "", nil
}

// append6 appends "h1,h2,h3,h4,p1,p2" to b.
func append6(b []byte, a [4]byte, port uint16) []byte {
	for i, v := range [6]byte{a[0], a[1], a[2], a[3], byte(port >> 8), byte(port)} {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(v), 10)
	}
	return b
}

// parsePort parses a decimal port number 1..65535. what names it in the
// detail ("port", "first port").
func parsePort(s, what string) (uint16, string, error) {
	if s == "" {
		return 0, "empty " + what, ErrSyntax
	}
	v := 0
	for i := range len(s) {
		if !isDigit(s[i]) {
			return 0, what + " is not a decimal number", ErrSyntax
		}
		v = min(v*10+int(s[i]-'0'), 65536)
	}
	if v < 1 || v > 65535 {
		return 0, what + " " + s + " out of range 1-65535", ErrRange
	}
	return uint16(v), "", nil
}

// hasCode reports whether the reply s starts with the three-digit code,
// not followed by another digit.
func hasCode(s, code string) bool {
	return strings.HasPrefix(s, code) && (len(s) == 3 || !isDigit(s[3]))
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func allDigits(s string) bool {
	for i := range len(s) {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}
