package rules

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// ErrNetlinkUnavailable means the kernel lacks what the netlink backend
// needs (ipset hash types with timeouts, or nftables nat maps with
// concatenated keys), or ftpgate may not use it. Start returns it wrapped;
// the iptables backend can do the job instead.
var ErrNetlinkUnavailable = errors.New("ipset or nftables unavailable")

// Netlink is the fast pinhole backend: every pinhole is one to three
// elements of kernel sets and maps, each with the pinhole's TTL as its
// kernel timeout, added and deleted over netlink. Opening or closing a
// pinhole runs no program and costs the same however many are open; a
// pinhole outlives a killed ftpgate by at most its TTL, because the kernel
// itself expires it.
//
// Filter pinholes (accept) are ipset elements. The sets are matched by a
// few static rules that Start appends, through iptables, to ftpgate's own
// chains PREFIX-INPUT and PREFIX-FORWARD, so they sit in the operator's
// filter path wherever the operator put the jumps (an accept in a table of
// ftpgate's own would not override a drop in the operator's chains). For
// IPv4 (sets PREFIX-in4 ...; IPv6 PREFIX-in6 ...):
//
//	ipset create PREFIX-in4   hash:ip,port,ip timeout TTL comment   # AcceptLocal:   From,tcp:To.port,To.addr
//	ipset create PREFIX-fwd4  hash:ip,port,ip timeout TTL comment   # AcceptForward: From,tcp:To.port,To.addr
//	ipset create PREFIX-rdr4  hash:ip,port    timeout TTL comment   # Redirect:      From,tcp:RedirectPort
//	ipset create PREFIX-dnat4 hash:ip,port,ip timeout TTL comment   # DNAT:          From,tcp:DNATTo.port,DNATTo.addr
//	-A PREFIX-INPUT   -p tcp -m set --match-set PREFIX-in4 src,dst,dst -m conntrack --ctstate NEW -j ACCEPT
//	-A PREFIX-INPUT   -p tcp -m set --match-set PREFIX-rdr4 src,dst -m conntrack --ctstate NEW -m conntrack --ctstate DNAT -j ACCEPT
//	-A PREFIX-FORWARD -p tcp -m set --match-set PREFIX-fwd4 src,dst,dst -m conntrack --ctstate NEW -j ACCEPT
//	-A PREFIX-FORWARD -p tcp -m set --match-set PREFIX-dnat4 src,dst,dst -m conntrack --ctstate NEW -m conntrack --ctstate DNAT -j ACCEPT
//
// NAT pinholes (the REDIRECT of a transparent relay, the DNAT and SNAT of
// the kernel path) are elements of nftables maps in a table of ftpgate's
// own, whose nat chains run just before iptables' (see natMaps). The
// redirect and DNAT accepts above additionally require that the connection
// was destination-NATed, which only those map elements (or the operator's
// own NAT) do; unlike the iptables backend they do not compare the
// original destination. The SNAT map applies only to destination-NATed
// connections too.
//
// PREFIX-PREROUTING, PREFIX-POSTROUTING and PREFIX-OUTPUT are created and
// hooked as with the iptables backend, and stay empty.
//
// Life cycle and concurrency are those of IPTables: NewNetlink, Start,
// concurrent Opens and closes, Stop; Cleanup for a killed process. Start
// replaces the sets and tables, so whatever a crashed run left is gone.
type Netlink struct {
	ipt  *IPTables // ftpgate's chains and the static set rules
	nat  *natMaps
	sets map[bool]filterSets // by "is IPv4"

	// op serializes changes to the kernel and to the fields below, so that
	// an element shared by two pinholes lives as long as the longer-lived
	// of them and is deleted with the last.
	op      sync.Mutex
	ipset   *netlink.Handle // one netfilter netlink socket for every ipset request; nil until connect
	started bool
	open    map[*nlPinhole]struct{}
	refs    map[string]*sharedElement // by element.key()
}

// sharedElement is what the books know of one element in the kernel.
type sharedElement struct {
	value   string    // its value (a map element's data), which every holder needs the same
	holders int       // open pinholes that need it
	until   time.Time // when the kernel expires it: the latest holder's expiry
}

var _ Pinholer = (*Netlink)(nil)

// filterSets names one family's ipsets.
type filterSets struct {
	family                          uint8 // unix.AF_INET or AF_INET6
	local, forward, redirect, dnatd string
}

