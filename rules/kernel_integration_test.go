//go:build integration

// Integration tests of the kernel-facing helpers beside the iptables
// backend: SO_ORIGINAL_DST, IP_TRANSPARENT listeners and conntrack events.
// They run in the same binary, and so behind the same TestMain guard, as
// integration_test.go: only inside a network namespace of their own
// (unshare --net), with 198.18.0.1-3 and 2001:db8::1-3 on lo. Every test
// starts and ends with both iptables variants flushed (resetFirewall).
package rules

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Destinations that no interface has: what a client dials before the
// firewall redirects it.
var (
	away4 = netip.MustParseAddr("198.18.0.9")
	away6 = netip.MustParseAddr("2001:db8::9")
)

// routeAway routes away4 and away6 through lo, as a default route would on
// a real machine: nat OUTPUT sees a packet only after the routing decision,
// and the namespace has no other route. The routes go when the test ends.
func routeAway(t *testing.T) {
	t.Helper()
	mustBeIsolated(t)
	for _, a := range []netip.Addr{away4, away6} {
		prefix := netip.PrefixFrom(a, a.BitLen()).String()
		if out, err := exec.Command("ip", "route", "replace", prefix, "dev", "lo").CombinedOutput(); err != nil {
			t.Fatalf("ip route replace %s dev lo: %v: %s", prefix, err, out)
		}
		t.Cleanup(func() {
			mustBeIsolated(t)
			if out, err := exec.Command("ip", "route", "del", prefix, "dev", "lo").CombinedOutput(); err != nil {
				t.Errorf("ip route del %s dev lo: %v: %s", prefix, err, out)
			}
		})
	}
}

// acceptOne dials dst from src through ln and returns the accepted end.
// Both ends are closed when the test ends.
func acceptOne(t *testing.T, ln net.Listener, src netip.Addr, dst netip.AddrPort) *net.TCPConn {
	t.Helper()
	type result struct {
		c   net.Conn
		err error
	}
	accepted := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		accepted <- result{c, err}
	}()
	var (
		c   net.Conn
		err error
	)
	if src.IsValid() {
		c, err = dial(src, dst)
	} else {
		c, err = net.DialTimeout("tcp", dst.String(), 2*time.Second)
	}
	if err != nil {
		ln.Close() // unblocks Accept
		<-accepted
		t.Fatalf("dialing %s: %v", dst, err)
	}
	t.Cleanup(func() { c.Close() })
	select {
	case r := <-accepted:
		if r.err != nil {
			t.Fatalf("accepting the connection to %s: %v", dst, r.err)
		}
		t.Cleanup(func() { r.c.Close() })
		return r.c.(*net.TCPConn)
	case <-time.After(2 * time.Second):
		ln.Close()
		<-accepted
		t.Fatalf("connection to %s connected but was not accepted on %s", dst, ln.Addr())
		return nil
	}
}

