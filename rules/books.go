package rules

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// books is what a backend of kernel elements with timeouts knows of its
// open pinholes and of the elements they hold (NftablesBackend; Netlink
// keeps the same books in its own fields). The caller serializes every
// method with its own lock.
type books struct {
	log  *slog.Logger
	m    *metrics
	open map[*nlPinhole]struct{}
	refs map[string]*sharedElement // by element.key()
}

func newPinholeBooks(log *slog.Logger, m *metrics) books {
	return books{log: log, m: m, open: map[*nlPinhole]struct{}{}, refs: map[string]*sharedElement{}}
}

// forget stops every pinhole's timer and drops it from the books, because
// the elements are about to be replaced or removed.
func (b *books) forget() {
	for e := range b.open {
		e.timer.Stop()
	}
	clear(b.open)
	clear(b.refs)
	b.m.active.Set(0)
}

// install adds els for e, all or none, and puts e on the books; the
// caller starts e's timer. An element another open pinhole holds is added
// again only if e outlives it, to move its kernel timeout later; a map
// element held with another value is a conflict (ErrConflict).
func (b *books) install(e *nlPinhole, els []element) error {
	for _, el := range els {
		if sh := b.refs[el.key()]; sh != nil && sh.value != el.value() {
			return b.conflict(e.p, el)
		}
	}
	until := time.Now().Add(e.ttl)
	for _, el := range els {
		sh := b.refs[el.key()]
		if sh == nil || until.After(sh.until) {
			if err := el.add(e.ttl, sh != nil); err != nil {
				if rerr := b.removeElements(e); rerr != nil {
					err = errors.Join(err, fmt.Errorf("rolling back (the kernel expires the rest within %s): %w", e.ttl, rerr))
				}
				return err
			}
		}
		if sh == nil {
			sh = &sharedElement{value: el.value()}
			b.refs[el.key()] = sh
		}
		sh.holders++
		if until.After(sh.until) {
			sh.until = until
		}
		e.elements = append(e.elements, el)
	}
	b.open[e] = struct{}{}
	b.m.active.Set(float64(len(b.open)))
	return nil
}

// conflict logs and counts a pinhole refused because another holds el
// with another value, and returns its error.
func (b *books) conflict(p Pinhole, el element) error {
	var other string
	for o := range b.open {
		for _, oe := range o.elements {
			if oe.key() == el.key() {
				other = o.p.String()
			}
		}
	}
	b.m.conflicts.Inc()
	b.log.Warn("pinhole refused: another one diverts the same connections elsewhere",
		"pinhole", p.String(), "other", other, "element", el.key())
	return fmt.Errorf("%w: %s (%s)", ErrConflict, other, el.key())
}

// removeElements deletes e's elements, last added first, each from the
// kernel only if no other open pinhole holds it; it goes on past errors.
func (b *books) removeElements(e *nlPinhole) error {
	var errs []error
	for i := len(e.elements) - 1; i >= 0; i-- {
		el := e.elements[i]
		k := el.key()
		if sh := b.refs[k]; sh != nil {
			sh.holders--
			if sh.holders > 0 {
				continue
			}
		}
		delete(b.refs, k)
		if err := el.del(); err != nil {
			errs = append(errs, err)
		}
	}
	e.elements = nil
	return errors.Join(errs...)
}

// drop takes e off the books and deletes its elements. It returns false
// if e was not open.
func (b *books) drop(e *nlPinhole) (bool, error) {
	if _, ok := b.open[e]; !ok {
		return false, nil
	}
	delete(b.open, e)
	e.timer.Stop()
	b.m.active.Set(float64(len(b.open)))
	return true, b.removeElements(e)
}
