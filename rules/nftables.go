package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// Values of NftablesConfig.Attach.
const (
	// NftAttachChain: ftpgate adds a regular chain of its own (named
	// after the prefix) to the operator's table, its rules matching the
	// sets, and inserts one jump to it at the top of each named base
	// chain. Stop removes exactly these.
	NftAttachChain = "chain"
	// NftAttachSets: ftpgate keeps only its sets in the operator's table
	// and touches no chain; the operator's own rules match the sets
	// (NftablesBackend.OperatorRules lists them).
	NftAttachSets = "sets"
)

// NftablesConfig configures NewNftables.
type NftablesConfig struct {
	// Prefix names ftpgate's chain and sets in the operator's table
	// (PREFIX, PREFIX-in4 ...) and its own NAT tables ip and ip6 PREFIX.
	// At most 16 characters of [A-Za-z0-9_-]. Default DefaultChainPrefix.
	Prefix string
	// Table is the operator's filter table, "FAMILY NAME" with family
	// inet, ip or ip6, e.g. "inet filter". Required. An ip table gets
	// IPv4 sets only, an ip6 table IPv6 sets only.
	Table string
	// Attach is NftAttachChain (the default) or NftAttachSets.
	Attach string
	// Chains are the base chains of Table that jump to ftpgate's chain,
	// e.g. input and forward: required with NftAttachChain, must be
	// empty with NftAttachSets.
	Chains []string
	// DefaultTTL is the lifetime of a pinhole whose TTL is zero. Default
	// DefaultTTL; negative is invalid.
	DefaultTTL time.Duration
	// Logger receives the backend's logs. Nil discards them.
	Logger *slog.Logger
	// Registerer takes the pinhole metrics; nil keeps them private.
	Registerer prometheus.Registerer
}