// Set types.
const (
	setIPPortIP = "hash:ip,port,ip"
	setIPPort   = "hash:ip,port"
	// setMaxElements bounds each set; the kernel's default is 65536.
	setMaxElements = 1 << 20
)

// NewNetlink prepares the netlink backend. cfg is that of the iptables
// backend, whose binaries Start uses once, to create and hook ftpgate's
// chains and add the static set rules. It does not touch the firewall and
// opens no netlink socket yet.
func NewNetlink(cfg IPTablesConfig) (*Netlink, error) {
	cfg.backend = "netlink"
	ipt, err := NewIPTables(cfg)
	if err != nil {
		return nil, fmt.Errorf("configuring netlink backend: %w", err)
	}
	prefix := ipt.prefix
	nat := newNATMaps(prefix, ipt.v6 != nil)
	name := func(kind string, v4 bool) string {
		if v4 {
			return prefix + "-" + kind + "4"
		}
		return prefix + "-" + kind + "6"
	}
	sets := map[bool]filterSets{}
	for _, v4 := range []bool{true, false} {
		fam := uint8(unix.AF_INET)
		if !v4 {
			fam = unix.AF_INET6
		}
		sets[v4] = filterSets{family: fam, local: name("in", v4), forward: name("fwd", v4),
			redirect: name("rdr", v4), dnatd: name("dnat", v4)}
	}
	n := &Netlink{ipt: ipt, nat: nat, sets: sets,
		open: map[*nlPinhole]struct{}{}, refs: map[string]*sharedElement{}}
	ipt.check = n.checkRepair // the reaper is not running yet
	return n, nil
}

// connect opens the netlink sockets, if they are not open. The caller
// holds n.op.
func (n *Netlink) connect() error {
	if n.ipset == nil {
		h, err := netlink.NewHandle(unix.NETLINK_NETFILTER)
		if err != nil {
			return fmt.Errorf("opening netfilter netlink socket: %w", err)
		}
		n.ipset = h
	}
	return n.nat.connect()
}

// Close releases the netlink sockets; call it after Stop or Cleanup, when
// no pinhole is open (Fallback closes them itself). Start opens them
// again.
func (n *Netlink) Close() error {
	n.op.Lock()
	defer n.op.Unlock()
	return n.closeSockets()
}

// closeSockets is Close with n.op held.
func (n *Netlink) closeSockets() error {
	if n.ipset != nil {
		n.ipset.Close()
		n.ipset = nil
	}
	return n.nat.close()
}

// IPTables returns the iptables backend inside n, which keeps ftpgate's
// chains. After Start failed with ErrNetlinkUnavailable it is started and
// can serve as the backend instead.
func (n *Netlink) IPTables() *IPTables { return n.ipt }

// Variant returns the iptables variant of the static rules.
func (n *Netlink) Variant() string { return n.ipt.Variant() }

// Active returns the number of pinholes currently open.
func (n *Netlink) Active() int {
	n.op.Lock()
	defer n.op.Unlock()
	return len(n.open)
}

// families lists the managed families as "is IPv4", IPv4 first.
func (n *Netlink) families() []bool {
	if n.ipt.v6 == nil {
		return []bool{true}
	}
	return []bool{true, false}
}

// staticRules are the rules that match the sets of one family.
func (n *Netlink) staticRules(s filterSets) []rule {
	set := func(name, dirs string) []string {
		return []string{"-p", "tcp", "-m", "set", "--match-set", name, dirs,
			"-m", "conntrack", "--ctstate", "NEW"}
	}
	dnated := []string{"-m", "conntrack", "--ctstate", "DNAT"}
	c := n.ipt.chains
	return []rule{
		{tableFilter, c.input, append(set(s.local, "src,dst,dst"), "-j", "ACCEPT")},
		{tableFilter, c.input, append(append(set(s.redirect, "src,dst"), dnated...), "-j", "ACCEPT")},
		{tableFilter, c.forward, append(set(s.forward, "src,dst,dst"), "-j", "ACCEPT")},
		{tableFilter, c.forward, append(append(set(s.dnatd, "src,dst,dst"), dnated...), "-j", "ACCEPT")},
	}
}

