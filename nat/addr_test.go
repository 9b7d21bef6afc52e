package nat

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// kind names one parse/format pair.
type kind string

const (
	kPORT kind = "PORT"
	kEPRT kind = "EPRT"
	k227  kind = "227"
	k229  kind = "229"
)

// parse runs the parser of kind k. A 229 port comes back with no address.
func (k kind) parse(s string) (netip.AddrPort, error) {
	switch k {
	case kPORT:
		return ParsePORT(s)
	case kEPRT:
		return ParseEPRT(s)
	case k227:
		return Parse227(s)
	case k229:
		port, err := Parse229(s)
		return netip.AddrPortFrom(netip.Addr{}, port), err
	}
	panic("unknown kind " + string(k))
}

// format runs the formatter of kind k.
func (k kind) format(ap netip.AddrPort) string {
	switch k {
	case kPORT:
		return FormatPORT(ap)
	case kEPRT:
		return FormatEPRT(ap)
	case k227:
		return Format227(ap)
	case k229:
		return Format229(ap.Port())
	}
	panic("unknown kind " + string(k))
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// port229 is what kind.parse returns for a 229 reply.
func port229(p uint16) netip.AddrPort { return netip.AddrPortFrom(netip.Addr{}, p) }

// addrTests are the forms real clients and servers send, and the rejects. For
// a success, format is the canonical form the formatter must produce for
// want; parsing it again must give want (after Unmap, see EPRT af 2 with an
// IPv4-mapped address). The fuzz targets are seeded from this table.
var addrTests = []struct {
	kind   kind
	name   string
	in     string
	want   netip.AddrPort
	err    error // sentinel; nil for success
	format string
}{
	// PORT arguments (RFC 959 4.1.2).
	{kPORT, "basic", "192,168,1,2,4,1", ap("192.168.1.2:1025"), nil, "192,168,1,2,4,1"},
	{kPORT, "CRLF and spaces", "  198,18,1,1,195,81\r\n", ap("198.18.1.1:50001"), nil, "198,18,1,1,195,81"},
	{kPORT, "leading zeros", "010,001,000,009,004,001", ap("10.1.0.9:1025"), nil, "10,1,0,9,4,1"},
	{kPORT, "all-zero address", "0,0,0,0,195,81", ap("0.0.0.0:50001"), nil, "0,0,0,0,195,81"},
	{kPORT, "max", "255,255,255,255,255,255", ap("255.255.255.255:65535"), nil, "255,255,255,255,255,255"},
	{kPORT, "low port parses", "10,0,0,1,0,21", ap("10.0.0.1:21"), nil, "10,0,0,1,0,21"},
	{kPORT, "octet 256", "192,168,1,256,4,1", netip.AddrPort{}, ErrRange, ""},
	{kPORT, "p1 256", "192,168,1,2,256,1", netip.AddrPort{}, ErrRange, ""},
	{kPORT, "port 0", "192,168,1,2,0,0", netip.AddrPort{}, ErrRange, ""},
	{kPORT, "5 numbers", "192,168,1,2,4", netip.AddrPort{}, ErrSyntax, ""},
	{kPORT, "7 numbers", "192,168,1,2,4,1,7", netip.AddrPort{}, ErrSyntax, ""},
	{kPORT, "trailing comma", "192,168,1,2,4,1,", netip.AddrPort{}, ErrSyntax, ""},
	{kPORT, "spaces after commas", "192, 168, 1, 2, 4, 1", netip.AddrPort{}, ErrSyntax, ""},
	{kPORT, "4 digits", "0192,168,1,2,4,1", netip.AddrPort{}, ErrSyntax, ""},
	{kPORT, "negative", "-1,168,1,2,4,1", netip.AddrPort{}, ErrSyntax, ""},
	{kPORT, "parentheses", "(192,168,1,2,4,1)", netip.AddrPort{}, ErrSyntax, ""},
	{kPORT, "trailing text", "192,168,1,2,4,1x", netip.AddrPort{}, ErrSyntax, ""},
	{kPORT, "empty", "", netip.AddrPort{}, ErrSyntax, ""},
	{kPORT, "blank", " \r\n", netip.AddrPort{}, ErrSyntax, ""},

	// 227 replies (RFC 959, RFC 1123 4.1.2.6).
	{k227, "RFC 959", "227 Entering Passive Mode (192,168,1,2,4,1).\r\n", ap("192.168.1.2:1025"), nil, "227 Entering Passive Mode (192,168,1,2,4,1)."},
	{k227, "no trailing dot", "227 Entering Passive Mode (192,168,1,2,4,1)", ap("192.168.1.2:1025"), nil, "227 Entering Passive Mode (192,168,1,2,4,1)."},
	{k227, "no parentheses", "227 Entering Passive Mode 192,168,1,2,4,1\r\n", ap("192.168.1.2:1025"), nil, "227 Entering Passive Mode (192,168,1,2,4,1)."},
	{k227, "equals sign", "227 =192,168,1,2,4,1", ap("192.168.1.2:1025"), nil, "227 Entering Passive Mode (192,168,1,2,4,1)."},
	{k227, "lowercase", "227 entering passive mode (10,0,0,7,195,81).", ap("10.0.0.7:50001"), nil, "227 Entering Passive Mode (10,0,0,7,195,81)."},
	{k227, "multi-line, numbers last", "227-Entering Passive Mode\r\n227 (192,168,1,2,4,1)\r\n", ap("192.168.1.2:1025"), nil, "227 Entering Passive Mode (192,168,1,2,4,1)."},
	{k227, "multi-line, numbers first", "227-Entering Passive Mode (192,168,1,2,4,1)\r\n227 OK\r\n", ap("192.168.1.2:1025"), nil, "227 Entering Passive Mode (192,168,1,2,4,1)."},
	{k227, "other digits first", "227 Passive for 2 minutes (192,168,1,2,4,1)", ap("192.168.1.2:1025"), nil, "227 Entering Passive Mode (192,168,1,2,4,1)."},
	{k227, "spaces after commas accepted", "227 Entering Passive Mode (192, 168, 1, 2, 4, 1).", ap("192.168.1.2:1025"), nil, "227 Entering Passive Mode (192,168,1,2,4,1)."},
	{k227, "leading zeros", "227 Entering Passive Mode (192,168,001,002,004,001).", ap("192.168.1.2:1025"), nil, "227 Entering Passive Mode (192,168,1,2,4,1)."},
	{k227, "all-zero address", "227 Entering Passive Mode (0,0,0,0,4,1).", ap("0.0.0.0:1025"), nil, "227 Entering Passive Mode (0,0,0,0,4,1)."},
	{k227, "7 numbers reads six", "227 Entering Passive Mode (192,168,1,2,4,1,7).", ap("192.168.1.2:1025"), nil, "227 Entering Passive Mode (192,168,1,2,4,1)."},
	{k227, "no text", "227 192,168,1,2,4,1", ap("192.168.1.2:1025"), nil, "227 Entering Passive Mode (192,168,1,2,4,1)."},
	{k227, "octet 256", "227 Entering Passive Mode (192,168,1,256,4,1).", netip.AddrPort{}, ErrRange, ""},
	{k227, "port 0", "227 Entering Passive Mode (192,168,1,2,0,0).", netip.AddrPort{}, ErrRange, ""},
	{k227, "5 numbers", "227 Entering Passive Mode (192,168,1,2,4).", netip.AddrPort{}, ErrSyntax, ""},
	{k227, "4 digits", "227 Entering Passive Mode (1192,168,1,2,4,1).", netip.AddrPort{}, ErrSyntax, ""},
	{k227, "no numbers", "227 Entering Passive Mode\r\n", netip.AddrPort{}, ErrSyntax, ""},
	{k227, "code only", "227", netip.AddrPort{}, ErrSyntax, ""},
	{k227, "other code", "200 Entering Passive Mode (192,168,1,2,4,1).", netip.AddrPort{}, ErrSyntax, ""},
	{k227, "four-digit code", "2271,2,3,4,5,6", netip.AddrPort{}, ErrSyntax, ""},
	{k227, "empty", "", netip.AddrPort{}, ErrSyntax, ""},

	// EPRT arguments (RFC 2428 2).
	{kEPRT, "IPv4 |", "|1|198.18.1.1|50001|", ap("198.18.1.1:50001"), nil, "|1|198.18.1.1|50001|"},
	{kEPRT, "IPv4 !", "!1!198.18.1.1!50001!", ap("198.18.1.1:50001"), nil, "|1|198.18.1.1|50001|"},
	{kEPRT, "IPv4 #", "#1#198.18.1.1#50001#", ap("198.18.1.1:50001"), nil, "|1|198.18.1.1|50001|"},
	{kEPRT, "IPv6", "|2|2001:db8::1|50001|", ap("[2001:db8::1]:50001"), nil, "|2|2001:db8::1|50001|"},
	{kEPRT, "IPv6 #", "#2#2001:db8::1#50001#", ap("[2001:db8::1]:50001"), nil, "|2|2001:db8::1|50001|"},
	{kEPRT, "IPv4-mapped under af 2", "|2|::ffff:198.18.0.1|50001|", ap("[::ffff:198.18.0.1]:50001"), nil, "|1|198.18.0.1|50001|"},
	{kEPRT, "trailing CRLF", "|1|198.18.1.1|50001|\r\n", ap("198.18.1.1:50001"), nil, "|1|198.18.1.1|50001|"},
	{kEPRT, "unspecified", "|1|0.0.0.0|50001|", ap("0.0.0.0:50001"), nil, "|1|0.0.0.0|50001|"},
	{kEPRT, "port leading zeros", "|1|198.18.1.1|050001|", ap("198.18.1.1:50001"), nil, "|1|198.18.1.1|50001|"},
	{kEPRT, "max port", "|1|198.18.1.1|65535|", ap("198.18.1.1:65535"), nil, "|1|198.18.1.1|65535|"},
	{kEPRT, "af 3", "|3|198.18.1.1|50001|", netip.AddrPort{}, ErrFamily, ""},
	{kEPRT, "af 1 with IPv6", "|1|2001:db8::1|50001|", netip.AddrPort{}, ErrFamily, ""},
	{kEPRT, "af 1 with IPv4-mapped", "|1|::ffff:198.18.0.1|50001|", netip.AddrPort{}, ErrFamily, ""},
	{kEPRT, "af 2 with IPv4", "|2|198.18.1.1|50001|", netip.AddrPort{}, ErrFamily, ""},
	{kEPRT, "af not a number", "|x|198.18.1.1|50001|", netip.AddrPort{}, ErrSyntax, ""},
	{kEPRT, "af empty", "||198.18.1.1|50001|", netip.AddrPort{}, ErrSyntax, ""},
	{kEPRT, "missing trailing delimiter", "|1|198.18.1.1|50001", netip.AddrPort{}, ErrSyntax, ""},
	{kEPRT, "mixed delimiters", "|1|198.18.1.1!50001!", netip.AddrPort{}, ErrSyntax, ""},
	{kEPRT, "text after delimiter", "|1|198.18.1.1|50001|x", netip.AddrPort{}, ErrSyntax, ""},
	{kEPRT, "zone", "|2|fe80::1%eth0|50001|", netip.AddrPort{}, ErrSyntax, ""},
	{kEPRT, "bad address", "|1|198.18.1|50001|", netip.AddrPort{}, ErrSyntax, ""},
	{kEPRT, "empty address", "|1||50001|", netip.AddrPort{}, ErrSyntax, ""},
	{kEPRT, "port 0", "|1|198.18.1.1|0|", netip.AddrPort{}, ErrRange, ""},
	{kEPRT, "port 65536", "|1|198.18.1.1|65536|", netip.AddrPort{}, ErrRange, ""},
	{kEPRT, "huge port", "|1|198.18.1.1|99999999999999999999999|", netip.AddrPort{}, ErrRange, ""},
	{kEPRT, "port not a number", "|1|198.18.1.1|+1|", netip.AddrPort{}, ErrSyntax, ""},
	{kEPRT, "empty port", "|1|198.18.1.1||", netip.AddrPort{}, ErrSyntax, ""},
	{kEPRT, "delimiter only", "|", netip.AddrPort{}, ErrSyntax, ""},
	{kEPRT, "control-byte delimiter", "\x01" + "1\x01198.18.1.1\x0150001\x01", netip.AddrPort{}, ErrSyntax, ""},
	{kEPRT, "empty", "", netip.AddrPort{}, ErrSyntax, ""},

	// 229 replies (RFC 2428 3).
	{k229, "RFC 2428", "229 Entering Extended Passive Mode (|||6446|)\r\n", port229(6446), nil, "229 Entering Extended Passive Mode (|||6446|)"},
	{k229, "trailing dot", "229 Entering Extended Passive Mode (|||6446|).", port229(6446), nil, "229 Entering Extended Passive Mode (|||6446|)"},
	{k229, "! delimiter", "229 Entering Extended Passive Mode (!!!6446!)", port229(6446), nil, "229 Entering Extended Passive Mode (|||6446|)"},
	{k229, "no parentheses", "229 Entering Extended Passive Mode |||6446|", port229(6446), nil, "229 Entering Extended Passive Mode (|||6446|)"},
	{k229, "no parentheses, other digits first", "229 EPSV 2 ok |||6446|", port229(6446), nil, "229 Entering Extended Passive Mode (|||6446|)"},
	{k229, "max port", "229 (|||65535|)", port229(65535), nil, "229 Entering Extended Passive Mode (|||65535|)"},
	{k229, "port 65536", "229 Entering Extended Passive Mode (|||65536|)", netip.AddrPort{}, ErrRange, ""},
	{k229, "port 0", "229 Entering Extended Passive Mode (|||0|)", netip.AddrPort{}, ErrRange, ""},
	{k229, "mixed delimiters", "229 Entering Extended Passive Mode (|||6446!)", netip.AddrPort{}, ErrSyntax, ""},
	{k229, "two delimiters", "229 Entering Extended Passive Mode (||6446|)", netip.AddrPort{}, ErrSyntax, ""},
	{k229, "address inside", "229 Entering Extended Passive Mode (|1|198.18.1.1|6446|)", netip.AddrPort{}, ErrSyntax, ""},
	{k229, "no port", "229 Entering Extended Passive Mode (||||)", netip.AddrPort{}, ErrSyntax, ""},
	{k229, "unclosed parenthesis", "229 Entering Extended Passive Mode (|||6446|", netip.AddrPort{}, ErrSyntax, ""},
	{k229, "digit delimiter", "229 Entering Extended Passive Mode (11164461)", netip.AddrPort{}, ErrSyntax, ""},
	{k229, "other code", "227 Entering Extended Passive Mode (|||6446|)", netip.AddrPort{}, ErrSyntax, ""},
	{k229, "empty", "", netip.AddrPort{}, ErrSyntax, ""},
}

func TestParseFormat(t *testing.T) {
	for _, tt := range addrTests {
		t.Run(string(tt.kind)+"/"+tt.name, func(t *testing.T) {
			got, err := tt.kind.parse(tt.in)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("parse(%q) error = %v, want %v", tt.in, err, tt.err)
				}
				var pe *ParseError
				if !errors.As(err, &pe) || pe.Input != tt.in {
					t.Fatalf("parse(%q) error = %#v, want *ParseError with the input", tt.in, err)
				}
				if got != (netip.AddrPort{}) {
					t.Errorf("parse(%q) = %v with error, want zero value", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parse(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			out := tt.kind.format(got)
			if out != tt.format {
				t.Fatalf("format(%v) = %q, want %q", got, out, tt.format)
			}
			again, err := tt.kind.parse(out)
			if err != nil || again != unmap(tt.want) {
				t.Fatalf("parse(format(%v)) = %v, %v", got, again, err)
			}
		})
	}
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func TestFormatUnrepresentable(t *testing.T) {
	v6 := ap("[2001:db8::1]:50001")
	mapped := ap("[::ffff:198.18.0.1]:50001")
	tests := []struct {
		name, got, want string
	}{
		{"PORT IPv6", FormatPORT(v6), ""},
		{"PORT zero", FormatPORT(netip.AddrPort{}), ""},
		{"PORT mapped", FormatPORT(mapped), "198,18,0,1,195,81"},
		{"227 IPv6", Format227(v6), ""},
		{"227 zero", Format227(netip.AddrPort{}), ""},
		{"227 mapped", Format227(mapped), "227 Entering Passive Mode (198,18,0,1,195,81)."},
		{"EPRT zero", FormatEPRT(netip.AddrPort{}), ""},
		{"EPRT zone", FormatEPRT(ap("[fe80::1%eth0]:50001")), ""},
		{"EPRT long IPv6", FormatEPRT(ap("[1111:2222:3333:4444:5555:6666:7777:8888]:65535")), "|2|1111:2222:3333:4444:5555:6666:7777:8888|65535|"},
		{"229 zero", Format229(0), "229 Entering Extended Passive Mode (|||0|)"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestParseErrorMessage(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{second(ParsePORT("1,2,3")), `parsing PORT "1,2,3": want 6 comma-separated numbers: syntax error`},
		{second(ParsePORT("1,2,256,4,5,6")), `parsing PORT "1,2,256,4,5,6": octet 3 is 256: value out of range`},
		{second(ParsePORT("1,2,3,4,0,300")), `parsing PORT "1,2,3,4,0,300": p2 is 300: value out of range`},
		{second(ParsePORT("1,2,3,4,0,0")), `parsing PORT "1,2,3,4,0,0": port is 0: value out of range`},
		{second(ParsePORT("1,2,3,4444,0,1")), `parsing PORT "1,2,3,4444,0,1": number 4 has more than 3 digits: syntax error`},
		{second(ParseEPRT("|3|1.2.3.4|5|")), `parsing EPRT "|3|1.2.3.4|5|": address family 3 is neither 1 (IPv4) nor 2 (IPv6): unsupported network protocol`},
		{second(Parse227("227 x")), `parsing 227 reply "227 x": no h1,h2,h3,h4,p1,p2 found: syntax error`},
		{second(Parse229("229 (|||0|)")), `parsing 229 reply "229 (|||0|)": port out of range 1-65535: value out of range`},
		{&ParseError{What: "PORT", Input: "x", Err: ErrSyntax}, `parsing PORT "x": syntax error`},
	}
	for _, tt := range tests {
		if tt.err == nil || tt.err.Error() != tt.want {
			t.Errorf("error = %v\nwant    %s", tt.err, tt.want)
		}
	}
}

func second[T any](_ T, err error) error { return err }

func TestParseAllocs(t *testing.T) {
	long := "229 " + strings.Repeat("x", 1000) + "|||6446|"
	tests := map[string]func(){
		"PORT": func() { _, _ = ParsePORT("192,168,1,2,4,1\r\n") },
		"227":  func() { _, _ = Parse227("227-Entering Passive Mode\r\n227 (192,168,1,2,4,1)\r\n") },
		"EPRT": func() { _, _ = ParseEPRT("|2|2001:db8::1|50001|") },
		"229":  func() { _, _ = Parse229(long) },
	}
	for name, f := range tests {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocations per successful parse, want 0", name, n)
		}
	}
}

func BenchmarkParse227(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse227("227 Entering Passive Mode (192,168,1,2,4,1).\r\n"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFormat227(b *testing.B) {
	b.ReportAllocs()
	a := ap("192.168.1.2:1025")
	for b.Loop() {
		if Format227(a) == "" {
			b.Fatal("empty")
		}
	}
}
