package rules

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// natMaps keeps the NAT half of the netlink backend's pinholes: elements of
// nftables maps with per-element timeouts, looked up by three static rules
// in a table of ftpgate's own (github.com/google/nftables, no nft binary).
// For IPv4, with NAME the chain prefix, the table reads in nft syntax:
//
//	table ip NAME {
//		map dnat_to     { type ipv4_addr . ipv4_addr . inet_service : ipv4_addr . inet_service; flags timeout; }
//		map redirect_to { type ipv4_addr . ipv4_addr . inet_service : inet_service; flags timeout; }
//		map snat_to     { type ipv4_addr . ipv4_addr . inet_service : ipv4_addr; flags timeout; }
//		chain prerouting {
//			type nat hook prerouting priority dstnat - 10; policy accept;
//			meta l4proto tcp dnat ip to ip saddr . ip daddr . tcp dport map @dnat_to
//			meta l4proto tcp redirect to : ip saddr . ip daddr . tcp dport map @redirect_to
//		}
//		chain postrouting {
//			type nat hook postrouting priority srcnat - 10; policy accept;
//			ct status dnat meta l4proto tcp snat ip to ip saddr . ip daddr . tcp dport map @snat_to
//		}
//	}
//
// and likewise `table ip6 NAME` with ipv6_addr. snat_to is keyed by the
// destination after the DNAT, and applies only to connections that were
// destination-NATed (ct status dnat). It does not compare the original
// destination, as the iptables backend's SNAT rule does: nft 1.0 cannot
// list a rule that concatenates "ct original daddr" (it aborts), and the
// operator's tools must be able to read every rule. The chains run just before
// iptables' nat chains (priority -100 and 100), whichever variant the
// operator uses: the kernel consults nat chains in priority order and stops
// at the first that sets up a mapping for the connection, so a pinhole's
// DNAT cannot be overridden by the operator's nat rules, and connections
// that match no element pass on to them untouched. Nat chains see only the
// first packet of a connection. The filter half (accept) is not here: an
// accept in this table would not override a drop in the operator's filter
// chains, so it is an ipset element matched from ftpgate's iptables chains.
type natMaps struct {
	table string

	mu   sync.Mutex     // serializes batches on conn, and guards conn
	conn *nftables.Conn // a lasting netlink socket for element batches; nil until connect
	v4   *natFamily
	v6   *natFamily // nil if IPv6 is not managed
}

// natFamily is one family's table and maps.
type natFamily struct {
	table                 *nftables.Table
	dnat, redirect, snat  *nftables.Set
	addrLen               uint32 // bytes of an address
	saddrOffset, daddrOff uint32 // in the network header
}

// Names of the maps and chains in the table.
const (
	mapDNAT     = "dnat_to"
	mapRedirect = "redirect_to"
	mapSNAT     = "snat_to"
)

// newNATMaps prepares the maps of table name, for IPv6 too if v6. It does
// not touch the kernel.
func newNATMaps(name string, v6 bool) *natMaps {
	m := &natMaps{table: name,
		v4: newNATFamily(name, nftables.TableFamilyIPv4, nftables.TypeIPAddr, 12, 16)}
	if v6 {
		m.v6 = newNATFamily(name, nftables.TableFamilyIPv6, nftables.TypeIP6Addr, 8, 24)
	}
	return m
}

// connect opens the lasting netlink socket, if it is not open.
func (m *natMaps) connect() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conn != nil {
		return nil
	}
	conn, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	m.conn = conn
	return nil
}

// newNATFamily describes the table and maps of one family, whose addresses
// are of type addr and sit at saddrOff and daddrOff in the network header.
func newNATFamily(name string, fam nftables.TableFamily, addr nftables.SetDatatype, saddrOff, daddrOff uint32) *natFamily {
	t := &nftables.Table{Name: name, Family: fam}
	key := nftables.MustConcatSetType(addr, addr, nftables.TypeInetService)
	set := func(name string, data nftables.SetDatatype) *nftables.Set {
		return &nftables.Set{Table: t, Name: name, IsMap: true, HasTimeout: true, Concatenation: true,
			KeyType: key, DataType: data}
	}
	return &natFamily{
		table:       t,
		dnat:        set(mapDNAT, nftables.MustConcatSetType(addr, nftables.TypeInetService)),
		redirect:    set(mapRedirect, nftables.TypeInetService),
		snat:        set(mapSNAT, addr),
		addrLen:     addr.Bytes,
		saddrOffset: saddrOff, daddrOff: daddrOff,
	}
}