// nftNameRE is what this package accepts as an nftables table or chain
// name: an nft identifier that needs no quoting.
var nftNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,63}$`)

// ParseNftTable splits "FAMILY NAME" (e.g. "inet filter") into its family
// and name. Family is inet, ip or ip6.
func ParseNftTable(s string) (nftables.TableFamily, string, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return 0, "", fmt.Errorf("nftables table %q: want \"FAMILY NAME\", e.g. \"inet filter\"", s)
	}
	var fam nftables.TableFamily
	switch f[0] {
	case "inet":
		fam = nftables.TableFamilyINet
	case "ip":
		fam = nftables.TableFamilyIPv4
	case "ip6":
		fam = nftables.TableFamilyIPv6
	default:
		return 0, "", fmt.Errorf("nftables table %q: family %q is not inet, ip or ip6", s, f[0])
	}
	if !nftNameRE.MatchString(f[1]) {
		return 0, "", fmt.Errorf("nftables table %q: name %q is not an nft identifier ([A-Za-z_][A-Za-z0-9_.-]*, at most 64)", s, f[1])
	}
	return fam, f[1], nil
}

// withDefaults validates c and fills in its zero fields.
func (c NftablesConfig) withDefaults() (NftablesConfig, error) {
	if c.Prefix == "" {
		c.Prefix = DefaultChainPrefix
	}
	if !prefixRE.MatchString(c.Prefix) {
		return c, fmt.Errorf("prefix %q: want 1 to 16 characters of [A-Za-z0-9_-]", c.Prefix)
	}
	if _, _, err := ParseNftTable(c.Table); err != nil {
		return c, err
	}
	if c.Attach == "" {
		c.Attach = NftAttachChain
	}
	switch c.Attach {
	case NftAttachChain:
		if len(c.Chains) == 0 {
			return c, fmt.Errorf("attach %s needs the base chains to jump from (e.g. input, forward)", c.Attach)
		}
	case NftAttachSets:
		if len(c.Chains) != 0 {
			return c, fmt.Errorf("attach %s touches no chain, but chains %q are given", c.Attach, c.Chains)
		}
	default:
		return c, fmt.Errorf("attach %q: want %s or %s", c.Attach, NftAttachChain, NftAttachSets)
	}
	for i, ch := range c.Chains {
		if !nftNameRE.MatchString(ch) {
			return c, fmt.Errorf("chain %q: not an nft identifier", ch)
		}
		if slices.Contains(c.Chains[:i], ch) {
			return c, fmt.Errorf("chain %q listed twice", ch)
		}
	}
	switch {
	case c.DefaultTTL < 0:
		return c, fmt.Errorf("default TTL %s is negative", c.DefaultTTL)
	case c.DefaultTTL == 0:
		c.DefaultTTL = DefaultTTL
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// NftablesBackend is the pinhole backend for hosts whose firewall is native
// nftables, with no iptables or ipset at all. In nftables every base chain
// on a hook sees the packet and a drop in any of them is final, so a
// filter pinhole must be accepted from the operator's own table: ftpgate
// keeps its filter sets there. For table inet filter and prefix FTPGATE:
//
//	set FTPGATE-in4   { type ipv4_addr . ipv4_addr . inet_service; flags timeout; }  # AcceptLocal:   From . To.addr . To.port
//	set FTPGATE-fwd4  { type ipv4_addr . ipv4_addr . inet_service; flags timeout; }  # AcceptForward: From . To.addr . To.port
//	set FTPGATE-rdr4  { type ipv4_addr . inet_service; flags timeout; }              # Redirect:      From . RedirectPort
//	set FTPGATE-dnat4 { type ipv4_addr . ipv4_addr . inet_service; flags timeout; }  # DNAT:          From . DNATTo.addr . DNATTo.port
//	(and FTPGATE-*6 with ipv6_addr)
//
// matched, with NftAttachChain, by a regular chain of ftpgate's own, which
// one rule at the top of each configured base chain jumps to:
//
//	chain FTPGATE {
//		ct state new meta nfproto ipv4 meta l4proto tcp ip saddr . ip daddr . tcp dport @FTPGATE-in4 accept
//		ct state new meta nfproto ipv4 meta l4proto tcp ip saddr . ip daddr . tcp dport @FTPGATE-fwd4 accept
//		ct state new ct status dnat fib daddr type local meta nfproto ipv4 meta l4proto tcp ip saddr . tcp dport @FTPGATE-rdr4 accept
//		ct state new ct status dnat meta nfproto ipv4 meta l4proto tcp ip saddr . ip daddr . tcp dport @FTPGATE-dnat4 accept
//		(and the same for ipv6)
//	}
//	chain input { ...; jump FTPGATE; <the operator's rules> }
//
// With NftAttachSets the operator writes those rules (OperatorRules) in
// their own chains and ftpgate touches no chain. NAT pinholes are elements
// of the maps of the netlink backend (natMaps), in ftpgate's own tables ip
// and ip6 PREFIX.
//
// Life cycle: NewNftables, Start, concurrent Opens and closes, Stop;
// Cleanup for a killed process; Close releases the socket. Every element
// carries the pinhole's TTL as its kernel timeout.
type NftablesBackend struct {
	log    *slog.Logger
	m      *metrics
	ttl    time.Duration
	prefix string
	attach string
	table  *nftables.Table
	hooks  []string                // the base chains that jump to chain
	chain  *nftables.Chain         // ftpgate's regular chain (NftAttachChain)
	sets   map[bool]*nftFilterSets // by "is IPv4"; only the table's families
	nat    *natMaps

	op       sync.Mutex // serializes changes to the kernel and the books
	started  bool
	books    books
	checkErr string // the last failed check's error, to log each failure once

	watchMu    sync.Mutex
	watch      *reaperRun // the goroutine that runs checkRepair; nil if none
	checkEvery time.Duration
}

var _ Pinholer = (*NftablesBackend)(nil)

// nftFilterSets are one family's filter sets in the operator's table.
type nftFilterSets struct {
	v4                              bool
	local, forward, redirect, dnatd *nftables.Set
}

func (s *nftFilterSets) all() []*nftables.Set {
	return []*nftables.Set{s.local, s.forward, s.redirect, s.dnatd}
}

// NewNftables checks cfg. It does not touch the firewall.
func NewNftables(cfg NftablesConfig) (*NftablesBackend, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("configuring nftables backend: %w", err)
	}
	fam, name, _ := ParseNftTable(cfg.Table)
	m, err := newMetrics(cfg.Registerer, "nftables")
	if err != nil {
		return nil, fmt.Errorf("configuring nftables backend: %w", err)
	}
	t := &nftables.Table{Name: name, Family: fam}
	b := &NftablesBackend{log: cfg.Logger, m: m, ttl: cfg.DefaultTTL, prefix: cfg.Prefix, attach: cfg.Attach,
		checkEvery: repairCheckInterval,
		table:      t, hooks: slices.Clone(cfg.Chains), sets: map[bool]*nftFilterSets{},
		nat: newNATMaps(cfg.Prefix, fam != nftables.TableFamilyIPv4)}
	if cfg.Attach == NftAttachChain {
		b.chain = &nftables.Chain{Name: cfg.Prefix, Table: t}
	}
	for _, v4 := range []bool{true, false} {
		if (v4 && fam == nftables.TableFamilyIPv6) || (!v4 && fam == nftables.TableFamilyIPv4) {
			continue
		}
		addr, suffix := nftables.TypeIPAddr, "4"
		if !v4 {
			addr, suffix = nftables.TypeIP6Addr, "6"
		}
		set := func(kind string, key nftables.SetDatatype) *nftables.Set {
			return &nftables.Set{Table: t, Name: cfg.Prefix + "-" + kind + suffix, HasTimeout: true,
				Concatenation: true, KeyType: key}
		}
		full := nftables.MustConcatSetType(addr, addr, nftables.TypeInetService)
		b.sets[v4] = &nftFilterSets{v4: v4, local: set("in", full), forward: set("fwd", full),
			redirect: set("rdr", nftables.MustConcatSetType(addr, nftables.TypeInetService)), dnatd: set("dnat", full)}
	}
	b.books = newPinholeBooks(b.log, b.m)
	return b, nil
}

// Active returns the number of pinholes currently open.
func (b *NftablesBackend) Active() int {
	b.op.Lock()
	defer b.op.Unlock()
	return len(b.books.open)
}

// Attach returns the attachment mode, NftAttachChain or NftAttachSets.
func (b *NftablesBackend) Attach() string { return b.attach }

// Table returns the operator's table as "FAMILY NAME".
func (b *NftablesBackend) Table() string { return familyName(b.table.Family) + " " + b.table.Name }

// filterSets returns the managed filter sets, IPv4 first.
func (b *NftablesBackend) filterSets() []*nftables.Set {
	var all []*nftables.Set
	for _, v4 := range []bool{true, false} {
		if s := b.sets[v4]; s != nil {
			all = append(all, s.all()...)
		}
	}
	return all
}

// setNames lists the filter sets, for logs.
func (b *NftablesBackend) setNames() []string {
	var names []string
	for _, s := range b.filterSets() {
		names = append(names, s.Name)
	}
	return names
}

// Close releases the netlink socket; call it after Stop or Cleanup.
func (b *NftablesBackend) Close() error {
	b.stopWatch()
	b.op.Lock()
	defer b.op.Unlock()
	if err := b.nat.close(); err != nil {
		return fmt.Errorf("closing nftables netlink socket: %w", err)
	}
	return nil
}

// Start checks that the operator's table (and with NftAttachChain its
// base chains) exists, removes what a previous run left, creates the
// sets, and with NftAttachChain ftpgate's chain and the jumps to it, then
// replaces ftpgate's NAT tables. With NftAttachSets, sets that exist
// already (declared by the operator, or left by a previous run) are kept
// and flushed. Every pinhole open before is forgotten.
//
// Start also starts, until ctx is done or Stop, Cleanup or Close, a
// check every second that what Start added is still there
// (checkRepair).
func (b *NftablesBackend) Start(ctx context.Context) error {
	b.op.Lock()
	defer b.op.Unlock()
	b.books.forget()
	b.started = false
	if err := b.start(ctx); err != nil {
		return fmt.Errorf("starting nftables backend (table %s): %w", b.Table(), err)
	}
	b.started = true
	b.startWatch(ctx)
	b.log.Info("pinhole sets ready", "backend", "nftables", "table", b.Table(), "attach", b.attach,
		"chains", b.hooks, "sets", b.setNames(), "nat_tables", b.nat.table)
	return nil
}

func (b *NftablesBackend) start(ctx context.Context) error {
	if err := b.nat.connect(); err != nil {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	if _, err := c.ListTableOfFamily(b.table.Name, b.table.Family); err != nil {
		return fmt.Errorf("the table does not exist or cannot be read (ftpgate adds to the operator's table, it does not create it): %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.attach == NftAttachSets {
		if err := b.keepSets(c); err != nil {
			return err
		}
	} else {
		chains, err := b.tableChains(c)
		if err != nil {
			return err
		}
		for _, h := range b.hooks {
			i := slices.IndexFunc(chains, func(ch *nftables.Chain) bool { return ch.Name == h })
			switch {
			case i < 0:
				return fmt.Errorf("chain %s does not exist", h)
			case chains[i].Hooknum == nil:
				return fmt.Errorf("chain %s is not a base chain (no hook)", h)
			}
		}
		if err := b.removeFilter(c, chains); err != nil {
			return fmt.Errorf("removing what a previous run left: %w", err)
		}
		if err := batch(b.addFilter); err != nil {
			return fmt.Errorf("adding chain %s, its sets and the jumps from %q: %w", b.chain.Name, b.hooks, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.nat.setup()
}

// keepSets, for NftAttachSets, flushes the filter sets that exist (the
// operator may have declared them, to load rules that match them) and
// adds those that do not, in one batch. A set of one of those names whose
// key type or lack of timeouts would refuse ftpgate's elements is an
// error.
func (b *NftablesBackend) keepSets(c *nftables.Conn) error {
	existing, err := c.GetSets(b.table)
	if err != nil {
		return fmt.Errorf("listing sets: %w", err)
	}
	found := map[string]*nftables.Set{}
	for _, s := range existing {
		found[s.Name] = s
	}
	for _, s := range b.filterSets() {
		if e := found[s.Name]; e != nil && (e.IsMap || !e.HasTimeout || e.KeyType.Bytes != s.KeyType.Bytes) {
			return fmt.Errorf("set %s exists, but not as ftpgate needs it: want type %s; flags timeout", s.Name, s.KeyType.Name)
		}
	}
	err = batch(func(c *nftables.Conn) error {
		for _, s := range b.filterSets() {
			if found[s.Name] != nil {
				c.FlushSet(s)
				continue
			}
			if err := c.AddSet(s, nil); err != nil {
				return fmt.Errorf("adding set %s: %w", s.Name, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("adding or flushing sets %q: %w", b.setNames(), err)
	}
	return nil
}

// tableChains lists the chains of the operator's table.
func (b *NftablesBackend) tableChains(c *nftables.Conn) ([]*nftables.Chain, error) {
	all, err := c.ListChainsOfTableFamily(b.table.Family)
	if err != nil {
		return nil, fmt.Errorf("listing chains: %w", err)
	}
	var chains []*nftables.Chain
	for _, ch := range all {
		if ch.Table.Name == b.table.Name {
			chains = append(chains, ch)
		}
	}
	return chains, nil
}

// addFilter queues the sets, ftpgate's chain and its rules, and a jump to
// it at the top of each configured base chain.
func (b *NftablesBackend) addFilter(c *nftables.Conn) error {
	for _, s := range b.filterSets() {
		s.ID = 0 // a fresh ID for this batch's lookups
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("adding set %s: %w", s.Name, err)
		}
	}
	c.AddChain(b.chain)
	for _, v4 := range []bool{true, false} {
		if s := b.sets[v4]; s != nil {
			for _, exprs := range s.rules() {
				c.AddRule(&nftables.Rule{Table: b.table, Chain: b.chain, Exprs: exprs})
			}
		}
	}
	for _, h := range b.hooks {
		c.InsertRule(&nftables.Rule{Table: b.table, Chain: &nftables.Chain{Name: h, Table: b.table},
			Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: b.chain.Name}}})
	}
	return nil
}

// isJumpTo reports whether r is a jump or goto to chain, and nothing else:
// the rule that NftAttachChain inserts.
func isJumpTo(r *nftables.Rule, chain string) bool {
	if len(r.Exprs) != 1 {
		return false
	}
	v, ok := r.Exprs[0].(*expr.Verdict)
	return ok && (v.Kind == expr.VerdictJump || v.Kind == expr.VerdictGoto) && v.Chain == chain
}

// removeFilter deletes, in one batch, every jump to ftpgate's chain in
// the table's chains, the chain, and the sets; what is not there is not
// an error. chains are the table's chains.
func (b *NftablesBackend) removeFilter(c *nftables.Conn, chains []*nftables.Chain) error {
	var jumps []*nftables.Rule
	hasChain := false
	for _, ch := range chains {
		if ch.Name == b.chain.Name {
			hasChain = true
			continue
		}
		rules, err := c.GetRules(b.table, ch)
		if err != nil {
			return fmt.Errorf("listing the rules of chain %s: %w", ch.Name, err)
		}
		for _, r := range rules {
			if isJumpTo(r, b.chain.Name) {
				r.Table, r.Chain = b.table, ch
				jumps = append(jumps, r)
			}
		}
	}
	sets, err := c.GetSets(b.table)
	if err != nil {
		return fmt.Errorf("listing sets: %w", err)
	}
	var mine []*nftables.Set
	for _, s := range sets {
		if slices.Contains(b.setNames(), s.Name) {
			mine = append(mine, s)
		}
	}
	if len(jumps) == 0 && !hasChain && len(mine) == 0 {
		return nil
	}
	return batch(func(c *nftables.Conn) error {
		for _, r := range jumps {
			if err := c.DelRule(r); err != nil {
				return fmt.Errorf("deleting the jump in chain %s: %w", r.Chain.Name, err)
			}
		}
		if hasChain {
			c.FlushChain(b.chain)
			c.DelChain(b.chain)
		}
		for _, s := range mine {
			c.DelSet(s)
		}
		return nil
	})
}

// rules are the bodies of the rules of ftpgate's chain for one family,
// each ending in accept.
func (s *nftFilterSets) rules() [][]expr.Any {
	addrLen, saddr, daddr, nfproto := uint32(4), uint32(12), uint32(16), byte(unix.NFPROTO_IPV4)
	if !s.v4 {
		addrLen, saddr, daddr, nfproto = 16, 8, 24, unix.NFPROTO_IPV6
	}
	words := addrLen / 4
	zero := make([]byte, 4)
	newConn := []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: zero},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: zero},
	}
	tcp := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}
	local := []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
	full := func(set *nftables.Set) []expr.Any {
		return []expr.Any{
			&expr.Payload{DestRegister: 8, Base: expr.PayloadBaseNetworkHeader, Offset: saddr, Len: addrLen},
			&expr.Payload{DestRegister: 8 + words, Base: expr.PayloadBaseNetworkHeader, Offset: daddr, Len: addrLen},
			&expr.Payload{DestRegister: 8 + 2*words, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 8, SetName: set.Name, SetID: set.ID},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}
	}
	port := func(set *nftables.Set) []expr.Any {
		return []expr.Any{
			&expr.Payload{DestRegister: 8, Base: expr.PayloadBaseNetworkHeader, Offset: saddr, Len: addrLen},
			&expr.Payload{DestRegister: 8 + words, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 8, SetName: set.Name, SetID: set.ID},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}
	}
	cat := func(parts ...[]expr.Any) []expr.Any { return slices.Concat(parts...) }
	return [][]expr.Any{
		cat(newConn, tcp, full(s.local)),
		cat(newConn, tcp, full(s.forward)),
		cat(newConn, destinationNATed(), local, tcp, port(s.redirect)),
		cat(newConn, destinationNATed(), tcp, full(s.dnatd)),
	}
}

// OperatorRules returns, in nft syntax, the rules that match ftpgate's
// sets: what ftpgate's chain holds with NftAttachChain, and what the
// operator adds to their input and forward chains with NftAttachSets.
// Keys are "input" and "forward".
func (b *NftablesBackend) OperatorRules() map[string][]string {
	out := map[string][]string{}
	for _, v4 := range []bool{true, false} {
		s := b.sets[v4]
		if s == nil {
			continue
		}
		ip := "ip"
		if !v4 {
			ip = "ip6"
		}
		full := fmt.Sprintf("%[1]s saddr . %[1]s daddr . tcp dport", ip)
		out["input"] = append(out["input"],
			fmt.Sprintf("ct state new %s @%s accept", full, s.local.Name),
			fmt.Sprintf("ct state new ct status dnat %s saddr . tcp dport @%s accept", ip, s.redirect.Name))
		out["forward"] = append(out["forward"],
			fmt.Sprintf("ct state new %s @%s accept", full, s.forward.Name),
			fmt.Sprintf("ct state new ct status dnat %s @%s accept", full, s.dnatd.Name))
	}
	return out
}

// Stop removes every pinhole, then what Start added: with NftAttachChain
// the jumps, ftpgate's chain and its sets; with NftAttachSets it flushes
// the sets and deletes those no rule references (the operator's rules
// keep theirs). Then it deletes ftpgate's NAT tables. It goes on past
// errors and returns them joined; what is already gone is not an error.
func (b *NftablesBackend) Stop(ctx context.Context) error {
	b.stopWatch() // it takes b.op
	b.op.Lock()
	defer b.op.Unlock()
	b.books.forget()
	b.started = false
	if err := b.remove(ctx); err != nil {
		return fmt.Errorf("stopping nftables backend (table %s): %w", b.Table(), err)
	}
	b.log.Info("pinhole sets removed", "backend", "nftables", "table", b.Table())
	return nil
}

// Cleanup removes what a killed process with this configuration left,
// as Stop does; nothing to remove, even no table, is not an error.
func (b *NftablesBackend) Cleanup(ctx context.Context) error {
	b.stopWatch()
	b.op.Lock()
	defer b.op.Unlock()
	b.books.forget()
	b.started = false
	if err := b.remove(ctx); err != nil {
		return fmt.Errorf("cleaning up nftables backend (table %s): %w", b.Table(), err)
	}
	return nil
}

func (b *NftablesBackend) remove(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var errs []error
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	if _, err := c.ListTableOfFamily(b.table.Name, b.table.Family); err != nil {
		if !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("reading the table: %w", err))
		}
		// no table: none of ftpgate's chain, sets or jumps either
	} else if b.attach == NftAttachSets {
		errs = append(errs, b.removeSets())
	} else {
		chains, err := b.tableChains(c)
		if err == nil {
			err = b.removeFilter(c, chains)
		}
		errs = append(errs, err)
	}
	errs = append(errs, b.nat.teardown()...)
	return errors.Join(errs...)
}

// removeSets flushes each filter set, then deletes it unless a rule of
// the operator references it (EBUSY): NftAttachSets.
func (b *NftablesBackend) removeSets() error {
	var errs []error
	for _, s := range b.filterSets() {
		err := batch(func(c *nftables.Conn) error {
			c.FlushSet(s)
			return nil
		})
		if err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("flushing set %s: %w", s.Name, err))
			continue
		}
		err = batch(func(c *nftables.Conn) error {
			c.DelSet(s)
			return nil
		})
		if err != nil && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.EBUSY) {
			errs = append(errs, fmt.Errorf("deleting set %s: %w", s.Name, err))
		}
	}
	return errors.Join(errs...)
}

// elements returns the set and map elements of a valid, normalized p.
func (b *NftablesBackend) elements(p Pinhole) ([]element, error) {
	s := b.sets[p.From.Is4()]
	if s == nil {
		return nil, fmt.Errorf("%w: table %s has no sets of this family", ErrFamily, b.Table())
	}
	key := func(src netip.Addr, dst netip.AddrPort) []byte {
		k := append(src.AsSlice(), dst.Addr().AsSlice()...)
		return append(k, byte(dst.Port()>>8), byte(dst.Port()), 0, 0)
	}
	var filter natElement
	switch p.Deliver {
	case AcceptLocal:
		filter = natElement{set: s.local, key: key(p.From, p.To)}
	case AcceptForward:
		filter = natElement{set: s.forward, key: key(p.From, p.To)}
	case Redirect:
		filter = natElement{set: s.redirect, key: append(p.From.AsSlice(), byte(p.RedirectPort>>8), byte(p.RedirectPort), 0, 0)}
	case DNAT:
		filter = natElement{set: s.dnatd, key: key(p.From, p.DNATTo)}
	}
	els := []element{mapElement{b.nat, filter}}
	nat, err := b.nat.natElements(p)
	if err != nil {
		return nil, err
	}
	for _, e := range nat {
		els = append(els, mapElement{b.nat, e})
	}
	return els, nil
}

// Open adds p's elements, all or none, each with p's TTL (or the default)
// as its kernel timeout, and returns a func that deletes them: the filter
// set element first, then the NAT map elements as the netlink backend
// does (Netlink.Open). Elements shared by two pinholes live as long as
// the longer-lived. The close func is idempotent, safe to call
// concurrently with expiry and Stop, and returns nil if the pinhole is
// gone already.
//
// Open fails with ErrInvalid if p is invalid, ErrFamily if the table has
// no sets of p's family, ErrNotExist if Start has not succeeded,
// ErrConflict, or the kernel's error. ctx is checked once, before any
// change.
func (b *NftablesBackend) Open(ctx context.Context, p Pinhole) (func(context.Context) error, error) {
	start := time.Now()
	e, err := b.openPinhole(ctx, p)
	d := time.Since(start)
	b.m.observe(opOpen, d, err)
	if err != nil {
		b.log.Debug("opening pinhole failed", "pinhole", p.String(), "seconds", d.Seconds(), "err", err)
		return nil, fmt.Errorf("opening pinhole %s: %w", p, err)
	}
	b.log.Debug("pinhole opened", "pinhole", p.String(), "seconds", d.Seconds(), "ttl_seconds", e.ttl.Seconds())
	return func(ctx context.Context) error { return b.closePinhole(ctx, e) }, nil
}

func (b *NftablesBackend) openPinhole(ctx context.Context, p Pinhole) (*nlPinhole, error) {
	p = p.normalize()
	if err := p.Validate(); err != nil {
		return nil, err
	}
	els, err := b.elements(p)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ttl := p.TTL
	if ttl == 0 {
		ttl = b.ttl
	}
	b.op.Lock()
	defer b.op.Unlock()
	if !b.started {
		return nil, fmt.Errorf("%w: sets not set up (Start has not succeeded)", ErrNotExist)
	}
	e := &nlPinhole{p: p, ttl: ttl}
	if err := b.books.install(e, els); err != nil {
		return nil, err
	}
	e.timer = time.AfterFunc(ttl, func() { b.expire(e) })
	return e, nil
}

// closePinhole is the func that Open returns.
func (b *NftablesBackend) closePinhole(ctx context.Context, e *nlPinhole) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("closing pinhole %s: %w", e.p, err)
	}
	start := time.Now()
	b.op.Lock()
	open, err := b.books.drop(e)
	b.op.Unlock()
	if !open {
		return nil
	}
	d := time.Since(start)
	b.m.observe(opClose, d, err)
	if err != nil {
		b.log.Error("closing pinhole failed; the kernel removes it at its timeout", "pinhole", e.p.String(), "ttl_seconds", e.ttl.Seconds(), "err", err)
		return fmt.Errorf("closing pinhole %s: %w", e.p, err)
	}
	b.log.Debug("pinhole closed", "pinhole", e.p.String(), "seconds", d.Seconds())
	return nil
}

// expire runs TTL after Open.
func (b *NftablesBackend) expire(e *nlPinhole) {
	b.op.Lock()
	open, err := b.books.drop(e)
	b.op.Unlock()
	if !open {
		return
	}
	if err != nil {
		b.log.Error("removing expired pinhole failed; the kernel removes it at its timeout", "pinhole", e.p.String(), "err", err)
		return
	}
	b.log.Info("pinhole expired", "pinhole", e.p.String(), "ttl_seconds", e.ttl.Seconds())
}