// Start creates or flushes ftpgate's chains and hooks them (IPTables.Start),
// replaces the sets and the nftables tables with empty ones, and appends
// the static set rules. Every pinhole open before is forgotten (its close
// func returns nil). If the kernel refuses a set or a table, Start returns
// an error wrapping ErrNetlinkUnavailable, and so does iptables if it
// cannot match a set; Fallback then hands the chains to the iptables
// backend. Every second the iptables backend's reaper checks that the
// jumps, static rules and NAT tables are still there, and reinstalls
// everything with the open pinholes if not (Netlink.checkRepair).
func (n *Netlink) Start(ctx context.Context) error {
	n.op.Lock()
	defer n.op.Unlock()
	n.forget()
	n.ipt.mu.Lock()
	n.ipt.check = n.checkRepair // Fallback may have cleared it
	n.ipt.mu.Unlock()
	if err := n.ipt.Start(ctx); err != nil {
		return fmt.Errorf("starting netlink backend: %w", err)
	}
	if err := n.connect(); err != nil {
		return fmt.Errorf("starting netlink backend: %w", markUnavailable(err))
	}
	if err := n.createSets(); err != nil {
		return fmt.Errorf("starting netlink backend: %w", markUnavailable(err))
	}
	if err := n.nat.setup(); err != nil {
		return fmt.Errorf("starting netlink backend: %w", markUnavailable(err))
	}
	if err := n.addStaticRules(ctx); err != nil {
		return fmt.Errorf("starting netlink backend: %w", err)
	}
	n.started = true
	n.ipt.log.Info("pinhole sets ready", "backend", "netlink", "ipsets", n.setNames(), "nftables_table", n.nat.table)
	return nil
}

// addStaticRules appends the rules that match the sets to ftpgate's
// (flushed) chains, for every family.
func (n *Netlink) addStaticRules(ctx context.Context) error {
	for _, v4 := range n.families() {
		fam := n.ipt.v4
		if !v4 {
			fam = n.ipt.v6
		}
		for _, r := range n.staticRules(n.sets[v4]) {
			if err := ctx.Err(); err != nil {
				return err
			}
			// iptables' set match looks the set up through a raw socket:
			// without CAP_NET_RAW it fails with "Can't open socket to ipset".
			if err := translate(fam.ipt.Append(r.table, r.chain, r.spec...)); err != nil {
				err = fmt.Errorf("adding %s (%s): %w", r, fam.name, err)
				if strings.Contains(err.Error(), "Can't open socket to ipset") {
					err = fmt.Errorf("%w: iptables needs CAP_NET_RAW to match an ipset: %w", ErrNetlinkUnavailable, err)
				} else if strings.Contains(err.Error(), "match `set'") || strings.Contains(err.Error(), "Couldn't load match") {
					err = fmt.Errorf("%w: iptables cannot match ipsets (xt_set): %w", ErrNetlinkUnavailable, err)
				}
				return err
			}
		}
	}
	return nil
}

// setNames lists the managed ipsets, for logs.
func (n *Netlink) setNames() []string {
	var names []string
	for _, v4 := range n.families() {
		s := n.sets[v4]
		names = append(names, s.local, s.forward, s.redirect, s.dnatd)
	}
	return names
}

// createSets replaces each set with an empty one. The chains must not
// reference them (IPTables.Start has flushed the chains).
func (n *Netlink) createSets() error {
	timeout := ttlSeconds(n.ipt.ttl)
	for _, v4 := range n.families() {
		s := n.sets[v4]
		for _, set := range []struct{ name, typ string }{
			{s.local, setIPPortIP}, {s.forward, setIPPortIP}, {s.redirect, setIPPort}, {s.dnatd, setIPPortIP},
		} {
			if err := n.destroySet(set.name); err != nil {
				return err
			}
			// ipset create NAME TYPE family inet|inet6 timeout TTL comment maxelem 1048576
			err := n.ipset.IpsetCreate(set.name, set.typ, netlink.IpsetCreateOptions{
				Family: s.family, Timeout: &timeout, Comments: true, MaxElements: setMaxElements})
			if err != nil {
				return fmt.Errorf("creating ipset %s (%s): %w", set.name, set.typ, err)
			}
		}
	}
	return nil
}