func listen(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatalf("listening on %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func wantOriginal(t *testing.T, c *net.TCPConn, want netip.AddrPort) {
	t.Helper()
	got, err := OriginalDestination(c)
	if err != nil || got != want {
		t.Errorf("OriginalDestination(%s -> %s) = %v, %v; want %s", c.RemoteAddr(), c.LocalAddr(), got, err, want)
	}
}

func wantNotRedirected(t *testing.T, c *net.TCPConn) {
	t.Helper()
	got, err := OriginalDestination(c)
	if !errors.Is(err, ErrNotExist) {
		t.Errorf("OriginalDestination(%s -> %s) = %v, %v; want ErrNotExist", c.RemoteAddr(), c.LocalAddr(), got, err)
		return
	}
	t.Logf("not redirected: %v", err)
}

func TestIntegrationOriginalDestination(t *testing.T) {
	routeAway(t)
	forEachVariant(t, func(t *testing.T, v variant) {
		// Nothing redirected yet: conntrack may not even track this
		// namespace's connections (ENOENT), or it does and NAT changed
		// nothing; ErrNotExist either way.
		direct := listen(t, "tcp4", netip.AddrPortFrom(gw4, 0).String())
		wantNotRedirected(t, acceptOne(t, direct, peer4, netip.MustParseAddrPort(direct.Addr().String())))

		// Locally generated connections traverse nat OUTPUT. REDIRECT
		// sends them to the primary address of lo, 127.0.0.1 or ::1, so
		// the listeners take every address.
		run(t, v.v4, "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", away4.String(), "--dport", "21",
			"-j", "REDIRECT", "--to-ports", "2121")
		run(t, v.v6, "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", away6.String(), "--dport", "21",
			"-j", "REDIRECT", "--to-ports", "2121")
		ln4 := listen(t, "tcp4", "0.0.0.0:2121")
		ln6 := listen(t, "tcp6", "[::]:2121")

		t.Run("IPv4", func(t *testing.T) {
			c := acceptOne(t, ln4, netip.Addr{}, netip.AddrPortFrom(away4, 21))
			if got := c.LocalAddr().(*net.TCPAddr).Port; got != 2121 {
				t.Fatalf("accepted on port %d: not redirected", got)
			}
			wantOriginal(t, c, netip.AddrPortFrom(away4, 21))
			// A connection to the listener itself, now that conntrack
			// tracks everything: the kernel answers with the local
			// address.
			wantNotRedirected(t, acceptOne(t, ln4, peer4, netip.AddrPortFrom(gw4, 2121)))
		})
		t.Run("IPv6", func(t *testing.T) {
			c := acceptOne(t, ln6, netip.Addr{}, netip.AddrPortFrom(away6, 21))
			wantOriginal(t, c, netip.AddrPortFrom(away6, 21))
			wantNotRedirected(t, acceptOne(t, ln6, peer6, netip.AddrPortFrom(gw6, 2121)))
		})
		t.Run("DualStack", func(t *testing.T) {
			// An IPv4 connection on a dual-stack socket: SO_ORIGINAL_DST
			// on an AF_INET6 socket, answer unmapped.
			run(t, v.v4, "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", away4.String(), "--dport", "22",
				"-j", "REDIRECT", "--to-ports", "2122")
			ln := listen(t, "tcp", "[::]:2122")
			c := acceptOne(t, ln, peer4, netip.AddrPortFrom(away4, 22))
			if a := netip.MustParseAddrPort(c.LocalAddr().String()).Addr(); !a.Is4In6() && !a.Is4() {
				t.Fatalf("local address %s: not an IPv4 connection", a)
			}
			wantOriginal(t, c, netip.AddrPortFrom(away4, 22))
		})
		t.Run("DNAT", func(t *testing.T) {
			ln := listen(t, "tcp4", netip.AddrPortFrom(gw4, 0).String())
			to := netip.MustParseAddrPort(ln.Addr().String())
			run(t, v.v4, "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", away4.String(), "--dport", "2000",
				"-j", "DNAT", "--to-destination", to.String())
			wantOriginal(t, acceptOne(t, ln, peer4, netip.AddrPortFrom(away4, 2000)), netip.AddrPortFrom(away4, 2000))

			ln6 := listen(t, "tcp6", netip.AddrPortFrom(gw6, 0).String())
			to6 := netip.MustParseAddrPort(ln6.Addr().String())
			run(t, v.v6, "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", away6.String(), "--dport", "2000",
				"-j", "DNAT", "--to-destination", to6.String())
			wantOriginal(t, acceptOne(t, ln6, peer6, netip.AddrPortFrom(away6, 2000)), netip.AddrPortFrom(away6, 2000))
		})
	})
}

// sockoptInt reads an int socket option of ln's socket.
func sockoptInt(t *testing.T, ln net.Listener, level, opt int) int {
	t.Helper()
	raw, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var (
		v    int
		gerr error
	)
	if err := raw.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), level, opt) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatalf("getsockopt(%d, %d) on %s: %v", level, opt, ln.Addr(), gerr)
	}
	return v
}

