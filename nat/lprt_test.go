package nat

import (
	"errors"
	"net/netip"
	"testing"
)

// lprtTests are LPRT arguments and 228 replies as RFC 1639 and real servers
// (wu-ftpd, ProFTPD, vsftpd does not implement them) write them, and the
// rejects. For a success, format is the canonical form; parsing it again
// gives want. The fuzz targets are seeded from this table.
var lprtTests = []struct {
	reply  bool // a 228 reply, else an LPRT argument
	name   string
	in     string
	want   netip.AddrPort
	err    error
	format string
}{
	{false, "IPv4", "4,4,198,18,1,1,2,195,81", ap("198.18.1.1:50001"), nil, "4,4,198,18,1,1,2,195,81"},
	{false, "IPv4 CRLF", " 4,4,10,0,0,5,2,4,1\r\n", ap("10.0.0.5:1025"), nil, "4,4,10,0,0,5,2,4,1"},
	{false, "leading zeros", "004,04,010,000,000,005,02,004,001", ap("10.0.0.5:1025"), nil, "4,4,10,0,0,5,2,4,1"},
	{false, "IPv6", "6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,1,2,195,81", ap("[2001:db8::1]:50001"), nil,
		"6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,1,2,195,81"},
	{false, "IPv4-mapped under af 6", "6,16,0,0,0,0,0,0,0,0,0,0,255,255,198,18,1,1,2,195,81",
		netip.AddrPortFrom(netip.MustParseAddr("::ffff:198.18.1.1"), 50001), nil, "4,4,198,18,1,1,2,195,81"},
	{false, "af 4 with 16 bytes", "4,16,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,2,0,21", netip.AddrPort{}, ErrFamily, ""},
	{false, "af 5", "5,4,1,2,3,4,2,4,1", netip.AddrPort{}, ErrFamily, ""},
	{false, "pal 4", "4,4,1,2,3,4,4,0,0,4,1", netip.AddrPort{}, ErrFamily, ""},
	{false, "octet 256", "4,4,1,2,3,256,2,4,1", netip.AddrPort{}, ErrRange, ""},
	{false, "af 256", "256,4,1,2,3,4,2,4,1", netip.AddrPort{}, ErrRange, ""},
	{false, "port 0", "4,4,1,2,3,4,2,0,0", netip.AddrPort{}, ErrRange, ""},
	{false, "short address", "4,4,1,2,3", netip.AddrPort{}, ErrSyntax, ""},
	{false, "no port", "4,4,1,2,3,4,2,4", netip.AddrPort{}, ErrSyntax, ""},
	{false, "extra number", "4,4,1,2,3,4,2,4,1,9", netip.AddrPort{}, ErrSyntax, ""},
	{false, "space after comma", "4, 4,1,2,3,4,2,4,1", netip.AddrPort{}, ErrSyntax, ""},
	{false, "four digits", "4,4,0001,2,3,4,2,4,1", netip.AddrPort{}, ErrSyntax, ""},
	{false, "empty", "", netip.AddrPort{}, ErrSyntax, ""},

	{true, "RFC 1639 form", "228 Entering Long Passive Mode (4,4,198,18,1,2,2,117,50)\r\n", ap("198.18.1.2:30002"), nil,
		"228 Entering Long Passive Mode (4,4,198,18,1,2,2,117,50)"},
	{true, "no parentheses", "228 Long passive 4,4,198,18,1,2,2,117,50", ap("198.18.1.2:30002"), nil,
		"228 Entering Long Passive Mode (4,4,198,18,1,2,2,117,50)"},
	{true, "spaces after commas", "228 Entering Long Passive Mode (4, 4, 198, 18, 1, 2, 2, 117, 50)", ap("198.18.1.2:30002"), nil,
		"228 Entering Long Passive Mode (4,4,198,18,1,2,2,117,50)"},
	{true, "digits before the list", "228 Long Passive Mode for 2 minutes (4,4,198,18,1,2,2,117,50)", ap("198.18.1.2:30002"), nil,
		"228 Entering Long Passive Mode (4,4,198,18,1,2,2,117,50)"},
	{true, "IPv6", "228 Entering Long Passive Mode (6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,2,2,117,50)", ap("[2001:db8::2]:30002"), nil,
		"228 Entering Long Passive Mode (6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,2,2,117,50)"},
	{true, "not 228", "227 Entering Passive Mode (198,18,1,2,117,50)", netip.AddrPort{}, ErrSyntax, ""},
	{true, "2280", "2280 (4,4,198,18,1,2,2,117,50)", netip.AddrPort{}, ErrSyntax, ""},
	{true, "no list", "228 Entering Long Passive Mode", netip.AddrPort{}, ErrSyntax, ""},
	{true, "family", "228 Entering Long Passive Mode (5,4,198,18,1,2,2,117,50)", netip.AddrPort{}, ErrFamily, ""},
	{true, "port 0", "228 Entering Long Passive Mode (4,4,198,18,1,2,2,0,0)", netip.AddrPort{}, ErrRange, ""},
}

