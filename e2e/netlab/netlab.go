// Package netlab builds small test networks out of Linux network namespaces
// for ftpgate's end-to-end tests and demo: namespaces joined by veth pairs,
// processes started inside them, and a Close that removes all of it.
//
// Network hygiene, enforced here: namespaces are never linked to the root
// namespace (veth pairs are created inside a namespace with their peer in
// another one); addresses come only from 198.18.0.0/15 and 2001:db8::/32;
// every name carries a prefix unique to the run; processes are killed by PID;
// every wait is bounded.
package netlab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Allowed address space for test hosts (RFC 2544 benchmarking and RFC 3849
// documentation prefixes).
var (
	TestNet4 = netip.MustParsePrefix("198.18.0.0/15")
	TestNet6 = netip.MustParsePrefix("2001:db8::/32")
)

// Lab is a set of namespaces and processes that Close removes.
type Lab struct {
	// Prefix is unique to this run and starts every namespace name.
	Prefix string
	// Dir is a scratch directory removed by Close.
	Dir string
	// Python is the python3 that commands named "python3" run: Debian's
	// /usr/bin/python3 when there is one, which starts several times faster
	// than a version manager's shim on PATH.
	Python string

	mu    sync.Mutex
	names []string // namespaces, in creation order
	procs []*Proc
}

// New makes an empty lab with a fresh prefix ("fg" + 6 hex digits) and a
// scratch directory. The caller must run as root.
func New() (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("netlab: must run as root (network namespaces and iptables)")
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("netlab: %s not found: %w", tool, err)
		}
	}
	b := make([]byte, 3)
	rand.Read(b)
	prefix := "fg" + hex.EncodeToString(b)
	dir, err := os.MkdirTemp("", prefix+"-")
	if err != nil {
		return nil, fmt.Errorf("netlab: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("netlab: %w", err)
	}
	python := "python3"
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		python = "/usr/bin/python3"
	}
	return &Lab{Prefix: prefix, Dir: dir, Python: python}, nil
}

// NS is one network namespace of a lab.
type NS struct {
	lab  *Lab
	Name string // full name, e.g. fg1a2b3c-client
}

// AddNS creates namespace Prefix-role with loopback up.
func (l *Lab) AddNS(role string) (*NS, error) {
	name := l.Prefix + "-" + role
	if _, err := run(10*time.Second, nil, "ip", "netns", "add", name); err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.names = append(l.names, name)
	l.mu.Unlock()
	ns := &NS{lab: l, Name: name}
	if _, err := ns.Run("ip", "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	return ns, nil
}

// Link joins a and b with a veth pair named ifA in a and ifB in b, and
// gives each end its addresses (CIDR notation; each must lie in TestNet4 or
// TestNet6). The pair is created inside a: it never exists in the root
// namespace.
func Link(a *NS, ifA string, addrsA []string, b *NS, ifB string, addrsB []string) error {
	if _, err := a.Run("ip", "link", "add", ifA, "type", "veth", "peer", "name", ifB, "netns", b.Name); err != nil {
		return err
	}
	for _, side := range []struct {
		ns    *NS
		ifc   string
		addrs []string
	}{{a, ifA, addrsA}, {b, ifB, addrsB}} {
		for _, cidr := range side.addrs {
			p, err := netip.ParsePrefix(cidr)
			if err != nil {
				return fmt.Errorf("netlab: address %q: %w", cidr, err)
			}
			if !TestNet4.Contains(p.Addr()) && !TestNet6.Contains(p.Addr()) {
				return fmt.Errorf("netlab: address %s is outside %s and %s", p, TestNet4, TestNet6)
			}
			args := []string{"addr", "add", cidr, "dev", side.ifc}
			if p.Addr().Is6() {
				args = []string{"-6", "addr", "add", cidr, "dev", side.ifc, "nodad"}
			}
			if _, err := side.ns.Run("ip", args...); err != nil {
				return err
			}
		}
		if _, err := side.ns.Run("ip", "link", "set", side.ifc, "up"); err != nil {
			return err
		}
	}
	return nil
}

// program maps the name of a program to run to its path (see Lab.Python).
func (ns *NS) program(name string) string {
	if name == "python3" {
		return ns.lab.Python
	}
	return name
}

// Command returns a command that runs inside ns.
func (ns *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	name = ns.program(name)
	all := append([]string{"netns", "exec", ns.Name, name}, args...)
	return exec.CommandContext(ctx, "ip", all...)
}

// Run runs a command inside ns, bounded to 60 seconds, and returns its
// standard output; the error includes standard error.
func (ns *NS) Run(name string, args ...string) (string, error) {
	name = ns.program(name)
	all := append([]string{"netns", "exec", ns.Name, name}, args...)
	return run(60*time.Second, nil, "ip", all...)
}

// Exec runs a command inside ns, bounded to d, with stdin (may be nil),
// and returns its standard output and standard error.
func (ns *NS) Exec(d time.Duration, stdin []byte, name string, args ...string) (stdout, stderr string, err error) {
	name = ns.program(name)
	all := append([]string{"netns", "exec", ns.Name, name}, args...)
	return run2(d, stdin, "ip", all...)
}

// Script runs each line of script (iptables rules and the like) in ns,
// stopping at the first error. Empty lines and lines starting with # are
// skipped.
func (ns *NS) Script(script string) error {
	for line := range strings.Lines(script) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, err := ns.Run("sh", "-c", line); err != nil {
			return err
		}
	}
	return nil
}