// families returns the managed families, IPv4 first.
func (m *natMaps) families() []*natFamily {
	if m.v6 == nil {
		return []*natFamily{m.v4}
	}
	return []*natFamily{m.v4, m.v6}
}

// close releases the netlink socket; connect opens a new one.
func (m *natMaps) close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conn == nil {
		return nil
	}
	err := m.conn.CloseLasting()
	m.conn = nil
	return err
}

// flush sends, as one batch on the lasting socket, what build queues;
// the kernel applies a batch entirely or not at all. build must queue
// nothing when it fails (SetAddElements and SetDeleteElements fail before
// they queue).
func (m *natMaps) flush(build func(c *nftables.Conn) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conn == nil {
		return errors.New("nftables netlink socket not open")
	}
	if err := build(m.conn); err != nil {
		return err
	}
	return m.conn.Flush()
}

// batch sends, as one batch on a socket of its own, what build queues; if
// build fails, nothing is sent.
func batch(build func(c *nftables.Conn) error) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	if err := build(c); err != nil {
		return err
	}
	return c.Flush()
}

// setup replaces the tables with empty ones, in one batch per family:
// whatever a crashed run left goes with the old table.
func (m *natMaps) setup() error {
	for _, f := range m.families() {
		err := batch(func(c *nftables.Conn) error {
			// add table (a no-op if it exists); delete table; add table:
			// the nft idiom for "replace", atomic in one batch.
			c.AddTable(f.table)
			c.DelTable(f.table)
			c.AddTable(f.table)
			for _, s := range []*nftables.Set{f.dnat, f.redirect, f.snat} {
				if err := c.AddSet(s, nil); err != nil {
					return fmt.Errorf("adding map %s: %w", s.Name, err)
				}
			}
			pre := c.AddChain(&nftables.Chain{Name: "prerouting", Table: f.table, Type: nftables.ChainTypeNAT,
				Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-110)})
			post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: f.table, Type: nftables.ChainTypeNAT,
				Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityRef(90)})
			c.AddRule(&nftables.Rule{Table: f.table, Chain: pre, Exprs: f.lookup(f.dnat,
				&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(f.table.Family),
					RegAddrMin: 1, RegProtoMin: f.valuePortReg(), Specified: true})})
			c.AddRule(&nftables.Rule{Table: f.table, Chain: pre, Exprs: f.lookup(f.redirect,
				&expr.Redir{RegisterProtoMin: 1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED})})
			c.AddRule(&nftables.Rule{Table: f.table, Chain: post, Exprs: append(destinationNATed(), f.lookup(f.snat,
				&expr.NAT{Type: expr.NATTypeSourceNAT, Family: uint32(f.table.Family), RegAddrMin: 1})...)})
			return nil
		})
		if err != nil {
			return fmt.Errorf("creating nftables table %s %s: %w", familyName(f.table.Family), m.table, err)
		}
	}
	return nil
}

// teardown deletes the tables, with every element; a table that does not
// exist is not an error. It returns one error per table it could not
// delete.
func (m *natMaps) teardown() []error {
	var errs []error
	for _, f := range m.families() {
		err := batch(func(c *nftables.Conn) error {
			c.AddTable(f.table)
			c.DelTable(f.table)
			return nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("deleting nftables table %s %s: %w", familyName(f.table.Family), m.table, err))
		}
	}
	return errs
}

// lookup is the rule body that loads (saddr . daddr . tcp dport) into
// registers 1 onwards, looks it up in s with the result in register 1, and
// runs then; a packet whose key is not in the map stops at the lookup.
// The layout is what nft itself generates (nft --debug=netlink): a 16-byte
// address fills register 1 (32-bit registers 8 to 11).
func (f *natFamily) lookup(s *nftables.Set, then expr.Any) []expr.Any {
	// 32-bit register numbers: NFT_REG32_00 is 8; an IPv4 address takes
	// one, an IPv6 address four.
	words := f.addrLen / 4
	daddrReg := 8 + words
	dportReg := 8 + 2*words
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 8, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddrOffset, Len: f.addrLen},
		&expr.Payload{DestRegister: daddrReg, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddrOff, Len: f.addrLen},
		&expr.Payload{DestRegister: dportReg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 8, SetName: s.Name, SetID: s.ID, IsDestRegSet: true, DestRegister: 1},
		then,
	}
}

// destinationNATed is the match "ct status dnat": the connection's
// destination was rewritten (IPS_DST_NAT, in host byte order).
func destinationNATed() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// ipsDstNAT is conntrack's IPS_DST_NAT status bit.
const ipsDstNAT = 1 << 5