func TestIntegrationTransparentListenConfig(t *testing.T) {
	lc := TransparentListenConfig()
	for _, tt := range []struct {
		network, addr string
		v6            bool // an AF_INET6 socket
	}{
		{"tcp4", "198.18.0.1:0", false},
		{"tcp4", "0.0.0.0:0", false},
		{"tcp6", "[2001:db8::1]:0", true},
		{"tcp", "[::]:0", true}, // dual-stack
	} {
		ln, err := lc.Listen(t.Context(), tt.network, tt.addr)
		if err != nil {
			t.Fatalf("Listen(%s, %s): %v", tt.network, tt.addr, err)
		}
		defer ln.Close()
		if got := sockoptInt(t, ln, syscall.SOL_IP, syscall.IP_TRANSPARENT); got != 1 {
			t.Errorf("%s %s: IP_TRANSPARENT = %d, want 1", tt.network, ln.Addr(), got)
		}
		if tt.v6 {
			if got := sockoptInt(t, ln, syscall.SOL_IPV6, ipv6Transparent); got != 1 {
				t.Errorf("%s %s: IPV6_TRANSPARENT = %d, want 1", tt.network, ln.Addr(), got)
			}
		}
		// A plain listener does not have it: the getsockopt tells.
		plain := listen(t, tt.network, tt.addr)
		if got := sockoptInt(t, plain, syscall.SOL_IP, syscall.IP_TRANSPARENT); got != 0 {
			t.Errorf("%s %s: plain listener has IP_TRANSPARENT = %d", tt.network, plain.Addr(), got)
		}
	}
}

// newTestConntrack opens a Conntrack whose logs are shown if the test fails.
func newTestConntrack(t *testing.T) *Conntrack {
	t.Helper()
	logs := &syncBuffer{}
	c, err := NewConntrack(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), nil)
	if err != nil {
		t.Fatalf("NewConntrack: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if t.Failed() {
			t.Logf("conntrack logs:\n%s", logs)
		}
	})
	return c
}

// wantSeen waits up to 2s for e.
func wantSeen(t *testing.T, e *Expectation, what string) {
	t.Helper()
	select {
	case <-e.Done():
		if err := e.Err(); err != nil {
			t.Errorf("%s: Err = %v, want nil", what, err)
		}
	case <-time.After(2 * time.Second):
		t.Errorf("%s: no event within 2s", what)
	}
}

// wantNotSeen checks that e is still pending 300ms on.
func wantNotSeen(t *testing.T, e *Expectation, what string) {
	t.Helper()
	select {
	case <-e.Done():
		t.Errorf("%s: Done closed (Err %v), want it pending", what, e.Err())
	case <-time.After(300 * time.Millisecond):
	}
}

// connect dials dst from src and closes the connection at once.
func connect(t *testing.T, src netip.Addr, dst netip.AddrPort) {
	t.Helper()
	c, err := dial(src, dst)
	if err != nil {
		t.Fatalf("%s -> %s: %v", src, dst, err)
	}
	c.Close()
}

