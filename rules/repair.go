package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
)

// repairCheckInterval is how often each backend checks that its chains,
// jumps, sets and tables are still in the kernel: a firewall reload by
// someone else (firewalld, `nft -f`, iptables-restore) removes them while
// sessions run. The check is a few listings, however many pinholes are
// open.
const repairCheckInterval = time.Second

// repairLog logs a repair at WARN (or, if some pinholes could not be
// re-added, with the error too) and counts it.
func repairLog(log *slog.Logger, m *metrics, backend string, missing []string, restored, open int, err error) {
	m.repairs.WithLabelValues(backend).Inc()
	args := []any{"backend", backend, "missing", strings.Join(missing, ", "),
		"pinholes_restored", restored, "pinholes_open", open}
	if err != nil {
		args = append(args, "err", err)
	}
	log.Warn("firewall rules of ftpgate were removed by someone else: reinstalled", args...)
}

// checkFailed logs a failed check or repair once per distinct error, at
// ERROR; *last remembers it. checkOK forgets it.
func checkFailed(log *slog.Logger, last *string, backend, what string, err error) {
	if err.Error() == *last {
		return
	}
	*last = err.Error()
	log.Error(what+" failed; retrying every "+repairCheckInterval.String(), "backend", backend, "err", err)
}

// checkRepair is the iptables backend's check, run by the reaper: with
// t.op held, it lists each built-in chain that jumps to one of ftpgate's
// chains (a jump implies its chain), and if any jump is gone it recreates
// that family's chains and jumps (setup) and appends again the rules of
// every pinhole of that family on the books, which keep their expiry.
func (t *IPTables) checkRepair(ctx context.Context) {
	if err := t.lock(ctx); err != nil {
		return
	}
	defer t.unlock()
	t.mu.Lock()
	started := t.started
	t.mu.Unlock()
	if !started {
		return
	}
	missing, broken, err := t.missingHooks(ctx)
	if err != nil {
		if ctx.Err() == nil {
			checkFailed(t.log, &t.checkErr, "iptables", "checking ftpgate's firewall rules", err)
		}
		return
	}
	if len(broken) == 0 {
		t.checkErr = ""
		return
	}
	for _, fam := range broken {
		if err := t.setup(ctx, fam); err != nil {
			if ctx.Err() == nil {
				checkFailed(t.log, &t.checkErr, "iptables", "reinstalling ftpgate's chains",
					fmt.Errorf("missing %s: %w", strings.Join(missing, ", "), err))
			}
			return
		}
	}
	t.checkErr = ""
	restored, open, err := t.reinstallPinholes(broken)
	repairLog(t.log, t.m, "iptables", missing, restored, open, err)
}

// missingHooks lists, for each family, the built-in chains that jump to
// ftpgate's chains, and returns what is missing ("IPv4 filter/INPUT ->
// FTPGATE-INPUT") and the families concerned. The caller holds t.op.
func (t *IPTables) missingHooks(ctx context.Context) ([]string, []*family, error) {
	var missing []string
	var broken []*family
	for _, fam := range t.families() {
		for _, h := range t.chains.hooks() {
			jumps, err := t.jumps(ctx, fam, h)
			if err != nil && !errors.Is(err, ErrNotExist) {
				return nil, nil, err
			}
			if len(jumps) == 0 {
				missing = append(missing, fmt.Sprintf("%s %s/%s -> %s", fam.name, h.table, h.builtin, h.chain))
				if !slices.Contains(broken, fam) {
					broken = append(broken, fam)
				}
			}
		}
	}
	return missing, broken, nil
}

// reinstallPinholes appends again the rules of every pinhole of fams on
// the books, after setup flushed their chains; each keeps its expiry. The
// leftovers of a failed Open went with the flush. It returns how many
// pinholes it restored and how many of fams are on the books. The caller
// holds t.op, so no pinhole is added or removed meanwhile.
func (t *IPTables) reinstallPinholes(fams []*family) (restored, open int, _ error) {
	t.mu.Lock()
	queue := slices.Clone(t.queue)
	t.mu.Unlock()
	var errs []error
	for _, e := range queue {
		if !slices.Contains(fams, e.fam) {
			continue
		}
		e.rules = nil
		if e.failed {
			continue // flushed; the reaper takes it off the books
		}
		open++
		ok := true
		for _, r := range buildRules(t.chains, e.p) {
			if err := translate(e.fam.ipt.Append(r.table, r.chain, r.spec...)); err != nil {
				errs = append(errs, fmt.Errorf("re-adding pinhole %s: adding rule to %s/%s (%s): %w", e.p, r.table, r.chain, e.fam.name, err))
				ok = false
				break
			}
			e.rules = append(e.rules, r)
		}
		if ok {
			restored++
		}
	}
	return restored, open, errors.Join(errs...)
}

