package rules

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
)

// fakeErr is what fakeIPT returns; like go-iptables' *Error it can say that
// a rule or chain does not exist.
type fakeErr struct {
	msg      string
	notExist bool
}

func (e *fakeErr) Error() string    { return e.msg }
func (e *fakeErr) IsNotExist() bool { return e.notExist }

// fakeIPT is an in-memory iptables for one address family, in the style of
// tailscale's linuxfw fake: "table/chain" -> rules, each rule stored as
// `iptables -S` prints it (without "-A CHAIN"). It checks what the kernel
// checks: chains exist, jump targets exist, only empty unreferenced chains
// are deleted.
type fakeIPT struct {
	mu     sync.Mutex
	chains map[string][]string // a key exists iff the chain does
	order  []string            // chain keys in creation order, for dumps
	// fail, if set, is consulted before every call; a non-nil result is
	// returned instead of doing the call.
	fail func(op, table, chain string, spec []string) error
	// calls counts calls by operation ("append", "delete", ...).
	calls map[string]int
	// deleted counts successful rule deletions by rule text.
	deleted map[string]int
}

var builtins = map[string][]string{
	"filter": {"INPUT", "FORWARD", "OUTPUT"},
	"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
}

var targets = []string{"ACCEPT", "DROP", "RETURN", "REJECT", "DNAT", "SNAT", "REDIRECT", "MASQUERADE", "LOG"}

func newFakeIPT() *fakeIPT {
	f := &fakeIPT{chains: map[string][]string{}, calls: map[string]int{}, deleted: map[string]int{}}
	for _, table := range []string{"filter", "nat"} {
		for _, c := range builtins[table] {
			f.newChainLocked(table, c)
		}
	}
	return f
}

var _ ipt = (*fakeIPT)(nil)

func key(table, chain string) string { return table + "/" + chain }

func isBuiltin(table, chain string) bool { return slices.Contains(builtins[table], chain) }

func (f *fakeIPT) newChainLocked(table, chain string) {
	k := key(table, chain)
	f.chains[k] = []string{}
	f.order = append(f.order, k)
}

func (f *fakeIPT) begin(op, table, chain string, spec []string) error {
	f.calls[op]++
	if f.fail != nil {
		return f.fail(op, table, chain, spec)
	}
	return nil
}

func noChain(table, chain string) error {
	return &fakeErr{msg: fmt.Sprintf("iptables: No chain/target/match by that name (%s/%s).", table, chain), notExist: true}
}

// checkTarget fails if spec jumps to a chain that does not exist.
func (f *fakeIPT) checkTarget(table string, spec []string) error {
	for i := 0; i+1 < len(spec); i++ {
		if spec[i] == "-j" && !slices.Contains(targets, spec[i+1]) {
			if _, ok := f.chains[key(table, spec[i+1])]; !ok {
				return noChain(table, spec[i+1])
			}
		}
	}
	return nil
}

func (f *fakeIPT) Append(table, chain string, spec ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("append", table, chain, spec); err != nil {
		return err
	}
	k := key(table, chain)
	if _, ok := f.chains[k]; !ok {
		return noChain(table, chain)
	}
	if err := f.checkTarget(table, spec); err != nil {
		return err
	}
	f.chains[k] = append(f.chains[k], formatSpec(spec))
	return nil
}

func (f *fakeIPT) Insert(table, chain string, pos int, spec ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("insert", table, chain, spec); err != nil {
		return err
	}
	k := key(table, chain)
	rs, ok := f.chains[k]
	if !ok {
		return noChain(table, chain)
	}
	if pos < 1 || pos > len(rs)+1 {
		return &fakeErr{msg: "iptables: Index of insertion too big."}
	}
	if err := f.checkTarget(table, spec); err != nil {
		return err
	}
	f.chains[k] = slices.Insert(rs, pos-1, formatSpec(spec))
	return nil
}

func (f *fakeIPT) Delete(table, chain string, spec ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("delete", table, chain, spec); err != nil {
		return err
	}
	k := key(table, chain)
	s := formatSpec(spec)
	i := slices.Index(f.chains[k], s)
	if i < 0 {
		return &fakeErr{msg: "iptables: Bad rule (does a matching rule exist in that chain?).", notExist: true}
	}
	f.chains[k] = slices.Delete(f.chains[k], i, i+1)
	f.deleted[k+" "+s]++
	return nil
}

func (f *fakeIPT) List(table, chain string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("list", table, chain, nil); err != nil {
		return nil, err
	}
	rs, ok := f.chains[key(table, chain)]
	if !ok {
		return nil, noChain(table, chain)
	}
	head := "-N " + chain
	if isBuiltin(table, chain) {
		head = "-P " + chain + " ACCEPT"
	}
	out := []string{head}
	for _, r := range rs {
		out = append(out, "-A "+chain+" "+r)
	}
	return out, nil
}

func (f *fakeIPT) ClearChain(table, chain string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("clear", table, chain, nil); err != nil {
		return err
	}
	k := key(table, chain)
	if _, ok := f.chains[k]; !ok {
		f.newChainLocked(table, chain)
		return nil
	}
	f.chains[k] = []string{}
	return nil
}

func (f *fakeIPT) DeleteChain(table, chain string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("deletechain", table, chain, nil); err != nil {
		return err
	}
	k := key(table, chain)
	rs, ok := f.chains[k]
	switch {
	case !ok:
		return noChain(table, chain)
	case isBuiltin(table, chain):
		return &fakeErr{msg: "iptables: Invalid argument."}
	case len(rs) > 0:
		return &fakeErr{msg: "iptables: Directory not empty."}
	}
	for ck, rs := range f.chains {
		if !strings.HasPrefix(ck, table+"/") {
			continue
		}
		for _, r := range rs {
			if jumpSpec("-A X "+r, chain) != nil {
				return &fakeErr{msg: "iptables: Too many links."}
			}
		}
	}
	delete(f.chains, k)
	f.order = slices.DeleteFunc(f.order, func(s string) bool { return s == k })
	return nil
}

func (f *fakeIPT) ChainExists(table, chain string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("chainexists", table, chain, nil); err != nil {
		return false, err
	}
	_, ok := f.chains[key(table, chain)]
	return ok, nil
}

// add appends a rule given as `iptables -S` text, for test setup.
func (f *fakeIPT) add(table, chain, rule string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := key(table, chain)
	if _, ok := f.chains[k]; !ok {
		f.newChainLocked(table, chain)
	}
	if rule != "" {
		f.chains[k] = append(f.chains[k], formatSpec(splitSpec(rule)))
	}
}

// rules returns a copy of one chain's rules, or nil if it does not exist.
func (f *fakeIPT) rules(table, chain string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	rs, ok := f.chains[key(table, chain)]
	if !ok {
		return nil
	}
	return append([]string{}, rs...)
}

// dump returns the whole state, one line per chain and rule, sorted by
// chain, for comparing states.
func (f *fakeIPT) dump() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	keys := make([]string, 0, len(f.chains))
	for k := range f.chains {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		out = append(out, "chain "+k)
		for _, r := range f.chains[k] {
			out = append(out, k+" "+r)
		}
	}
	return out
}

// count returns how many calls of op were made.
func (f *fakeIPT) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// setFail installs or removes a failure injector.
func (f *fakeIPT) setFail(fn func(op, table, chain string, spec []string) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fn
}

// totalDeleted returns the number of successful rule deletions and the most
// times any one rule text was deleted.
func (f *fakeIPT) totalDeleted() (total, most int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.deleted {
		total += n
		most = max(most, n)
	}
	return total, most
}