func TestIntegrationConntrack(t *testing.T) {
	forEachVariant(t, func(t *testing.T, v variant) {
		// Conntrack tracks a namespace's connections once a rule needs it.
		for _, bin := range []string{v.v4, v.v6} {
			run(t, bin, "-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED", "-j", "ACCEPT")
		}

		t.Run("NoGoroutineLeft", func(t *testing.T) {
			base := runtime.NumGoroutine()
			c, err := NewConntrack(nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			e := c.Expect(peer4, netip.AddrPortFrom(gw4, 40001), noVia)
			pending := c.Expect(peer4, netip.AddrPortFrom(gw4, 40002), noVia)
			e.Cancel()
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-pending.Done():
				if !errors.Is(pending.Err(), ErrClosed) {
					t.Errorf("pending at Close: Err = %v, want ErrClosed", pending.Err())
				}
			default:
				t.Error("Close left an Expectation pending")
			}
			pending.Cancel()
			if n := waitGoroutines(base); n > base {
				t.Errorf("%d goroutines after Close, %d before NewConntrack", n, base)
			}
		})

		c := newTestConntrack(t)
		for _, fam := range testFamilies {
			t.Run(fam.name, func(t *testing.T) {
				dst := echoServer(t, fam.gw)
				other := echoServer(t, fam.gw)

				e := c.Expect(fam.peer, dst, noVia)
				defer e.Cancel()
				connect(t, fam.thief, dst)
				wantNotSeen(t, e, "a connection from another source")
				connect(t, fam.peer, other)
				wantNotSeen(t, e, "a connection to another port")
				connect(t, fam.peer, dst)
				wantSeen(t, e, "the expected connection")

				// Satisfied once: a second one needs a second Expectation.
				again := c.Expect(fam.peer, dst, noVia)
				defer again.Cancel()
				wantNotSeen(t, again, "no connection yet")
				connect(t, fam.peer, dst)
				wantSeen(t, again, "the second connection")
			})
		}
		t.Run("DNAT", func(t *testing.T) {
			routeAway(t)
			dst := echoServer(t, gw4)
			pre := netip.AddrPortFrom(away4, 2000)
			run(t, v.v4, "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", pre.Addr().String(), "--dport", "2000",
				"-j", "DNAT", "--to-destination", dst.String())
			post := c.Expect(peer4, dst, noVia) // the DNAT target: not the original tuple
			defer post.Cancel()
			elsewhere := c.Expect(peer4, pre, netip.AddrPortFrom(gw4, dst.Port()+1)) // delivered elsewhere
			defer elsewhere.Cancel()
			e := c.Expect(peer4, pre, dst)
			defer e.Cancel()
			connect(t, peer4, pre)
			wantSeen(t, e, "the connection to the pre-NAT destination, delivered to the DNAT target")
			wantNotSeen(t, post, "the DNAT target")
			wantNotSeen(t, elsewhere, "another delivery address")
			if found, err := elsewhere.Lookup(context.Background()); found || err != nil {
				t.Errorf("Lookup of another delivery address = %t, %v; want false", found, err)
			}
		})
	})
}

// ip runs one ip(8) command in the test's namespace.
func ip(t *testing.T, args ...string) string {
	t.Helper()
	mustBeIsolated(t)
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// sysctl writes one sysctl of the test's namespace (net.* is per
// namespace).
func sysctl(t *testing.T, name, value string) {
	t.Helper()
	mustBeIsolated(t)
	path := "/proc/sys/" + strings.ReplaceAll(name, ".", "/")
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		t.Fatalf("sysctl %s=%s: %v", name, value, err)
	}
}

// tproxyLoop makes a veth pair tpa-tpb inside the namespace and routes
// away4 and away6 out of tpa, so that a connection from this namespace to
// them comes back in on tpb and traverses PREROUTING, where TPROXY works,
// as it would arriving from a client. The pair goes when the test ends.
func tproxyLoop(t *testing.T) {
	t.Helper()
	ip(t, "link", "add", "tpa", "type", "veth", "peer", "name", "tpb")
	t.Cleanup(func() {
		mustBeIsolated(t)
		if out, err := exec.Command("ip", "link", "del", "tpa").CombinedOutput(); err != nil {
			t.Errorf("ip link del tpa: %v: %s", err, out)
		}
	})
	ip(t, "link", "set", "tpa", "up")
	ip(t, "link", "set", "tpb", "up")
	// The packets come in with a source address of this host: a
	// martian to IPv4 unless tpb accepts local sources.
	sysctl(t, "net.ipv4.conf.all.rp_filter", "0")
	sysctl(t, "net.ipv4.conf.tpb.rp_filter", "0")
	sysctl(t, "net.ipv4.conf.tpb.accept_local", "1")
	link := ip(t, "-o", "link", "show", "tpb")
	_, rest, ok := strings.Cut(link, "link/ether ")
	if !ok {
		t.Fatalf("no MAC address in %q", link)
	}
	mac, _, _ := strings.Cut(rest, " ")
	for _, a := range []netip.Addr{away4, away6} {
		fam := "-4"
		if a.Is6() {
			fam = "-6"
		}
		ip(t, fam, "route", "add", netip.PrefixFrom(a, a.BitLen()).String(), "dev", "tpa")
		ip(t, fam, "neigh", "add", a.String(), "lladdr", mac, "dev", "tpa", "nud", "permanent")
	}
}

