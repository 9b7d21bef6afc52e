package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-iptables/iptables"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for the zero fields of IPTablesConfig.
const (
	DefaultChainPrefix = "FTPGATE"
	DefaultTTL         = 30 * time.Second
	DefaultLockTimeout = 5 * time.Second
)

// ipt is the part of go-iptables that this package uses. *iptables.IPTables
// implements it; the unit tests use an in-memory fake.
type ipt interface {
	Append(table, chain string, rulespec ...string) error
	Insert(table, chain string, pos int, rulespec ...string) error
	Delete(table, chain string, rulespec ...string) error
	List(table, chain string) ([]string, error)
	ClearChain(table, chain string) error
	DeleteChain(table, chain string) error
	ChainExists(table, chain string) (bool, error)
}

var _ ipt = (*iptables.IPTables)(nil)

// family is one address family's binary.
type family struct {
	name    string // "IPv4" or "IPv6", for errors and logs
	path    string // the binary, resolved
	variant string // "nf_tables" or "legacy"
	ipt     ipt
}

// IPTablesConfig configures NewIPTables. The zero value is valid: every
// zero field means its default.
type IPTablesConfig struct {
	// ChainPrefix names ftpgate's chains: PREFIX-INPUT and PREFIX-FORWARD
	// in the filter table, PREFIX-PREROUTING, PREFIX-POSTROUTING and
	// PREFIX-OUTPUT in the nat table. At most 16 characters of
	// [A-Za-z0-9_-]. Default DefaultChainPrefix ("FTPGATE").
	ChainPrefix string
	// DefaultTTL is the lifetime of a pinhole whose TTL is zero. Default
	// DefaultTTL (30s); negative is invalid.
	DefaultTTL time.Duration
	// Path is the iptables binary, a name looked up in PATH or a path
	// (e.g. "iptables-legacy"). Default "iptables".
	Path string
	// Path6 is the ip6tables binary. Default: Path with its leading
	// "iptables" replaced by "ip6tables" ("iptables-legacy" gives
	// "ip6tables-legacy"), or "ip6tables". If it cannot be found, the
	// backend runs IPv4 only: Start logs a warning and IPv6 pinholes fail
	// with ErrFamily.
	Path6 string
	// Timeout is how long each iptables call waits for the xtables lock
	// held by another program (iptables --wait, in whole seconds, rounded
	// up). Default DefaultLockTimeout (5s); negative is invalid.
	Timeout time.Duration
	// Logger receives the backend's logs. Nil discards them.
	Logger *slog.Logger
	// Registerer is where the metrics ftpgate_pinhole_op_duration_seconds,
	// ftpgate_pinholes_active, ftpgate_pinhole_errors_total and
	// ftpgate_firewall_repairs_total are registered. Nil keeps them on a
	// private registry.
	Registerer prometheus.Registerer

	// backend is the backend label of ftpgate_firewall_repairs_total:
	// "iptables", or "netlink" for the iptables backend inside Netlink.
	backend string
}

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,16}$`)

// withDefaults validates c and fills in its zero fields.
func (c IPTablesConfig) withDefaults() (IPTablesConfig, error) {
	if c.ChainPrefix == "" {
		c.ChainPrefix = DefaultChainPrefix
	}
	if !prefixRE.MatchString(c.ChainPrefix) {
		return c, fmt.Errorf("chain prefix %q: want 1 to 16 characters of [A-Za-z0-9_-]", c.ChainPrefix)
	}
	switch {
	case c.DefaultTTL < 0:
		return c, fmt.Errorf("default TTL %s is negative", c.DefaultTTL)
	case c.DefaultTTL == 0:
		c.DefaultTTL = DefaultTTL
	}
	switch {
	case c.Timeout < 0:
		return c, fmt.Errorf("lock timeout %s is negative", c.Timeout)
	case c.Timeout == 0:
		c.Timeout = DefaultLockTimeout
	}
	if c.Path6 == "" {
		c.Path6 = "ip6tables"
		if dir, base := filepath.Split(c.Path); strings.HasPrefix(base, "iptables") {
			c.Path6 = dir + "ip6" + strings.TrimPrefix(base, "ip")
		}
	}
	if c.Path == "" {
		c.Path = "iptables"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// IPTables keeps ftpgate's pinholes in its own chains, through the iptables
// and ip6tables binaries (github.com/coreos/go-iptables).
//
// Life cycle: NewIPTables, Start (creates or flushes the chains and hooks
// them), any number of concurrent Opens and closes, Stop (removes the hooks
// and the chains). Cleanup removes them without a Start, for a process that
// died without Stop. Rules from before a crash are flushed by the next
// Start.
//
// All methods are safe for concurrent use. Firewall changes are serialized
// by one lock per IPTables, and against other programs by the xtables lock
// (iptables --wait). go-iptables cannot interrupt a running iptables
// process, so a context is honoured while waiting for the lock and before
// each iptables call, never during one: a cancelled operation stops
// between two calls (Open then removes what it added).
//
// The zero value is not usable; create one with NewIPTables.
type IPTables struct {
	log     *slog.Logger
	m       *metrics
	prefix  string // the chain prefix, which also names the netlink backend's sets and table
	chains  chains
	ttl     time.Duration
	v4      *family
	v6      *family // nil if IPv6 is not available
	v6err   error   // why v6 is nil
	variant string

	// op is held, as a ctx-aware mutex, around every change to the
	// firewall and to a pinhole's rules.
	op chan struct{}
	// wake tells the reaper that the earliest expiry has moved.
	wake chan struct{}

	mu      sync.Mutex // guards the fields below; never held during a call to iptables
	started bool
	queue   expiryQueue // installed pinholes, earliest expiry first
	reaper  *reaperRun  // nil if no reaper has been started since the last Stop
	// check, if not nil, replaces checkRepair as what the reaper runs
	// every checkEvery: the netlink backend's own check, which takes its
	// lock before t.op.
	check      func(ctx context.Context)
	checkEvery time.Duration
	checkErr   string // the last failed check's error, to log each failure once
}

var _ Pinholer = (*IPTables)(nil)

// NewIPTables checks cfg and finds the iptables and ip6tables binaries (it
// runs `iptables --version` to learn the variant). It does not touch the
// firewall. It fails if cfg is invalid, iptables cannot be run, or the
// metrics cannot be registered.
func NewIPTables(cfg IPTablesConfig) (*IPTables, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("configuring iptables backend: %w", err)
	}
	lockSecs := int((cfg.Timeout + time.Second - 1) / time.Second)
	v4, err := newFamily("IPv4", iptables.ProtocolIPv4, cfg.Path, lockSecs)
	if err != nil {
		return nil, fmt.Errorf("configuring iptables backend: %w", err)
	}
	v6, err6 := newFamily("IPv6", iptables.ProtocolIPv6, cfg.Path6, lockSecs)
	return newIPTables(cfg, v4, v6, err6)
}

// newFamily finds one binary and learns its variant.
func newFamily(name string, proto iptables.Protocol, bin string, lockSecs int) (*family, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("finding %s binary: %w", name, err)
	}
	t, err := iptables.New(iptables.IPFamily(proto), iptables.Path(path), iptables.Timeout(lockSecs))
	if err != nil {
		return nil, fmt.Errorf("running %s --version: %w", path, err)
	}
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("running %s --version: %w", path, err)
	}
	return &family{name: name, path: path, variant: parseVariant(string(out)), ipt: t}, nil
}

// parseVariant reads the mode from `iptables --version`:
// "iptables v1.8.9 (nf_tables)" or "iptables v1.8.9 (legacy)"; versions
// before 1.8 print no mode and are legacy.
func parseVariant(version string) string {
	if strings.Contains(version, "(nf_tables)") {
		return "nf_tables"
	}
	return "legacy"
}

// newIPTables builds an IPTables on the given families; cfg has its
// defaults. v6 may be nil, with v6err saying why.
func newIPTables(cfg IPTablesConfig, v4, v6 *family, v6err error) (*IPTables, error) {
	if v6 == nil && v6err == nil {
		v6err = errors.New("no ip6tables")
	}
	backend := cfg.backend
	if backend == "" {
		backend = "iptables"
	}
	m, err := newMetrics(cfg.Registerer, backend)
	if err != nil {
		return nil, fmt.Errorf("configuring iptables backend: %w", err)
	}
	return &IPTables{
		checkEvery: repairCheckInterval,
		log:        cfg.Logger,
		m:          m,
		prefix:     cfg.ChainPrefix,
		chains:     newChains(cfg.ChainPrefix),
		ttl:        cfg.DefaultTTL,
		v4:         v4,
		v6:         v6,
		v6err:      v6err,
		variant:    v4.variant,
		op:         make(chan struct{}, 1),
		wake:       make(chan struct{}, 1),
	}, nil
}

// Variant returns the iptables variant, "nf_tables" or "legacy", as
// `iptables --version` reports it. Rules added through one variant are
// invisible to the other's tools.
func (t *IPTables) Variant() string { return t.variant }

// Active returns the number of pinholes currently installed.
func (t *IPTables) Active() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.queue)
}

// families returns the available families, IPv4 first.
func (t *IPTables) families() []*family {
	if t.v6 == nil {
		return []*family{t.v4}
	}
	return []*family{t.v4, t.v6}
}

// familyOf returns the family that handles a.
func (t *IPTables) familyOf(a netip.Addr) (*family, error) {
	if a.Is4() {
		return t.v4, nil
	}
	if t.v6 == nil {
		return nil, fmt.Errorf("%w: IPv6: %w", ErrFamily, t.v6err)
	}
	return t.v6, nil
}

// lock takes t.op unless ctx is done first.
func (t *IPTables) lock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case t.op <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (t *IPTables) unlock() { <-t.op }

// translate marks go-iptables' "does not exist" errors with ErrNotExist.
func translate(err error) error {
	var ne interface{ IsNotExist() bool }
	if err != nil && errors.As(err, &ne) && ne.IsNotExist() {
		return fmt.Errorf("%w: %w", ErrNotExist, err)
	}
	return err
}

// Start makes ftpgate's chains ready and starts the TTL reaper:
//
//	iptables -t filter -N PREFIX-INPUT       (or -F PREFIX-INPUT if it exists)
//	iptables -t filter -N PREFIX-FORWARD
//	iptables -t nat    -N PREFIX-PREROUTING
//	iptables -t nat    -N PREFIX-POSTROUTING
//	iptables -t nat    -N PREFIX-OUTPUT
//	iptables -t filter -I INPUT 1 -j PREFIX-INPUT   (unless INPUT already jumps there)
//	... and likewise FORWARD, PREROUTING, POSTROUTING, OUTPUT
//
// for IPv4 and, if available, IPv6. Leftovers of an earlier run (after a
// crash) are flushed. A single jump that exists already is kept where it
// is; several jumps to one chain are replaced by one at the top. Other
// programs' rules and chains are not touched. Start may be called again:
// it leaves one jump each and flushes every open pinhole (their close funcs
// then return nil).
//
// The reaper runs until ctx is done or Stop is called. Every second it also
// checks that the jumps are still there: if someone else's reload (an
// iptables-restore) removed them, it reinstalls the chains and jumps and
// the rules of every open pinhole, logs it at WARN and counts it in
// ftpgate_firewall_repairs_total (checkRepair). On error the chains
// and jumps created so far stay, and no pinhole can be opened; Stop or
// Cleanup removes them.
func (t *IPTables) Start(ctx context.Context) error {
	if err := t.lock(ctx); err != nil {
		return fmt.Errorf("starting iptables backend: %w", err)
	}
	defer t.unlock()
	t.forget()
	if t.v6 == nil {
		t.log.Warn("ip6tables not available: IPv6 pinholes will fail", "err", t.v6err)
	} else if t.v6.variant != t.v4.variant {
		t.log.Warn("iptables and ip6tables are different variants", "iptables", t.v4.path, "variant", t.v4.variant,
			"ip6tables", t.v6.path, "variant6", t.v6.variant)
	}
	for _, fam := range t.families() {
		if err := t.setup(ctx, fam); err != nil {
			return fmt.Errorf("starting iptables backend: %w", err)
		}
	}

	t.mu.Lock()
	t.started = true
	if t.reaper == nil || t.reaper.finished() {
		rctx, cancel := context.WithCancel(ctx)
		t.reaper = &reaperRun{cancel: cancel, done: make(chan struct{})}
		go t.reap(rctx, t.reaper.done)
	}
	t.mu.Unlock()

	t.log.Info("firewall chains ready", "variant", t.variant, "ipv6", t.v6 != nil,
		"chains", t.chains.input+" "+t.chains.forward+" "+t.chains.prerouting+" "+t.chains.postrouting+" "+t.chains.output,
		"default_ttl_seconds", t.ttl.Seconds())
	return nil
}

// setup creates or flushes fam's chains and hooks each one exactly once.
func (t *IPTables) setup(ctx context.Context, fam *family) error {
	for _, h := range t.chains.hooks() {
		if err := ctx.Err(); err != nil {
			return err
		}
		// -t TABLE -N CHAIN, or -t TABLE -F CHAIN if it exists
		if err := translate(fam.ipt.ClearChain(h.table, h.chain)); err != nil {
			return fmt.Errorf("creating or flushing chain %s/%s (%s): %w", h.table, h.chain, fam.name, err)
		}
	}
	for _, h := range t.chains.hooks() {
		jumps, err := t.jumps(ctx, fam, h)
		if err != nil {
			return err
		}
		if len(jumps) == 0 {
			if err := t.insertJump(ctx, fam, h); err != nil {
				return err
			}
			continue
		}
		if len(jumps) == 1 {
			continue // ours from before a crash, or the operator's: leave it where it is
		}
		// Several jumps would run every pinhole more than once: delete them
		// all and insert one at the top.
		for _, spec := range jumps {
			if err := t.deleteJump(ctx, fam, h, spec); err != nil {
				return err
			}
		}
		if err := t.insertJump(ctx, fam, h); err != nil {
			return err
		}
	}
	return nil
}

// insertJump inserts the jump from h.builtin to h.chain at the top.
func (t *IPTables) insertJump(ctx context.Context, fam *family, h hook) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// -t TABLE -I BUILTIN 1 -j CHAIN
	if err := translate(fam.ipt.Insert(h.table, h.builtin, 1, "-j", h.chain)); err != nil {
		return fmt.Errorf("inserting jump from %s/%s to %s (%s): %w", h.table, h.builtin, h.chain, fam.name, err)
	}
	return nil
}

// jumps lists the rulespecs of every rule in h.builtin that jumps to h.chain.
func (t *IPTables) jumps(ctx context.Context, fam *family, h hook) ([][]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	lines, err := fam.ipt.List(h.table, h.builtin)
	if err != nil {
		return nil, fmt.Errorf("listing %s/%s (%s): %w", h.table, h.builtin, fam.name, translate(err))
	}
	var specs [][]string
	for _, l := range lines {
		if spec := jumpSpec(l, h.chain); spec != nil {
			specs = append(specs, spec)
		}
	}
	return specs, nil
}

// deleteJump deletes one jump rule; one already gone is not an error.
func (t *IPTables) deleteJump(ctx context.Context, fam *family, h hook, spec []string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// -t TABLE -D BUILTIN -j CHAIN
	err := translate(fam.ipt.Delete(h.table, h.builtin, spec...))
	if err != nil && !errors.Is(err, ErrNotExist) {
		return fmt.Errorf("deleting jump from %s/%s to %s (%s): %w", h.table, h.builtin, h.chain, fam.name, err)
	}
	return nil
}

// Stop stops the reaper, then removes every jump to ftpgate's chains (all
// copies) and the chains themselves, with every pinhole in them; their close
// funcs then return nil. Stop is idempotent, and removes as much as it can
// before it returns the errors joined. Other programs' rules are not
// touched.
func (t *IPTables) Stop(ctx context.Context) error {
	if err := t.stopReaper(ctx); err != nil {
		return fmt.Errorf("stopping iptables backend: %w", err)
	}
	if err := t.teardown(ctx); err != nil {
		return fmt.Errorf("stopping iptables backend: %w", err)
	}
	t.log.Info("firewall chains removed")
	return nil
}

// Cleanup is Stop for `ftpgate cleanup`: it needs no Start, removes the
// jumps and chains that a killed process left, and returns nil if there is
// nothing to remove.
func (t *IPTables) Cleanup(ctx context.Context) error {
	if err := t.stopReaper(ctx); err != nil {
		return fmt.Errorf("cleaning up iptables chains: %w", err)
	}
	if err := t.teardown(ctx); err != nil {
		return fmt.Errorf("cleaning up iptables chains: %w", err)
	}
	return nil
}

// stopReaper stops the reaper, if one runs, and waits for it.
func (t *IPTables) stopReaper(ctx context.Context) error {
	t.mu.Lock()
	r := t.reaper
	t.reaper = nil
	t.mu.Unlock()
	if r == nil {
		return nil
	}
	r.cancel()
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the reaper: %w", ctx.Err())
	}
}

// teardown removes every jump to ftpgate's chains, then the chains.
func (t *IPTables) teardown(ctx context.Context) error {
	if err := t.lock(ctx); err != nil {
		return err
	}
	defer t.unlock()
	t.forget()
	var errs []error
	for _, fam := range t.families() {
		for _, h := range t.chains.hooks() {
			jumps, err := t.jumps(ctx, fam, h)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for _, spec := range jumps {
				if err := t.deleteJump(ctx, fam, h, spec); err != nil {
					errs = append(errs, err)
				}
			}
		}
		for _, h := range t.chains.hooks() {
			if err := t.deleteChain(ctx, fam, h); err != nil {
				errs = append(errs, err)
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}

// deleteChain flushes and deletes h.chain if it exists.
func (t *IPTables) deleteChain(ctx context.Context, fam *family, h hook) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ok, err := fam.ipt.ChainExists(h.table, h.chain)
	if err != nil {
		return fmt.Errorf("looking for chain %s/%s (%s): %w", h.table, h.chain, fam.name, translate(err))
	}
	if !ok {
		return nil
	}
	// -t TABLE -F CHAIN
	if err := translate(fam.ipt.ClearChain(h.table, h.chain)); err != nil {
		return fmt.Errorf("flushing chain %s/%s (%s): %w", h.table, h.chain, fam.name, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// -t TABLE -X CHAIN
	if err := translate(fam.ipt.DeleteChain(h.table, h.chain)); err != nil && !errors.Is(err, ErrNotExist) {
		return fmt.Errorf("deleting chain %s/%s (%s): %w", h.table, h.chain, fam.name, err)
	}
	return nil
}

// forget drops every pinhole from the books, because their rules are about
// to be flushed with the chains, and marks the backend not started.
func (t *IPTables) forget() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range t.queue {
		e.index = -1
	}
	t.queue = nil
	t.started = false
	t.m.active.Set(0)
}

// pinhole is one installed pinhole. rules is only touched with t.op held;
// expiry and index only with t.mu held.
type pinhole struct {
	p      Pinhole
	fam    *family
	rules  []rule // still installed, in the order they were added
	ttl    time.Duration
	expiry time.Time
	index  int  // in t.queue; -1 once removed
	failed bool // leftovers of an Open that could not be rolled back
}

// Open installs p's rules, all or none, and returns a func that deletes
// them. With M the exact match
//
//	-s From -d To.addr -p tcp -m tcp --dport To.port -m conntrack --ctstate NEW
//	-m comment --comment "ftpgate s=Session p=Seq"
//
// and O its tail with the original destination of a rewritten connection
// added (-m conntrack --ctstate NEW --ctorigdst To.addr --ctorigdstport
// To.port -m comment --comment "ftpgate s=Session p=Seq"), the rules are:
//
//	AcceptLocal:   -A PREFIX-INPUT M -j ACCEPT
//	AcceptForward: -A PREFIX-FORWARD M -j ACCEPT
//	Redirect:      -A PREFIX-INPUT -s From -p tcp -m tcp --dport RedirectPort O -j ACCEPT
//	               -t nat -A PREFIX-PREROUTING M -j REDIRECT --to-ports RedirectPort
//	DNAT:          -A PREFIX-FORWARD -s From -d DNATTo.addr -p tcp -m tcp --dport DNATTo.port O -j ACCEPT
//	               -t nat -A PREFIX-POSTROUTING (as FORWARD) -j SNAT --to-source SNATTo   (if SNATTo is valid)
//	               -t nat -A PREFIX-PREROUTING M -j DNAT --to-destination DNATTo
//
// added in this order (nothing is rewritten before it can be accepted) and
// deleted in reverse. Addresses are written as /32 or /128, exactly as
// `iptables -S` lists them. The pinhole is
// removed by the reaper TTL after Open (p.TTL, or the configured default)
// if it has not been closed by then. The close func is idempotent and safe
// to call concurrently with the reaper, Stop and itself; it returns nil if
// the pinhole is already gone (closed, expired, flushed by Stop or Start),
// and an error if the firewall refused, in which case the pinhole stays on
// the books and the reaper retries at its expiry.
//
// Open fails with ErrInvalid if p is invalid, ErrFamily if p is IPv6 and
// there is no ip6tables, ErrNotExist if Start has not succeeded, or the
// firewall's error. Open and the close func honour ctx while waiting for
// the backend's lock and before each iptables call, never during one (see
// IPTables); a rollback runs to the end even if ctx is done.
func (t *IPTables) Open(ctx context.Context, p Pinhole) (func(context.Context) error, error) {
	start := time.Now()
	e, err := t.open(ctx, p)
	d := time.Since(start)
	t.m.observe(opOpen, d, err)
	if err != nil {
		t.log.Debug("opening pinhole failed", "pinhole", p.String(), "seconds", d.Seconds(), "err", err)
		return nil, fmt.Errorf("opening pinhole %s: %w", p, err)
	}
	t.log.Debug("pinhole opened", "pinhole", p.String(), "seconds", d.Seconds(), "ttl_seconds", e.ttl.Seconds())
	return func(ctx context.Context) error { return t.close(ctx, e) }, nil
}

func (t *IPTables) open(ctx context.Context, p Pinhole) (*pinhole, error) {
	p = p.normalize()
	if err := p.Validate(); err != nil {
		return nil, err
	}
	fam, err := t.familyOf(p.From)
	if err != nil {
		return nil, err
	}
	rs := buildRules(t.chains, p)
	if err := t.lock(ctx); err != nil {
		return nil, err
	}
	defer t.unlock()
	t.mu.Lock()
	started := t.started
	t.mu.Unlock()
	if !started {
		return nil, fmt.Errorf("%w: chains not set up (Start has not succeeded)", ErrNotExist)
	}
	if other, ok := t.conflicting(p); ok {
		return nil, t.conflict(p, other)
	}
	ttl := p.TTL
	if ttl == 0 {
		ttl = t.ttl
	}
	e := &pinhole{p: p, fam: fam, ttl: ttl, index: -1}
	for _, r := range rs {
		err := ctx.Err()
		if err == nil {
			err = translate(fam.ipt.Append(r.table, r.chain, r.spec...))
			if err != nil {
				err = fmt.Errorf("adding rule to %s/%s (%s): %w", r.table, r.chain, fam.name, err)
			}
		}
		if err != nil {
			return nil, t.rollback(e, err)
		}
		e.rules = append(e.rules, r)
	}
	t.insert(e, time.Now().Add(ttl))
	return e, nil
}

// conflicting returns an open pinhole that conflicts with p, if any. The
// caller holds t.op, so that none is added meanwhile.
func (t *IPTables) conflicting(p Pinhole) (Pinhole, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range t.queue {
		if conflicts(e.p, p) {
			return e.p, true
		}
	}
	return Pinhole{}, false
}

// conflict logs and counts a pinhole refused for conflicting with other,
// and returns its error.
func (t *IPTables) conflict(p, other Pinhole) error {
	t.m.conflicts.Inc()
	t.log.Warn("pinhole refused: another one diverts the same connections elsewhere", "pinhole", p.String(), "other", other.String())
	return fmt.Errorf("%w: %s", ErrConflict, other)
}

// rollback deletes the rules of a failed Open, whatever ctx says. Rules it
// cannot delete are handed to the reaper. It returns cause, joined with the
// rollback's error if any. The caller holds t.op.
func (t *IPTables) rollback(e *pinhole, cause error) error {
	if len(e.rules) == 0 {
		return cause
	}
	if err := t.remove(context.Background(), e); err != nil {
		e.failed = true
		t.insert(e, time.Now())
		t.log.Error("rolling back pinhole failed; the reaper will retry", "pinhole", e.p.String(), "err", err)
		return errors.Join(cause, fmt.Errorf("rolling back: %w", err))
	}
	return cause
}

// remove deletes e's installed rules, last added first. A rule already gone
// counts as deleted. It stops at the first other error or when ctx is done,
// and e.rules keeps what is still installed. The caller holds t.op.
func (t *IPTables) remove(ctx context.Context, e *pinhole) error {
	for len(e.rules) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		r := e.rules[len(e.rules)-1]
		// -t TABLE -D CHAIN <the rulespec that was added>
		err := translate(e.fam.ipt.Delete(r.table, r.chain, r.spec...))
		if err != nil && !errors.Is(err, ErrNotExist) {
			return fmt.Errorf("deleting rule from %s/%s (%s): %w", r.table, r.chain, e.fam.name, err)
		}
		e.rules = e.rules[:len(e.rules)-1]
	}
	return nil
}

// installed reports whether e is still on the books.
func (t *IPTables) installed(e *pinhole) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return e.index >= 0
}

// close is the func that Open returns.
func (t *IPTables) close(ctx context.Context, e *pinhole) error {
	if !t.installed(e) {
		return nil
	}
	start := time.Now()
	err := t.lock(ctx)
	if err == nil {
		if !t.installed(e) {
			t.unlock()
			return nil
		}
		err = t.remove(ctx, e)
		if err == nil {
			t.drop(e)
		}
		t.unlock()
	}
	d := time.Since(start)
	t.m.observe(opClose, d, err)
	if err != nil {
		t.log.Debug("closing pinhole failed", "pinhole", e.p.String(), "seconds", d.Seconds(), "err", err)
		return fmt.Errorf("closing pinhole %s: %w", e.p, err)
	}
	t.log.Debug("pinhole closed", "pinhole", e.p.String(), "seconds", d.Seconds())
	return nil
}