// markUnavailable wraps err with ErrNetlinkUnavailable if it says that the
// kernel lacks a feature the backend needs, or that ftpgate may not use it;
// other errors (a set in use by someone else, a timeout) it returns as
// they are.
func markUnavailable(err error) error {
	if missingFeature(err) {
		return fmt.Errorf("%w: %w", ErrNetlinkUnavailable, err)
	}
	return err
}

// missingFeature reports whether err is the kernel saying it has no such
// thing (no ipset or nftables subsystem, set type, expression or family)
// or that the caller may not use it. A netfilter subsystem that is not
// there answers EINVAL (nfnetlink_rcv_msg); an unknown ipset type,
// IPSET_ERR_FIND_TYPE.
func missingFeature(err error) bool {
	for _, errno := range []error{syscall.EPROTONOSUPPORT, syscall.EAFNOSUPPORT, syscall.EOPNOTSUPP,
		syscall.EINVAL, syscall.ENOENT, syscall.EPERM, syscall.EACCES} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return errors.Is(err, nl.IPSetError(nl.IPSET_ERR_FIND_TYPE)) || errors.Is(err, nl.IPSetError(nl.IPSET_ERR_PROTOCOL))
}

// destroySet destroys an ipset; one that does not exist is not an error.
func (n *Netlink) destroySet(name string) error {
	// ipset destroy NAME
	err := n.ipset.IpsetDestroy(name)
	if err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("destroying ipset %s: %w", name, err)
	}
	return nil
}

// Stop removes ftpgate's chains (IPTables.Stop), then the sets and the
// nftables tables, with every pinhole; their close funcs then return nil.
// It removes as much as it can and returns the errors joined.
func (n *Netlink) Stop(ctx context.Context) error {
	// The reaper runs checkRepair, which takes n.op: stop it first.
	if err := n.ipt.stopReaper(ctx); err != nil {
		return fmt.Errorf("stopping netlink backend: %w", err)
	}
	n.op.Lock()
	defer n.op.Unlock()
	n.forget()
	err := n.ipt.Stop(ctx)
	err = errors.Join(err, n.removeKernelObjects(false))
	if err != nil {
		return fmt.Errorf("stopping netlink backend: %w", err)
	}
	n.ipt.log.Info("pinhole sets removed")
	return nil
}

// Cleanup removes what a killed process left: ftpgate's chains, the sets
// and the tables. Nothing to remove is not an error; neither is a kernel
// without ipset or nftables (there can be nothing of them to remove).
func (n *Netlink) Cleanup(ctx context.Context) error {
	if err := n.ipt.stopReaper(ctx); err != nil {
		return fmt.Errorf("cleaning up netlink backend: %w", err)
	}
	n.op.Lock()
	defer n.op.Unlock()
	n.forget()
	err := n.ipt.Cleanup(ctx)
	if cerr := n.connect(); cerr != nil {
		if !missingFeature(cerr) {
			err = errors.Join(err, cerr)
		}
	} else {
		err = errors.Join(err, n.removeKernelObjects(true))
	}
	if err != nil {
		return fmt.Errorf("cleaning up netlink backend: %w", err)
	}
	return nil
}

// Fallback, after Start failed with ErrNetlinkUnavailable, flushes
// ftpgate's chains (IPTables.Start), removes whatever sets and tables Start
// made, and returns the started iptables backend to use instead.
func (n *Netlink) Fallback(ctx context.Context) (*IPTables, error) {
	// From now on the reaper checks the iptables backend's own chains and
	// pinholes; a check of n under way finds n not started.
	n.ipt.mu.Lock()
	n.ipt.check = nil
	n.ipt.mu.Unlock()
	n.op.Lock()
	defer n.op.Unlock()
	n.forget()
	if err := n.ipt.Start(ctx); err != nil {
		return nil, fmt.Errorf("falling back to the iptables backend: %w", err)
	}
	if n.ipset != nil {
		if err := n.removeKernelObjects(true); err != nil {
			n.ipt.log.Warn("removing the netlink backend's sets and tables", "err", err)
		}
	}
	if err := n.closeSockets(); err != nil {
		n.ipt.log.Warn("closing the netlink backend's sockets", "err", err)
	}
	return n.ipt, nil
}

