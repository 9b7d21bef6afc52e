package config

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Error is one problem with a configuration. Parse, Load and Validate
// return them joined with errors.Join; errors.As finds the first, and the
// joined error's Unwrap() []error lists them all.
type Error struct {
	// Line is the line of the file the problem is on: that of the offending
	// key or list item or, when the key is absent (a value left to its
	// default, a required key left out), that of the mapping or list item
	// that lacks it. 0 when there is no file (Validate on a Config built in
	// Go) or no line to name (an empty file).
	Line int
	// Path names the field concerned, as in
	// "listeners[0] (public): data.client_ports" or "limits.max_sessions";
	// empty for the file as a whole.
	Path string
	// Err says what is wrong.
	Err error

	// key is the field in the form the file's index uses:
	// "listeners[0].data.client_ports".
	key string
	// also are other fields (in key's form) whose line stands for key's
	// when key is absent from the file: "limits.max_sessions" for a
	// max_sessions_per_client left to its default but above it.
	also []string
}

// Error returns "line 7: listeners[0] (public): data.client_ports: 80-90
// starts below port 1024", without "line N: " when Line is 0 and without
// the path when Path is empty.
func (e *Error) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

// fieldError is a problem with one field of a section (a listener, or the
// top level): field is "data.client_ports" within a listener,
// "limits.max_sessions" at the top level; also are as in Error, in the
// same form as field.
type fieldError struct {
	field string
	err   error
	also  []string
}

// problems collects fieldErrors.
type problems []fieldError

func (p *problems) add(field string, err error, also ...string) {
	*p = append(*p, fieldError{field, err, also})
}

// topError places a top-level fieldError.
func topError(fe fieldError) *Error {
	return &Error{Path: fe.field, Err: fe.err, key: fe.field, also: fe.also}
}

// listenerError places fe, a problem of the listener at index i named
// name.
func listenerError(i int, name string, fe fieldError) *Error {
	key := listenerKey(i)
	e := &Error{Path: listenerPath(i, name) + ": " + fe.field, Err: fe.err, key: joinKey(key, fe.field)}
	for _, a := range fe.also {
		e.also = append(e.also, joinKey(key, a))
	}
	return e
}

// listenerKey is the index key of the listener at index i.
func listenerKey(i int) string {
	return fmt.Sprintf("listeners[%d]", i)
}

// joinKey appends a mapping key to an index key: "limits" + "max_sessions"
// is "limits.max_sessions".
func joinKey(key, k string) string {
	if key == "" {
		return k
	}
	return key + "." + k
}

// parentKey returns the key of the mapping or list holding key:
// "listeners[0].data" for "listeners[0].data.client_ports", "listeners" for
// "listeners[0]", "" for a top-level key.
func parentKey(key string) string {
	i := strings.LastIndexAny(key, ".[")
	if i < 0 {
		return ""
	}
	return key[:i]
}

// joinErrors joins errs with errors.Join, nil if there are none.
func joinErrors(errs []*Error) error {
	if len(errs) == 0 {
		return nil
	}
	list := make([]error, len(errs))
	for i, e := range errs {
		list[i] = e
	}
	return errors.Join(list...)
}

// sortByLine orders errs by line, stably: the problems of the file as a
// whole (no line) first, and problems on one line in the order they were
// found (decoding first, then the checks in Validate's order).
func sortByLine(errs []*Error) {
	slices.SortStableFunc(errs, func(a, b *Error) int { return cmp.Compare(a.Line, b.Line) })
}