func TestLongAddresses(t *testing.T) {
	for _, tt := range lprtTests {
		parse, format, what := ParseLPRT, FormatLPRT, "LPRT"
		if tt.reply {
			parse, format, what = Parse228, Format228, "228"
		}
		t.Run(what+"/"+tt.name, func(t *testing.T) {
			got, err := parse(tt.in)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("parse(%q) = %v, %v; want error %v", tt.in, got, err, tt.err)
				}
				checkParseError(t, tt.in, err)
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parse(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			out := format(got)
			if out != tt.format {
				t.Fatalf("format(%v) = %q, want %q", got, out, tt.format)
			}
			again, err := parse(out)
			if err != nil || again.Addr().Unmap() != got.Addr().Unmap() || again.Port() != got.Port() {
				t.Fatalf("parse(format) = %v, %v; want %v", again, err, got)
			}
		})
	}
}

func TestFormatLongInvalid(t *testing.T) {
	for _, ap := range []netip.AddrPort{{}, netip.AddrPortFrom(netip.MustParseAddr("fe80::1%eth0"), 2000)} {
		if s := FormatLPRT(ap); s != "" {
			t.Errorf("FormatLPRT(%v) = %q, want empty", ap, s)
		}
		if s := Format228(ap); s != "" {
			t.Errorf("Format228(%v) = %q, want empty", ap, s)
		}
	}
}

func TestParseLongNoAllocs(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := ParseLPRT("6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,1,2,195,81"); err != nil {
			t.Fatal(err)
		}
		if _, err := Parse228("228 Entering Long Passive Mode (4,4,198,18,1,2,2,117,50)"); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("parsing allocates %v times, want 0", allocs)
	}
}

func seedLong(f *testing.F, reply bool) {
	for _, tt := range lprtTests {
		if tt.reply == reply {
			f.Add(tt.in)
		}
	}
}

func FuzzParseLPRT(f *testing.F) {
	seedLong(f, false)
	f.Fuzz(func(t *testing.T, in string) {
		got, err := ParseLPRT(in)
		if err != nil {
			checkParseError(t, in, err)
			return
		}
		out := FormatLPRT(got)
		again, err := ParseLPRT(out)
		if err != nil || again.Addr() != got.Addr().Unmap() || again.Port() != got.Port() {
			t.Fatalf("ParseLPRT(%q) = %v; FormatLPRT = %q; parsed again = %v, %v", in, got, out, again, err)
		}
	})
}

func FuzzParse228(f *testing.F) {
	seedLong(f, true)
	f.Fuzz(func(t *testing.T, in string) {
		got, err := Parse228(in)
		if err != nil {
			checkParseError(t, in, err)
			return
		}
		out := Format228(got)
		again, err := Parse228(out)
		if err != nil || again.Addr() != got.Addr().Unmap() || again.Port() != got.Port() {
			t.Fatalf("Parse228(%q) = %v; Format228 = %q; parsed again = %v, %v", in, got, out, again, err)
		}
	})
}