// TestIntegrationTPROXY checks the operator rules documented on
// TransparentListenConfig (here matching only what enters on tpb): a
// connection to away:21 is accepted by the transparent listener on 2121,
// whose LocalAddr is away:21; SO_ORIGINAL_DST has nothing to say.
func TestIntegrationTPROXY(t *testing.T) {
	tproxyLoop(t)
	for _, fam := range []string{"-4", "-6"} {
		ip(t, fam, "rule", "add", "fwmark", "0x1/0x1", "lookup", "100")
		t.Cleanup(func() {
			mustBeIsolated(t)
			if out, err := exec.Command("ip", fam, "rule", "del", "fwmark", "0x1/0x1", "lookup", "100").CombinedOutput(); err != nil {
				t.Errorf("ip %s rule del: %v: %s", fam, err, out)
			}
		})
	}
	ip(t, "-4", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100")
	ip(t, "-6", "route", "add", "local", "::/0", "dev", "lo", "table", "100")

	lc := TransparentListenConfig()
	ln4, err := lc.Listen(t.Context(), "tcp4", "0.0.0.0:2121")
	if err != nil {
		t.Fatal(err)
	}
	defer ln4.Close()
	ln6, err := lc.Listen(t.Context(), "tcp6", "[::]:2121")
	if err != nil {
		t.Fatal(err)
	}
	defer ln6.Close()

	forEachVariant(t, func(t *testing.T, v variant) {
		for _, r := range []struct {
			bin, onIP string
		}{{v.v4, "0.0.0.0"}, {v.v6, "::"}} {
			run(t, r.bin, "-t", "mangle", "-A", "PREROUTING", "-i", "tpb", "-p", "tcp", "--dport", "21",
				"-j", "TPROXY", "--on-port", "2121", "--on-ip", r.onIP, "--tproxy-mark", "0x1/0x1")
			t.Cleanup(func() { run(t, r.bin, "-t", "mangle", "-F", "PREROUTING") })
		}
		for _, c := range []struct {
			ln   net.Listener
			from netip.Addr
			to   netip.AddrPort
		}{
			{ln4, peer4, netip.AddrPortFrom(away4, 21)},
			{ln6, peer6, netip.AddrPortFrom(away6, 21)},
		} {
			conn := acceptOne(t, c.ln, c.from, c.to)
			if got := netip.MustParseAddrPort(conn.LocalAddr().String()); got != c.to {
				t.Errorf("TPROXY: LocalAddr = %s, want the original destination %s", got, c.to)
			}
			if got := netip.MustParseAddrPort(conn.RemoteAddr().String()).Addr(); got != c.from {
				t.Errorf("TPROXY: RemoteAddr = %s, want %s", got, c.from)
			}
			wantNotRedirected(t, conn)
		}
	})
}

// TestIntegrationConntrackLookup: the kernel reports a connection
// asynchronously, so its owner may stop waiting before the event has been
// read (a short transfer whose session ended at once). Lookup finds every
// connection in the kernel's table at the moment connect returns, whatever
// the event did; and only those that Expect describes.
func TestIntegrationConntrackLookup(t *testing.T) {
	forEachVariant(t, func(t *testing.T, v variant) {
		for _, bin := range []string{v.v4, v.v6} {
			run(t, bin, "-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED", "-j", "ACCEPT")
		}
		c := newTestConntrack(t)
		for _, fam := range testFamilies {
			t.Run(fam.name, func(t *testing.T) {
				const n = 64
				dsts := make([]netip.AddrPort, n)
				for i := range dsts {
					dsts[i] = echoServer(t, fam.gw)
				}
				late := 0
				for _, dst := range dsts {
					e := c.Expect(fam.peer, dst, dst)
					connect(t, fam.peer, dst)
					e.Cancel() // the owner gives up at once
					select {
					case <-e.Done():
					default:
						late++
					}
					found, err := e.Lookup(context.Background())
					if err != nil || !found {
						t.Errorf("%s -> %s: Lookup = %t, %v; want true", fam.peer, dst, found, err)
					}
				}
				t.Logf("%d of %d events not read yet when connect returned", late, n)
				// The kernel filters the dump: it returns this port's
				// connections only, not the whole table. (An earlier
				// variant's run may have used the same ephemeral port: its
				// connection, in TIME_WAIT, is in the table too.)
				conns, err := c.src.lookup(context.Background(), newExpectKey(fam.peer, dsts[0]))
				if err != nil || len(conns) == 0 || len(conns) >= n {
					t.Errorf("dump for %s = %v, %v; want its connection alone", dsts[0], conns, err)
				}
				for _, conn := range conns {
					if conn.key.to.Port() != dsts[0].Port() {
						t.Errorf("dump for %s returned a connection to %s", dsts[0], conn.key.to)
					}
				}
				for _, tt := range []struct {
					what     string
					from     netip.Addr
					to, via  netip.AddrPort
					wantSeen bool
				}{
					{"another source", fam.thief, dsts[0], noVia, false},
					{"a port nobody connected to", fam.peer, netip.AddrPortFrom(fam.gw, 1), noVia, false},
					{"another delivery address", fam.peer, dsts[0], dsts[1], false},
					{"any delivery address", fam.peer, dsts[0], noVia, true},
				} {
					e := c.Expect(tt.from, tt.to, tt.via)
					found, err := e.Lookup(context.Background())
					e.Cancel()
					if err != nil || found != tt.wantSeen {
						t.Errorf("%s: Lookup = %t, %v; want %t", tt.what, found, err, tt.wantSeen)
					}
				}
			})
		}
	})
}

// TestIntegrationConntrackOverflow overflows a small event socket: the
// reader is held up while many connections are made at once, the kernel
// drops their events (ENOBUFS), and the reader then finds every pending
// connection in the table instead of leaving it to its owner's timeout.
func TestIntegrationConntrackOverflow(t *testing.T) {
	forEachVariant(t, func(t *testing.T, v variant) {
		run(t, v.v4, "-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED", "-j", "ACCEPT")
		logs := &syncBuffer{}
		// The smallest buffer the kernel grants holds a few events.
		c, err := newNetlinkConntrack(slog.New(slog.NewTextHandler(logs, nil)), nil, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := c.Close(); err != nil {
				t.Error(err)
			}
			if t.Failed() {
				t.Logf("conntrack logs:\n%s", logs)
			}
		}()
		const n = 256
		dsts := make([]netip.AddrPort, n)
		exps := make([]*Expectation, n)
		for i := range dsts {
			dsts[i] = echoServer(t, gw4)
			exps[i] = c.Expect(peer4, dsts[i], noVia)
			defer exps[i].Cancel()
		}
		// Hold the reader: it blocks in seen() on the first event.
		c.mu.Lock()
		var wg sync.WaitGroup
		for _, dst := range dsts {
			wg.Go(func() {
				if c, err := dial(peer4, dst); err == nil {
					c.Close()
				} else {
					t.Errorf("%s: %v", dst, err)
				}
			})
		}
		wg.Wait()
		c.mu.Unlock()
		deadline := time.After(10 * time.Second)
		for i, e := range exps {
			select {
			case <-e.Done():
				if err := e.Err(); err != nil {
					t.Errorf("%s: Err = %v", dsts[i], err)
				}
			case <-deadline:
				t.Fatalf("%s: not seen within 10s of the overflow", dsts[i])
			}
		}
		if got := testutil.ToFloat64(c.metrics.overflows); got == 0 {
			t.Errorf("ftpgate_conntrack_overflows_total = 0: %d connections at once did not overflow the socket", n)
		}
		found, _, failed := lookups(c)
		if found == 0 || failed != 0 {
			t.Errorf("lookups found = %v, failed = %v; want some found, none failed", found, failed)
		}
		t.Logf("overflows %v, connections found by lookup %v", testutil.ToFloat64(c.metrics.overflows), found)
	})
}