// readdElements adds again, after the sets and maps were recreated empty,
// every element that the open pinholes hold, each once, with the time its
// latest holder has left. It returns how many pinholes it restored. The
// caller holds the backend's lock.
func readdElements(open map[*nlPinhole]struct{}, refs map[string]*sharedElement) (int, error) {
	now := time.Now()
	done := map[string]error{}
	var errs []error
	restored := 0
	for e := range open {
		ok := true
		for _, el := range e.elements {
			k := el.key()
			err, seen := done[k]
			if !seen {
				ttl := e.ttl
				if sh := refs[k]; sh != nil {
					ttl = sh.until.Sub(now)
				}
				if ttl <= 0 {
					done[k] = nil
					continue // expiring now; its timer takes it off the books
				}
				err = el.add(ttl, false)
				done[k] = err
				if err != nil {
					errs = append(errs, fmt.Errorf("re-adding pinhole %s: %w", e.p, err))
				}
			}
			if err != nil {
				ok = false
			}
		}
		if ok {
			restored++
		}
	}
	return restored, errors.Join(errs...)
}

// checkRepair is the netlink backend's check, run by the reaper of its
// iptables backend: with n.op and then the iptables lock held, it lists
// the built-in chains for the jumps and ftpgate's filter chains for the
// static set rules (a rule that matches a set implies the set: the kernel
// will not destroy a set in use), and asks nftables for ftpgate's NAT
// tables. If anything is missing it rebuilds everything as Start does
// (chains, jumps, sets, tables, static rules) and adds again the elements
// of every open pinhole with the time they have left.
func (n *Netlink) checkRepair(ctx context.Context) {
	n.op.Lock()
	defer n.op.Unlock()
	if !n.started {
		return
	}
	t := n.ipt
	if err := t.lock(ctx); err != nil {
		return
	}
	defer t.unlock()
	missing, err := n.missing(ctx)
	if err != nil {
		if ctx.Err() == nil {
			checkFailed(t.log, &t.checkErr, "netlink", "checking ftpgate's firewall rules", err)
		}
		return
	}
	if len(missing) == 0 {
		t.checkErr = ""
		return
	}
	if err := n.rebuild(ctx); err != nil {
		if ctx.Err() == nil {
			checkFailed(t.log, &t.checkErr, "netlink", "reinstalling ftpgate's chains, sets and tables",
				fmt.Errorf("missing %s: %w", strings.Join(missing, ", "), err))
		}
		return
	}
	t.checkErr = ""
	restored, err := readdElements(n.open, n.refs)
	repairLog(t.log, t.m, "netlink", missing, restored, len(n.open), err)
}

// missing returns what of the netlink backend's kernel objects is gone.
// The caller holds n.op and the iptables lock.
func (n *Netlink) missing(ctx context.Context) ([]string, error) {
	t := n.ipt
	missing, broken, err := t.missingHooks(ctx)
	if err != nil {
		return nil, err
	}
	for _, v4 := range n.families() {
		fam := t.v4
		if !v4 {
			fam = t.v6
		}
		if slices.Contains(broken, fam) {
			continue // its chains may be gone: rebuilt anyway
		}
		listed := map[string][]string{}
		for _, r := range n.staticRules(n.sets[v4]) {
			lines, ok := listed[r.chain]
			if !ok {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				// -t filter -S PREFIX-INPUT: the static rules only
				lines, err = fam.ipt.List(r.table, r.chain)
				if err != nil && !errors.Is(translate(err), ErrNotExist) {
					return nil, fmt.Errorf("listing %s/%s (%s): %w", r.table, r.chain, fam.name, err)
				}
				listed[r.chain] = lines
			}
			set := r.spec[slices.Index(r.spec, "--match-set")+1]
			if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, " --match-set "+set+" ") }) {
				missing = append(missing, fmt.Sprintf("%s %s/%s rule matching ipset %s", fam.name, r.table, r.chain, set))
			}
		}
	}
	gone, err := n.nat.missingTables()
	if err != nil {
		return nil, err
	}
	return append(missing, gone...), nil
}

// rebuild recreates, as Start does, ftpgate's chains and jumps, the sets,
// the NAT tables and the static rules, all empty of pinholes. The caller
// holds n.op and the iptables lock.
func (n *Netlink) rebuild(ctx context.Context) error {
	for _, fam := range n.ipt.families() {
		if err := n.ipt.setup(ctx, fam); err != nil {
			return err
		}
	}
	if err := n.createSets(); err != nil {
		return err
	}
	if err := n.nat.setup(); err != nil {
		return err
	}
	return n.addStaticRules(ctx)
}