// removeKernelObjects destroys the sets and deletes the tables; the
// sockets must be open. The chains must be gone or flushed first: a set
// referenced by a rule cannot be destroyed. With tolerant, an error that
// says the kernel has no such feature at all (so there is nothing to
// remove) is not an error; each error is judged on its own.
func (n *Netlink) removeKernelObjects(tolerant bool) error {
	var errs []error
	keep := func(err error) {
		if err != nil && !(tolerant && missingFeature(err)) {
			errs = append(errs, err)
		}
	}
	for _, name := range n.setNames() {
		keep(n.destroySet(name))
	}
	for _, err := range n.nat.teardown() {
		keep(err)
	}
	return errors.Join(errs...)
}

// forget stops every pinhole's timer and drops it from the books, because
// the sets are about to be replaced or removed. The caller holds n.op.
func (n *Netlink) forget() {
	for e := range n.open {
		e.timer.Stop()
	}
	clear(n.open)
	clear(n.refs)
	n.started = false
	n.ipt.m.active.Set(0)
}

// nlPinhole is one open pinhole of the netlink backend.
type nlPinhole struct {
	p        Pinhole
	ttl      time.Duration
	elements []element // in the order they were added
	timer    *time.Timer
}

// element is one set or map element of a pinhole.
type element interface {
	key() string   // identifies the element in the kernel, for refs
	value() string // what a map element maps its key to; "" for a set element
	// add adds the element with a kernel timeout of ttl; with refresh, it
	// may exist already and its timeout restarts at ttl.
	add(ttl time.Duration, refresh bool) error
	del() error
}

// ipsetElement is one element of an ipset.
type ipsetElement struct {
	h     *netlink.Handle
	set   string
	entry netlink.IPSetEntry
}

func (e ipsetElement) key() string {
	port := uint16(0)
	if e.entry.Port != nil {
		port = *e.entry.Port
	}
	return fmt.Sprintf("ipset %s %s,tcp:%d,%s", e.set, e.entry.IP, port, e.entry.IP2)
}

func (e ipsetElement) value() string { return "" }

func (e ipsetElement) add(ttl time.Duration, _ bool) error {
	entry := e.entry
	secs := ttlSeconds(ttl)
	entry.Timeout = &secs
	entry.Replace = true // like ipset add -exist: an existing element gets the new timeout
	// ipset add SET ELEMENT timeout TTL comment "ftpgate s=S p=N" -exist
	if err := e.h.IpsetAdd(e.set, &entry); err != nil {
		return fmt.Errorf("adding %s: %w", e.key(), err)
	}
	return nil
}

func (e ipsetElement) del() error {
	entry := e.entry
	entry.Comment = ""
	// ipset del SET ELEMENT; one that expired already is not an error
	err := e.h.IpsetDel(e.set, &entry)
	if err != nil && !errors.Is(err, nl.IPSetError(nl.IPSET_ERR_EXIST)) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("deleting %s: %w", e.key(), err)
	}
	return nil
}

// mapElement is one element of an nftables map.
type mapElement struct {
	m *natMaps
	e natElement
}

func (e mapElement) key() string {
	return fmt.Sprintf("nft %s %s %s %x", familyName(e.e.set.Table.Family), e.e.set.Table.Name, e.e.set.Name, e.e.key)
}
func (e mapElement) value() string                             { return fmt.Sprintf("%x", e.e.val) }
func (e mapElement) add(ttl time.Duration, refresh bool) error { return e.m.add(e.e, ttl, refresh) }
func (e mapElement) del() error                                { return e.m.del(e.e) }

// ttlSeconds is ttl in whole seconds for ipset, rounded up: at least 1,
// since 0 would make an element permanent.
func ttlSeconds(ttl time.Duration) uint32 {
	return uint32(max((ttl+time.Second-1)/time.Second, 1))
}

