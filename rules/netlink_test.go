package rules

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netlink/nl"
)

func TestTTLSeconds(t *testing.T) {
	for _, tc := range []struct {
		ttl  time.Duration
		want uint32
	}{
		{0, 1}, // never 0: that would make the element permanent
		{time.Millisecond, 1},
		{time.Second, 1},
		{time.Second + time.Millisecond, 2},
		{30 * time.Second, 30},
	} {
		if got := ttlSeconds(tc.ttl); got != tc.want {
			t.Errorf("ttlSeconds(%s) = %d, want %d", tc.ttl, got, tc.want)
		}
	}
}

// TestNATElements checks the bytes of map elements against the layout nft
// itself uses: each field of a concatenation padded to 4 bytes, network
// byte order.
func TestNATElements(t *testing.T) {
	m := newNATMaps("FTPGATE", true)
	from4, to4 := netip.MustParseAddr("198.19.0.2"), netip.MustParseAddrPort("198.19.0.1:40001")   // 0x9c41
	dnat4, snat4 := netip.MustParseAddrPort("198.18.1.2:30000"), netip.MustParseAddr("198.18.1.1") // 0x7530
	from6, to6 := netip.MustParseAddr("2001:db8::2"), netip.MustParseAddrPort("[2001:db8::1]:40001")
	dnat6 := netip.MustParseAddrPort("[2001:db8:1::5]:30000")
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	a := func(s string) []byte { return netip.MustParseAddr(s).AsSlice() }

	for _, tc := range []struct {
		name string
		p    Pinhole
		want []natElement
	}{
		{"accept-local has none", Pinhole{From: from4, To: to4}, nil},
		{"redirect", Pinhole{From: from4, To: to4, Deliver: Redirect, RedirectPort: 2121}, []natElement{
			{m.v4.redirect, cat(a("198.19.0.2"), a("198.19.0.1"), []byte{0x9c, 0x41, 0, 0}), []byte{0x08, 0x49}},
		}},
		{"dnat with snat", Pinhole{From: from4, To: to4, Deliver: DNAT, DNATTo: dnat4, SNATTo: snat4}, []natElement{
			{m.v4.snat, cat(a("198.19.0.2"), a("198.18.1.2"), []byte{0x75, 0x30, 0, 0}), a("198.18.1.1")},
			{m.v4.dnat, cat(a("198.19.0.2"), a("198.19.0.1"), []byte{0x9c, 0x41, 0, 0}), cat(a("198.18.1.2"), []byte{0x75, 0x30, 0, 0})},
		}},
		{"dnat ipv6", Pinhole{From: from6, To: to6, Deliver: DNAT, DNATTo: dnat6}, []natElement{
			{m.v6.dnat, cat(a("2001:db8::2"), a("2001:db8::1"), []byte{0x9c, 0x41, 0, 0}), cat(a("2001:db8:1::5"), []byte{0x75, 0x30, 0, 0})},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.p.Validate(); err != nil {
				t.Fatal(err)
			}
			got, err := m.natElements(tc.p)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("%d elements, want %d", len(got), len(tc.want))
			}
			for i := range got {
				g, w := got[i], tc.want[i]
				if g.set != w.set || !bytes.Equal(g.key, w.key) || !bytes.Equal(g.val, w.val) {
					t.Errorf("element %d = %s key %x val %x, want %s key %x val %x", i, g.set.Name, g.key, g.val, w.set.Name, w.key, w.val)
				}
				if uint32(len(g.key)) != g.set.KeyType.Bytes || uint32(len(g.val)) != g.set.DataType.Bytes {
					t.Errorf("element %d: key %d bytes, value %d bytes; map %s wants %d and %d",
						i, len(g.key), len(g.val), g.set.Name, g.set.KeyType.Bytes, g.set.DataType.Bytes)
				}
			}
		})
	}

	v4only := newNATMaps("FTPGATE", false)
	if _, err := v4only.natElements(Pinhole{From: from6, To: to6, Deliver: DNAT, DNATTo: dnat6}); !errors.Is(err, ErrFamily) {
		t.Errorf("IPv6 element without the ip6 table: %v, want ErrFamily", err)
	}
}

// fakeElement records what the kernel would be asked.
type fakeElement struct {
	name string
	log  *[]string
	fail error
	val  string // a map element's value
}

func (e fakeElement) key() string   { return e.name }
func (e fakeElement) value() string { return e.val }
func (e fakeElement) add(ttl time.Duration, refresh bool) error {
	op := "add "
	if refresh {
		op = "refresh "
	}
	*e.log = append(*e.log, op+e.name+" "+ttl.String())
	return e.fail
}
func (e fakeElement) del() error {
	*e.log = append(*e.log, "del "+e.name)
	return nil
}

// newBooks returns a Netlink with books but no kernel behind it.
func newBooks(t *testing.T) *Netlink {
	t.Helper()
	m, err := newMetrics(prometheus.NewRegistry(), "netlink")
	if err != nil {
		t.Fatal(err)
	}
	return &Netlink{ipt: &IPTables{m: m}, open: map[*nlPinhole]struct{}{}, refs: map[string]*sharedElement{}}
}

