package rules

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"syscall"
	"testing"
)

func TestErrorReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("opening pinhole: %w", ErrConflict), "conflict"},
		{fmt.Errorf("adding element: %w", syscall.EPERM), "permission"},
		{errors.New("iptables: exit status 4: iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)"), "permission"},
		{errors.New("iptables: exit status 4: Another app is currently holding the xtables lock; still -1s 0us time ahead to have a chance to grab the lock..."), "busy"},
		{errors.New("iptables: exit status 1: iptables: No chain/target/match by that name."), "missing"},
		{errors.New("iptables: Bad rule (does a matching rule exist in that chain?)."), "missing"},
		{fmt.Errorf("deleting element: %w", syscall.ENOENT), "missing"},
		{fmt.Errorf("netlink: %w", context.DeadlineExceeded), "timeout"},
		{fmt.Errorf("%w: IPv6: no ip6tables", ErrFamily), "unavailable"},
		{&exec.ExitError{}, "other"},
	} {
		got := errorReason(tc.err)
		if got != tc.want {
			t.Errorf("errorReason(%v) = %q, want %q", tc.err, got, tc.want)
		}
		if !slices.Contains(ErrorReasons, got) {
			t.Errorf("errorReason(%v) = %q, not in ErrorReasons", tc.err, got)
		}
	}
}