// elements returns the set and map elements of a valid, normalized p.
func (n *Netlink) elements(p Pinhole) ([]element, error) {
	s := n.sets[p.From.Is4()]
	tcp := uint8(unix.IPPROTO_TCP)
	entry := func(src netip.Addr, port uint16, dst netip.Addr) netlink.IPSetEntry {
		e := netlink.IPSetEntry{IP: net.IP(src.AsSlice()), Protocol: &tcp, Port: &port,
			Comment: comment(p)}
		if dst.IsValid() {
			e.IP2 = net.IP(dst.AsSlice())
		}
		return e
	}
	var filter ipsetElement
	switch p.Deliver {
	case AcceptLocal:
		filter = ipsetElement{n.ipset, s.local, entry(p.From, p.To.Port(), p.To.Addr())}
	case AcceptForward:
		filter = ipsetElement{n.ipset, s.forward, entry(p.From, p.To.Port(), p.To.Addr())}
	case Redirect:
		filter = ipsetElement{n.ipset, s.redirect, entry(p.From, p.RedirectPort, netip.Addr{})}
	case DNAT:
		filter = ipsetElement{n.ipset, s.dnatd, entry(p.From, p.DNATTo.Port(), p.DNATTo.Addr())}
	}
	els := []element{filter}
	nat, err := n.nat.natElements(p)
	if err != nil {
		return nil, err
	}
	for _, e := range nat {
		els = append(els, mapElement{n.nat, e})
	}
	return els, nil
}

// Open adds p's elements, all or none, each with p's TTL (or the default)
// as its kernel timeout, and returns a func that deletes them:
//
//	AcceptLocal:   PREFIX-in4   From,tcp:To.port,To.addr
//	AcceptForward: PREFIX-fwd4  From,tcp:To.port,To.addr
//	Redirect:      PREFIX-rdr4  From,tcp:RedirectPort
//	               redirect_to  { From . To.addr . To.port : RedirectPort }
//	DNAT:          PREFIX-dnat4 From,tcp:DNATTo.port,DNATTo.addr
//	               snat_to      { From . DNATTo.addr . DNATTo.port : SNATTo }     (if SNATTo is valid; destination-NATed connections only)
//	               dnat_to      { From . To.addr . To.port : DNATTo.addr . DNATTo.port }
//
// added in this order (nothing is diverted before it can be accepted) and
// deleted in reverse. ftpgate deletes them TTL after Open if not closed by
// then, and the kernel does in any case. An element that another open
// pinhole needs too is shared: its kernel timeout is that of the
// longer-lived, and it is deleted with the last.
//
// The close func is idempotent, safe to call concurrently with expiry,
// Stop and itself, and returns nil if the pinhole is already gone. Unlike
// IPTables', it takes the pinhole off the books even when the kernel
// refuses to delete an element: it returns that error once, and the
// kernel removes the element at its timeout; a later call returns nil.
//
// Open fails with ErrInvalid if p is invalid, ErrFamily if p is IPv6 and
// IPv6 is not managed, ErrNotExist if Start has not succeeded, or the
// kernel's error. ctx is checked once, before any change.
func (n *Netlink) Open(ctx context.Context, p Pinhole) (func(context.Context) error, error) {
	start := time.Now()
	e, err := n.openPinhole(ctx, p)
	d := time.Since(start)
	n.ipt.m.observe(opOpen, d, err)
	if err != nil {
		n.ipt.log.Debug("opening pinhole failed", "pinhole", p.String(), "seconds", d.Seconds(), "err", err)
		return nil, fmt.Errorf("opening pinhole %s: %w", p, err)
	}
	n.ipt.log.Debug("pinhole opened", "pinhole", p.String(), "seconds", d.Seconds(), "ttl_seconds", e.ttl.Seconds())
	return func(ctx context.Context) error { return n.closePinhole(ctx, e) }, nil
}

func (n *Netlink) openPinhole(ctx context.Context, p Pinhole) (*nlPinhole, error) {
	p = p.normalize()
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if _, err := n.ipt.familyOf(p.From); err != nil {
		return nil, err
	}
	els, err := n.elements(p)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ttl := p.TTL
	if ttl == 0 {
		ttl = n.ipt.ttl
	}
	n.op.Lock()
	defer n.op.Unlock()
	if !n.started {
		return nil, fmt.Errorf("%w: sets not set up (Start has not succeeded)", ErrNotExist)
	}
	e := &nlPinhole{p: p, ttl: ttl}
	if err := n.install(e, els); err != nil {
		return nil, err
	}
	e.timer = time.AfterFunc(ttl, func() { n.expire(e) })
	return e, nil
}

