package nat

import (
	"errors"
	"testing"
)

// Properties for every parser: it never panics; a failure is a *ParseError
// wrapping one of the parser sentinels; a success formats to text that parses
// back to the same value (tailscale's FuzzRoundtrip). Seeds come from the
// unit tables and from testdata/fuzz/<FuzzName>/.

func seed(f *testing.F, k kind) {
	for _, tt := range addrTests {
		if tt.kind == k {
			f.Add(tt.in)
		}
	}
}

func checkParseError(t *testing.T, in string, err error) {
	t.Helper()
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Input != in {
		t.Fatalf("parse(%q) error %#v is not a *ParseError with the input", in, err)
	}
	if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrRange) && !errors.Is(err, ErrFamily) {
		t.Fatalf("parse(%q) error %v wraps no parser sentinel", in, err)
	}
	_ = err.Error()
}

func FuzzParsePORT(f *testing.F) {
	seed(f, kPORT)
	f.Fuzz(func(t *testing.T, in string) {
		got, err := ParsePORT(in)
		if err != nil {
			checkParseError(t, in, err)
			return
		}
		out := FormatPORT(got)
		again, err := ParsePORT(out)
		if err != nil || again != got {
			t.Fatalf("ParsePORT(%q) = %v; FormatPORT = %q; parsed again = %v, %v", in, got, out, again, err)
		}
	})
}

func FuzzParse227(f *testing.F) {
	seed(f, k227)
	f.Fuzz(func(t *testing.T, in string) {
		got, err := Parse227(in)
		if err != nil {
			checkParseError(t, in, err)
			return
		}
		out := Format227(got)
		again, err := Parse227(out)
		if err != nil || again != got {
			t.Fatalf("Parse227(%q) = %v; Format227 = %q; parsed again = %v, %v", in, got, out, again, err)
		}
	})
}

func FuzzParseEPRT(f *testing.F) {
	seed(f, kEPRT)
	f.Fuzz(func(t *testing.T, in string) {
		got, err := ParseEPRT(in)
		if err != nil {
			checkParseError(t, in, err)
			return
		}
		if got.Addr().Zone() != "" || got.Port() == 0 {
			t.Fatalf("ParseEPRT(%q) = %v: zone or port 0", in, got)
		}
		// FormatEPRT writes an IPv4-mapped address as af 1, so compare
		// after Unmap.
		out := FormatEPRT(got)
		again, err := ParseEPRT(out)
		if err != nil || again != unmap(got) {
			t.Fatalf("ParseEPRT(%q) = %v; FormatEPRT = %q; parsed again = %v, %v", in, got, out, again, err)
		}
	})
}

func FuzzParse229(f *testing.F) {
	seed(f, k229)
	f.Fuzz(func(t *testing.T, in string) {
		got, err := Parse229(in)
		if err != nil {
			checkParseError(t, in, err)
			return
		}
		out := Format229(got)
		again, err := Parse229(out)
		if err != nil || again != got || got == 0 {
			t.Fatalf("Parse229(%q) = %v; Format229 = %q; parsed again = %v, %v", in, got, out, again, err)
		}
	})
}

func FuzzParsePortRange(f *testing.F) {
	for _, tt := range portRangeTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := ParsePortRange(in)
		if err != nil {
			checkParseError(t, in, err)
			return
		}
		if got.Len() < 1 || !got.Contains(got.First) || !got.Contains(got.Last) {
			t.Fatalf("ParsePortRange(%q) = %v: invalid range", in, got)
		}
		out := got.String()
		again, err := ParsePortRange(out)
		if err != nil || again != got {
			t.Fatalf("ParsePortRange(%q) = %v; String = %q; parsed again = %v, %v", in, got, out, again, err)
		}
	})
}
