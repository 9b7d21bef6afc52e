package nat

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// RFC 1639 ("FTP Operation Over Big Address Records", FOOBAR) carries a data
// address as a list of decimal numbers 0..255:
//
//	af,hal,h1,...,hn,pal,p1,...,pm
//
// af is the address family (4 for IPv4, 6 for IPv6), hal the number of
// address bytes that follow (4 or 16), pal the number of port bytes (2 for
// TCP). LPRT sends it as a command argument; a server answers LPSV with
// "228 Entering Long Passive Mode (af,hal,...)".

// maxLongNumbers is the length of the longest list of RFC 1639 numbers that
// the parsers accept: af, hal, 16 address bytes, pal, 2 port bytes.
const maxLongNumbers = 2 + 16 + 1 + 2

// ParseLPRT parses the argument of an LPRT command (RFC 1639 section 2),
// e.g. "4,4,198,18,1,1,2,195,81" or "6,16,32,1,13,184,...,2,195,81": decimal
// numbers of one to three digits, each 0..255, separated by single commas
// with no spaces. White space and CRLF around the argument are ignored.
//
// af must be 4 with hal 4 (IPv4) or 6 with hal 16 (IPv6), and pal must be
// 2; any other address family or length is ErrFamily. The port must not be
// 0 (ErrRange). The address may be unspecified: whether to accept it is the
// caller's decision, as for PORT.
func ParseLPRT(arg string) (netip.AddrPort, error) {
	s := strings.Trim(arg, cutset)
	nums, n, detail, err := scanLongList(s, false)
	if err == nil && n < len(s) {
		detail, err = "unexpected text after the port", ErrSyntax
	}
	var ap netip.AddrPort
	if err == nil {
		ap, detail, err = addrPortLong(nums)
	}
	if err != nil {
		return netip.AddrPort{}, &ParseError{What: "LPRT", Input: arg, Detail: detail, Err: err}
	}
	return ap, nil
}

// FormatLPRT returns the LPRT argument for ap: "4,4,h1,h2,h3,h4,2,p1,p2" for
// IPv4 and IPv4-mapped IPv6 addresses, "6,16,h1,...,h16,2,p1,p2" for other
// IPv6 addresses. It returns "" for an invalid address or one with a zone.
func FormatLPRT(ap netip.AddrPort) string {
	a := ap.Addr().Unmap()
	if !a.IsValid() || a.Zone() != "" {
		return ""
	}
	var buf [96]byte
	return string(appendLong(buf[:0], a, ap.Port()))
}

// Parse228 parses a 228 reply to LPSV as received, e.g.
// "228 Entering Long Passive Mode (4,4,198,18,1,2,2,117,50)\r\n", and returns
// the address and port it advertises. The reply must start with the code
// 228. Like Parse227 it is liberal about the text: after the code it scans
// for the first run of digits that reads as a complete af,hal,...,pal,...
// list (with or without parentheses, spaces or tabs allowed after a comma)
// and ignores what follows. The checks are those of ParseLPRT.
func Parse228(reply string) (netip.AddrPort, error) {
	ap, detail, err := parse228(reply)
	if err != nil {
		return netip.AddrPort{}, &ParseError{What: "228 reply", Input: reply, Detail: detail, Err: err}
	}
	return ap, nil
}

func parse228(s string) (netip.AddrPort, string, error) {
	if !hasCode(s, "228") {
		return netip.AddrPort{}, "not a 228 reply", ErrSyntax
	}
	// The first error other than a plain syntax error (a list of the right
	// shape with a wrong family or a port 0) is the one worth reporting.
	detail, firstErr := "no af,hal,address,pal,port list found", ErrSyntax
	for i := 3; i < len(s); {
		if !isDigit(s[i]) {
			i++
			continue
		}
		nums, _, d, err := scanLongList(s[i:], true)
		if err == nil {
			ap, d, err := addrPortLong(nums)
			if err == nil {
				return ap, "", nil
			}
			if firstErr == ErrSyntax {
				detail, firstErr = d, err
			}
		} else if err != ErrSyntax && firstErr == ErrSyntax {
			detail, firstErr = d, err
		}
		for i < len(s) && isDigit(s[i]) { // skip to the next run of digits
			i++
		}
	}
	return netip.AddrPort{}, detail, firstErr
}