// Proc is a process started in a namespace.
type Proc struct {
	Cmd    *exec.Cmd
	Stdout *syncBuffer
	Stderr *syncBuffer
	done   chan struct{}
	err    error
}

// Start starts a long-running process in ns; Close kills it. Its output is
// kept in memory.
func (ns *NS) Start(name string, args ...string) (*Proc, error) {
	name = ns.program(name)
	all := append([]string{"netns", "exec", ns.Name, name}, args...)
	cmd := exec.Command("ip", all...)
	p := &Proc{Cmd: cmd, Stdout: &syncBuffer{}, Stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.Stdout, p.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("netlab: starting %s in %s: %w", name, ns.Name, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	ns.lab.mu.Lock()
	ns.lab.procs = append(ns.lab.procs, p)
	ns.lab.mu.Unlock()
	return p, nil
}

// PID is the process ID ("ip netns exec" execs the program in place).
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process and waits up to d for it to exit; then it
// kills its process group.
func (p *Proc) Signal(sig syscall.Signal, d time.Duration) error {
	if p.Exited() {
		return p.err
	}
	p.Cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
	}
	syscall.Kill(-p.PID(), syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
	return fmt.Errorf("netlab: pid %d did not exit within %s of %s", p.PID(), d, sig)
}

// Close kills every process the lab started (by PID), deletes its
// namespaces and its scratch directory. It reports what it could not remove.
func (l *Lab) Close() error {
	l.mu.Lock()
	procs, names := l.procs, l.names
	l.procs, l.names = nil, nil
	l.mu.Unlock()
	var errs []error
	for _, p := range procs {
		if !p.Exited() {
			syscall.Kill(-p.PID(), syscall.SIGKILL)
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
				errs = append(errs, fmt.Errorf("netlab: pid %d survived SIGKILL", p.PID()))
			}
		}
	}
	for i := len(names) - 1; i >= 0; i-- {
		// Kill whatever else still runs in the namespace, by PID.
		if out, err := run(10*time.Second, nil, "ip", "netns", "pids", names[i]); err == nil {
			for _, f := range strings.Fields(out) {
				var pid int
				if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if _, err := run(10*time.Second, nil, "ip", "netns", "del", names[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if l.Dir != "" {
		if err := os.RemoveAll(l.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// run runs a command bounded to d and returns its standard output; the
// error includes standard error.
func run(d time.Duration, stdin []byte, name string, args ...string) (string, error) {
	stdout, stderr, err := run2(d, stdin, name, args...)
	if err != nil {
		return stdout, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr))
	}
	return stdout, nil
}

// run2 runs a command bounded to d (then its process group is killed) and
// returns its standard output and standard error.
func run2(d time.Duration, stdin []byte, name string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var outb, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outb, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("killed after %s: %w", d, err)
	}
	return outb.String(), errb.String(), err
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