// install adds els for e, all or none, and puts e on the books. The
// caller holds n.op and starts e's timer.
//
// An element that another open pinhole holds already is added again only
// if this pinhole outlives it, to move its kernel timeout later; it is
// never shortened. A map element that another pinhole holds with another
// value is a conflict (ErrConflict), never an overwrite: the other
// session's connections would go to this one's peer.
func (n *Netlink) install(e *nlPinhole, els []element) error {
	for _, el := range els {
		if sh := n.refs[el.key()]; sh != nil && sh.value != el.value() {
			return n.conflict(e.p, el)
		}
	}
	until := time.Now().Add(e.ttl)
	for _, el := range els {
		sh := n.refs[el.key()]
		if sh == nil || until.After(sh.until) {
			if err := el.add(e.ttl, sh != nil); err != nil {
				if rerr := n.removeElements(e); rerr != nil {
					err = errors.Join(err, fmt.Errorf("rolling back (the kernel expires the rest within %s): %w", e.ttl, rerr))
				}
				return err
			}
		}
		if sh == nil {
			sh = &sharedElement{value: el.value()}
			n.refs[el.key()] = sh
		}
		sh.holders++
		if until.After(sh.until) {
			sh.until = until
		}
		e.elements = append(e.elements, el)
	}
	n.open[e] = struct{}{}
	n.ipt.m.active.Set(float64(len(n.open)))
	return nil
}

// conflict logs and counts a pinhole refused because another holds el
// with another value, and returns its error. The caller holds n.op.
func (n *Netlink) conflict(p Pinhole, el element) error {
	var other string
	for o := range n.open {
		for _, oe := range o.elements {
			if oe.key() == el.key() {
				other = o.p.String()
			}
		}
	}
	n.ipt.m.conflicts.Inc()
	n.ipt.log.Warn("pinhole refused: another one diverts the same connections elsewhere",
		"pinhole", p.String(), "other", other, "element", el.key())
	return fmt.Errorf("%w: %s (%s)", ErrConflict, other, el.key())
}

// removeElements deletes e's elements, last added first, each from the
// kernel only if no other open pinhole holds it. It goes on past errors
// and returns them joined; the kernel expires what it could not delete.
// The caller holds n.op.
func (n *Netlink) removeElements(e *nlPinhole) error {
	var errs []error
	for i := len(e.elements) - 1; i >= 0; i-- {
		el := e.elements[i]
		k := el.key()
		if sh := n.refs[k]; sh != nil {
			sh.holders--
			if sh.holders > 0 {
				continue
			}
		}
		delete(n.refs, k)
		if err := el.del(); err != nil {
			errs = append(errs, err)
		}
	}
	e.elements = nil
	return errors.Join(errs...)
}

// drop takes e off the books and deletes its elements. It returns false if
// e was not open. The caller holds n.op.
func (n *Netlink) drop(e *nlPinhole) (bool, error) {
	if _, ok := n.open[e]; !ok {
		return false, nil
	}
	delete(n.open, e)
	e.timer.Stop()
	n.ipt.m.active.Set(float64(len(n.open)))
	return true, n.removeElements(e)
}

// closePinhole is the func that Open returns. An element the kernel will
// not delete is left to its timeout, and reported.
func (n *Netlink) closePinhole(ctx context.Context, e *nlPinhole) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("closing pinhole %s: %w", e.p, err)
	}
	start := time.Now()
	n.op.Lock()
	open, err := n.drop(e)
	n.op.Unlock()
	if !open {
		return nil
	}
	d := time.Since(start)
	n.ipt.m.observe(opClose, d, err)
	if err != nil {
		n.ipt.log.Error("closing pinhole failed; the kernel removes it at its timeout", "pinhole", e.p.String(), "ttl_seconds", e.ttl.Seconds(), "err", err)
		return fmt.Errorf("closing pinhole %s: %w", e.p, err)
	}
	n.ipt.log.Debug("pinhole closed", "pinhole", e.p.String(), "seconds", d.Seconds())
	return nil
}

// expire runs TTL after Open: the kernel has expired the elements or is
// about to (ipset counts whole seconds); deleting them keeps the books and
// the kernel in step.
func (n *Netlink) expire(e *nlPinhole) {
	n.op.Lock()
	open, err := n.drop(e)
	n.op.Unlock()
	if !open {
		return
	}
	if err != nil {
		n.ipt.log.Error("removing expired pinhole failed; the kernel removes it at its timeout", "pinhole", e.p.String(), "err", err)
		return
	}
	n.ipt.log.Info("pinhole expired", "pinhole", e.p.String(), "ttl_seconds", e.ttl.Seconds())
}