// valuePortReg is the 32-bit register that holds the port of a looked-up
// address . port value: right after the address.
func (f *natFamily) valuePortReg() uint32 { return 8 + f.addrLen/4 }

// natElement is one element to add to or delete from a map.
type natElement struct {
	set      *nftables.Set
	key, val []byte
}

// natElements returns the map elements of a valid, normalized Redirect or
// DNAT pinhole, in the order they are added: SNAT before the DNAT or
// REDIRECT that diverts the connection.
//
//	Redirect: redirect_to { From . To.addr . To.port : RedirectPort }
//	DNAT:     snat_to     { From . DNATTo.addr . DNATTo.port : SNATTo }   (if SNATTo is valid)
//	          dnat_to     { From . To.addr . To.port : DNATTo.addr . DNATTo.port }
func (m *natMaps) natElements(p Pinhole) ([]natElement, error) {
	f := m.v4
	if !p.From.Is4() {
		if m.v6 == nil {
			return nil, fmt.Errorf("%w: IPv6 nftables table not managed", ErrFamily)
		}
		f = m.v6
	}
	key := func(src netip.Addr, dst netip.AddrPort) []byte {
		b := append(src.AsSlice(), dst.Addr().AsSlice()...)
		return append(b, byte(dst.Port()>>8), byte(dst.Port()), 0, 0)
	}
	portVal := func(port uint16) []byte {
		b := make([]byte, 4)
		binary.BigEndian.PutUint16(b, port)
		return b
	}
	switch p.Deliver {
	case Redirect:
		return []natElement{{f.redirect, key(p.From, p.To), portVal(p.RedirectPort)[:2]}}, nil
	case DNAT:
		var els []natElement
		if p.SNATTo.IsValid() {
			els = append(els, natElement{f.snat, key(p.From, p.DNATTo), p.SNATTo.AsSlice()})
		}
		val := append(p.DNATTo.Addr().AsSlice(), portVal(p.DNATTo.Port())...)
		return append(els, natElement{f.dnat, key(p.From, p.To), val}), nil
	}
	return nil, nil
}

// add adds one element that the kernel deletes after ttl (at least 1ms).
// If refresh is set the element may exist already, and its timeout is
// restarted: adding an existing element leaves its timeout alone, so it
// is deleted and added again in one batch.
func (m *natMaps) add(e natElement, ttl time.Duration, refresh bool) error {
	ttl = max(ttl, time.Millisecond)
	el := []nftables.SetElement{{Key: e.key, Val: e.val, Timeout: ttl}}
	var err error
	if refresh {
		err = m.flush(func(c *nftables.Conn) error {
			if err := c.SetDeleteElements(e.set, []nftables.SetElement{{Key: e.key}}); err != nil {
				return err
			}
			return c.SetAddElements(e.set, el)
		})
	}
	if !refresh || errors.Is(err, syscall.ENOENT) { // ENOENT: it expired just now
		err = m.flush(func(c *nftables.Conn) error { return c.SetAddElements(e.set, el) })
	}
	if err != nil {
		return fmt.Errorf("adding element to %s %s %s %s: %w", setKind(e.set), familyName(e.set.Table.Family), e.set.Table.Name, e.set.Name, err)
	}
	return nil
}

// del deletes one element; one already gone (expired, or flushed with the
// table) is not an error.
func (m *natMaps) del(e natElement) error {
	err := m.flush(func(c *nftables.Conn) error {
		return c.SetDeleteElements(e.set, []nftables.SetElement{{Key: e.key}})
	})
	if err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("deleting element from %s %s %s %s: %w", setKind(e.set), familyName(e.set.Table.Family), e.set.Table.Name, e.set.Name, err)
	}
	return nil
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyIPv6:
		return "ip6"
	}
	return "ip"
}

// setKind is "map" or "set", for errors: the nftables backend adds plain
// set elements (a nil value) through natMaps too.
func setKind(s *nftables.Set) string {
	if s.IsMap {
		return "map"
	}
	return "set"
}

// missingTables lists, in one request, the nftables tables, and returns
// those of ftpgate's NAT tables that are gone ("nftables table ip
// FTPGATE").
func (m *natMaps) missingTables() ([]string, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	tables, err := c.ListTables()
	if err != nil {
		return nil, fmt.Errorf("listing nftables tables: %w", err)
	}
	var gone []string
	for _, f := range m.families() {
		if !slices.ContainsFunc(tables, func(t *nftables.Table) bool {
			return t.Name == f.table.Name && t.Family == f.table.Family
		}) {
			gone = append(gone, fmt.Sprintf("nftables table %s %s", familyName(f.table.Family), f.table.Name))
		}
	}
	return gone, nil
}