// startWatch starts the goroutine that runs checkRepair every
// checkEvery until ctx is done or stopWatch, unless it runs already.
func (b *NftablesBackend) startWatch(ctx context.Context) {
	b.watchMu.Lock()
	defer b.watchMu.Unlock()
	if b.watch != nil && !b.watch.finished() {
		return
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &reaperRun{cancel: cancel, done: make(chan struct{})}
	b.watch = w
	go func() {
		defer close(w.done)
		ticker := time.NewTicker(b.checkEvery)
		defer ticker.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-ticker.C:
				b.checkRepair(wctx)
			}
		}
	}()
}

// stopWatch stops the checking goroutine, if one runs, and waits for it.
// The caller must not hold b.op.
func (b *NftablesBackend) stopWatch() {
	b.watchMu.Lock()
	w := b.watch
	b.watch = nil
	b.watchMu.Unlock()
	if w != nil {
		w.cancel()
		<-w.done
	}
}

// checkRepair is the nftables backend's check: with b.op held (as every
// change of this backend, whose netlink requests are short), it lists the
// tables, the chains and sets of the operator's table and the rules of
// the configured base chains. If ftpgate's chain, a jump, a set or a NAT
// table is gone while the operator's table is there, it removes what is
// left of them, adds them again as Start does, and adds again the elements
// of every open pinhole with the time they have left. Without the
// operator's table (in the middle of a reload) there is nothing to attach
// to: the next check tries again.
func (b *NftablesBackend) checkRepair(ctx context.Context) {
	b.op.Lock()
	defer b.op.Unlock()
	if !b.started || ctx.Err() != nil {
		return
	}
	missing, err := b.missing()
	if err == nil && len(missing) > 0 {
		err = b.rebuild()
		if err != nil {
			err = fmt.Errorf("missing %s: %w", strings.Join(missing, ", "), err)
		}
	}
	if err != nil {
		checkFailed(b.log, &b.checkErr, "nftables", "checking or reinstalling ftpgate's chain, sets and tables", err)
		return
	}
	b.checkErr = ""
	if len(missing) == 0 {
		return
	}
	restored, err := readdElements(b.books.open, b.books.refs)
	repairLog(b.log, b.m, "nftables", missing, restored, len(b.books.open), err)
}

// missing returns what of the backend's objects is gone. The caller holds
// b.op.
func (b *NftablesBackend) missing() ([]string, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	tables, err := c.ListTables()
	if err != nil {
		return nil, fmt.Errorf("listing nftables tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool {
		return t.Name == b.table.Name && t.Family == b.table.Family
	}) {
		return nil, fmt.Errorf("the operator's table %s is gone: waiting for it", b.Table())
	}
	var missing []string
	if b.attach == NftAttachChain {
		chains, err := b.tableChains(c)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(chains, func(ch *nftables.Chain) bool { return ch.Name == b.chain.Name }) {
			missing = append(missing, "chain "+b.chain.Name)
		}
		for _, h := range b.hooks {
			i := slices.IndexFunc(chains, func(ch *nftables.Chain) bool { return ch.Name == h })
			if i < 0 {
				return nil, fmt.Errorf("the operator's chain %s is gone: waiting for it", h)
			}
			rules, err := c.GetRules(b.table, chains[i])
			if err != nil {
				return nil, fmt.Errorf("listing the rules of chain %s: %w", h, err)
			}
			if !slices.ContainsFunc(rules, func(r *nftables.Rule) bool { return isJumpTo(r, b.chain.Name) }) {
				missing = append(missing, "jump from "+h)
			}
		}
	}
	sets, err := c.GetSets(b.table)
	if err != nil {
		return nil, fmt.Errorf("listing sets: %w", err)
	}
	for _, s := range b.filterSets() {
		if !slices.ContainsFunc(sets, func(e *nftables.Set) bool { return e.Name == s.Name }) {
			missing = append(missing, "set "+s.Name)
		}
	}
	for _, f := range b.nat.families() {
		if !slices.ContainsFunc(tables, func(t *nftables.Table) bool {
			return t.Name == f.table.Name && t.Family == f.table.Family
		}) {
			missing = append(missing, fmt.Sprintf("nftables table %s %s", familyName(f.table.Family), f.table.Name))
		}
	}
	return missing, nil
}

// rebuild adds again, as Start does, ftpgate's sets (and with
// NftAttachChain its chain and jumps, after removing what is left of
// them) and replaces its NAT tables, all empty of pinholes. The caller
// holds b.op.
func (b *NftablesBackend) rebuild() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables netlink socket: %w", err)
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
		if err := b.removeFilter(c, chains); err != nil {
			return fmt.Errorf("removing what is left: %w", err)
		}
		if err := batch(b.addFilter); err != nil {
			return fmt.Errorf("adding chain %s, its sets and the jumps from %q: %w", b.chain.Name, b.hooks, err)
		}
	}
	return b.nat.setup()
}