// TestSharedElements: two pinholes that need the same element (same key)
// share it. The kernel's timeout follows the longer-lived holder (it is
// refreshed for a later one, never shortened for an earlier one), and the
// element is deleted with the last holder.
func TestSharedElements(t *testing.T) {
	n := newBooks(t)
	var log []string
	shared := fakeElement{"shared", &log, nil, ""}
	own := fakeElement{"own", &log, nil, ""}
	long := &nlPinhole{ttl: time.Hour, timer: time.NewTimer(time.Hour)}
	short := &nlPinhole{ttl: time.Minute, timer: time.NewTimer(time.Hour)}
	longer := &nlPinhole{ttl: 2 * time.Hour, timer: time.NewTimer(time.Hour)}
	for _, step := range []struct {
		e    *nlPinhole
		els  []element
		want []string
	}{
		{long, []element{shared}, []string{"add shared 1h0m0s"}},
		{short, []element{shared, own}, []string{"add own 1m0s"}},      // shared already lives longer
		{longer, []element{shared}, []string{"refresh shared 2h0m0s"}}, // moves its timeout later
	} {
		log = nil
		if err := n.install(step.e, step.els); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(log, step.want) {
			t.Errorf("install(ttl %s) asked the kernel %q, want %q", step.e.ttl, log, step.want)
		}
	}
	log = nil
	for _, e := range []*nlPinhole{long, longer} {
		if open, err := n.drop(e); !open || err != nil {
			t.Fatalf("drop = %v, %v", open, err)
		}
	}
	if len(log) != 0 {
		t.Errorf("closing two of three holders asked the kernel %q, want nothing", log)
	}
	if open, err := n.drop(short); !open || err != nil {
		t.Fatalf("drop(short) = %v, %v", open, err)
	}
	if want := []string{"del own", "del shared"}; !slices.Equal(log, want) {
		t.Errorf("closing the last holder asked the kernel %q, want %q", log, want)
	}
	if open, _ := n.drop(short); open {
		t.Error("drop of a closed pinhole reported it open")
	}
	if len(n.refs) != 0 || len(n.open) != 0 {
		t.Errorf("books not empty: refs %v, open %d", n.refs, len(n.open))
	}
}

// TestMissingFeature: what counts as "the kernel has no such thing".
func TestMissingFeature(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("creating ipset: %w", syscall.EINVAL), true}, // nfnetlink without the ipset subsystem
		{fmt.Errorf("nft: %w", syscall.EOPNOTSUPP), true},
		{fmt.Errorf("ipset: %w", nl.IPSetError(nl.IPSET_ERR_FIND_TYPE)), true},
		{fmt.Errorf("socket: %w", syscall.EPERM), true},
		{fmt.Errorf("ipset: %w", nl.IPSetError(nl.IPSET_ERR_REFERENCED)), false}, // in use: a real error
		{errors.New("exit status 4: Another app is currently holding the xtables lock"), false},
	} {
		if got := missingFeature(tc.err); got != tc.want {
			t.Errorf("missingFeature(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestInstallRollsBack: when the kernel refuses the second element, the
// first is deleted again and nothing stays on the books.
func TestInstallRollsBack(t *testing.T) {
	n := newBooks(t)
	var log []string
	refused := errors.New("refused")
	e := &nlPinhole{ttl: time.Second}
	err := n.install(e, []element{fakeElement{"filter", &log, nil, ""}, fakeElement{"dnat", &log, refused, ""}})
	if !errors.Is(err, refused) {
		t.Fatalf("install = %v, want the kernel's error", err)
	}
	if want := []string{"add filter 1s", "add dnat 1s", "del filter"}; !slices.Equal(log, want) {
		t.Errorf("kernel asked %q, want %q", log, want)
	}
	if len(n.refs) != 0 || len(n.open) != 0 {
		t.Errorf("books not empty: refs %v, open %d", n.refs, len(n.open))
	}
}

// TestConflictingElements: a map element that an open pinhole holds with
// one value (DNAT to client A) is never overwritten by a pinhole that
// needs another (DNAT to client B, same match): that would send A's data
// to B. The second is refused with ErrConflict, counted, and changes
// nothing; one that needs the same value shares the element.
func TestConflictingElements(t *testing.T) {
	n := newBooks(t)
	n.ipt.log = slog.New(slog.DiscardHandler)
	var log []string
	filterA := fakeElement{"ipset dnat4 A", &log, nil, ""}
	toA := fakeElement{"nft dnat_to server.gw.50000", &log, nil, "clientA"}
	toB := fakeElement{"nft dnat_to server.gw.50000", &log, nil, "clientB"}
	a := &nlPinhole{p: Pinhole{Session: 1}, ttl: time.Minute, timer: time.NewTimer(time.Hour)}
	b := &nlPinhole{p: Pinhole{Session: 2}, ttl: time.Minute, timer: time.NewTimer(time.Hour)}
	same := &nlPinhole{p: Pinhole{Session: 3}, ttl: time.Minute, timer: time.NewTimer(time.Hour)}
	if err := n.install(a, []element{filterA, toA}); err != nil {
		t.Fatal(err)
	}
	log = nil
	err := n.install(b, []element{fakeElement{"ipset dnat4 B", &log, nil, ""}, toB})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "s=1") {
		t.Fatalf("install of a conflicting element = %v, want ErrConflict naming the holder", err)
	}
	if len(log) != 0 || len(n.open) != 1 || n.refs[toA.key()].value != "clientA" || n.refs[toA.key()].holders != 1 {
		t.Errorf("a refused pinhole changed something: kernel %q, %d open, refs %+v", log, len(n.open), n.refs[toA.key()])
	}
	if got := testutil.ToFloat64(n.ipt.m.conflicts); got != 1 {
		t.Errorf("ftpgate_pinhole_conflicts_total = %v, want 1", got)
	}
	if err := n.install(same, []element{toA}); err != nil {
		t.Errorf("install of the same element with the same value = %v", err)
	}
}