// Format228 returns the RFC 1639 reply "228 Entering Long Passive Mode
// (af,hal,...,pal,p1,p2)" without CRLF, or "" where FormatLPRT returns "".
func Format228(ap netip.AddrPort) string {
	a := ap.Addr().Unmap()
	if !a.IsValid() || a.Zone() != "" {
		return ""
	}
	var buf [128]byte
	b := append(buf[:0], "228 Entering Long Passive Mode ("...)
	b = appendLong(b, a, ap.Port())
	b = append(b, ')')
	return string(b)
}

// scanLongList reads an RFC 1639 list from the start of s: af, hal, hal address
// numbers, pal and pal port numbers, comma-separated, each of one to three
// digits and at most 255; after a comma it skips spaces and tabs if spaces
// is set. It returns the numbers (af, hal, address bytes, pal, port bytes,
// in order), how many bytes of s it read, and on failure a detail and
// ErrSyntax, ErrRange or ErrFamily.
func scanLongList(s string, spaces bool) (nums [maxLongNumbers]int, n int, detail string, err error) {
	i, count := 0, 0
	next := func() (int, bool) {
		if count > 0 {
			if i >= len(s) || s[i] != ',' {
				return 0, false
			}
			i++
			for spaces && i < len(s) && (s[i] == ' ' || s[i] == '\t') {
				i++
			}
		}
		start, v := i, 0
		for ; i < len(s) && isDigit(s[i]) && i-start < 4; i++ {
			v = v*10 + int(s[i]-'0')
		}
		if i == start || i-start > 3 {
			return 0, false
		}
		count++
		return v, true
	}
	// take reads the next number; what and idx name it in a detail, which
	// is built only on failure, so a success does not allocate.
	take := func(what string, idx int) (int, string, error) {
		v, ok := next()
		if !ok {
			return 0, "want af,hal,address,pal,port", ErrSyntax
		}
		if v > 255 {
			if idx > 0 {
				what = fmt.Sprintf("%s %d", what, idx)
			}
			return 0, fmt.Sprintf("%s is %d", what, v), ErrRange
		}
		return v, "", nil
	}

	af, d, err := take("af", 0)
	if err != nil {
		return nums, i, d, err
	}
	hal, d, err := take("hal", 0)
	if err != nil {
		return nums, i, d, err
	}
	if !(af == 4 && hal == 4) && !(af == 6 && hal == 16) {
		return nums, i, fmt.Sprintf("address family %d with %d address bytes is neither 4,4 (IPv4) nor 6,16 (IPv6)", af, hal), ErrFamily
	}
	nums[0], nums[1] = af, hal
	k := 2
	for j := range hal {
		if nums[k], d, err = take("address byte", j+1); err != nil {
			return nums, i, d, err
		}
		k++
	}
	pal, d, err := take("pal", 0)
	if err != nil {
		return nums, i, d, err
	}
	if pal != 2 {
		return nums, i, fmt.Sprintf("%d port bytes, want 2", pal), ErrFamily
	}
	nums[k] = pal
	k++
	for j := range 2 {
		if nums[k], d, err = take("port byte", j+1); err != nil {
			return nums, i, d, err
		}
		k++
	}
	return nums, i, "", nil
}

// addrPortLong builds the address and port of a list scanLongList accepted.
func addrPortLong(nums [maxLongNumbers]int) (netip.AddrPort, string, error) {
	hal := nums[1]
	var a netip.Addr
	if hal == 4 {
		a = netip.AddrFrom4([4]byte{byte(nums[2]), byte(nums[3]), byte(nums[4]), byte(nums[5])})
	} else {
		var b [16]byte
		for j := range b {
			b[j] = byte(nums[2+j])
		}
		a = netip.AddrFrom16(b)
	}
	p := 2 + hal + 1
	port := uint16(nums[p]<<8 | nums[p+1])
	if port == 0 {
		return netip.AddrPort{}, "port is 0", ErrRange
	}
	return netip.AddrPortFrom(a, port), "", nil
}

// appendLong appends the RFC 1639 list for a (already unmapped) and port.
func appendLong(b []byte, a netip.Addr, port uint16) []byte {
	if a.Is4() {
		b = append(b, "4,4"...)
		for _, v := range a.As4() {
			b = append(b, ',')
			b = strconv.AppendUint(b, uint64(v), 10)
		}
	} else {
		b = append(b, "6,16"...)
		for _, v := range a.As16() {
			b = append(b, ',')
			b = strconv.AppendUint(b, uint64(v), 10)
		}
	}
	b = append(b, ",2,"...)
	b = strconv.AppendUint(b, uint64(port>>8), 10)
	b = append(b, ',')
	return strconv.AppendUint(b, uint64(port&0xff), 10)
}
