package proxy

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// maxQueuedReplyBytes bounds the replies waiting for a client that does not
// read them: past it, the session ends.
const maxQueuedReplyBytes = 1 << 20

// errClientNotReading ends a session whose replies pile up unread.
var errClientNotReading = errors.New("client does not read its replies")

// replyWriter writes a session's replies to its client, in the order they
// were queued, from a goroutine of its own (run). Nothing else writes to the
// client, and nothing writes to it with the session's lock held: a client
// that stops reading holds up its own replies, never the session's other
// goroutines, its shutdown or the server's drain.
//
// Lifetime: run returns, and the connection is closed, after finish (once
// what was queued before it is written, or its time is up), after a write
// fails or times out, or when the queue grows past maxQueuedReplyBytes.
// Then failed is called once with why, unless finish asked for the end.
type replyWriter struct {
	c       net.Conn
	timeout time.Duration // for each write: the client must read within it
	failed  func(error)
	done    chan struct{} // closed when run has returned

	mu        sync.Mutex
	wake      *sync.Cond
	queue     [][]byte
	queued    int       // bytes in queue
	halfClose bool      // once the queue is written, close the write side
	finishing bool      // once the queue is written, close
	finishBy  time.Time // set with finishing: no write goes on past it
	err       error
	writing   bool // a write is in progress (outside mu)
	switching bool // switchConn holds the connection: run waits
}

func newReplyWriter(c net.Conn, timeout time.Duration, failed func(error)) *replyWriter {
	w := &replyWriter{c: c, timeout: timeout, failed: failed, done: make(chan struct{})}
	w.wake = sync.NewCond(&w.mu)
	return w
}

// write queues b (copied). It returns an error if the writer has ended or
// the client is too far behind (then the writer ends).
func (w *replyWriter) write(b []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil || w.finishing {
		return fmt.Errorf("writing to client: %w", net.ErrClosed)
	}
	if w.queued+len(b) > maxQueuedReplyBytes {
		w.err = fmt.Errorf("%w: %d bytes queued", errClientNotReading, w.queued)
		w.c.Close() // unblocks a write in progress
		w.wake.Broadcast()
		return w.err
	}
	w.queue = append(w.queue, append([]byte(nil), b...))
	w.queued += len(b)
	w.wake.Broadcast()
	return nil
}

// closeWrite half-closes the connection once everything queued so far is
// written: the client sees EOF while it may still send.
func (w *replyWriter) closeWrite() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.halfClose = true
	w.wake.Broadcast()
}

// finish queues last (if not nil), and closes the connection once the
// queue is written, or within d at the latest: each write gets the
// earlier of its own deadline and that one. It does not wait; see wait.
func (w *replyWriter) finish(last []byte, d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.finishing && w.err == nil && last != nil {
		w.queue = append(w.queue, append([]byte(nil), last...))
	}
	if !w.finishing {
		w.finishing = true
		w.finishBy = time.Now().Add(d)
		// Also cuts short a write in progress.
		w.c.SetWriteDeadline(w.finishBy)
	}
	w.wake.Broadcast()
}

// switchConn replaces the connection (AUTH TLS: the plain connection by a
// TLS one over it): once every reply queued so far is written, it calls fn
// with the connection, with no write in progress or starting until fn
// returns (fn runs the TLS handshake on it), and writes to what fn returns
// from then on. If fn fails, the writer ends with its error.
func (w *replyWriter) switchConn(fn func(net.Conn) (net.Conn, error)) error {
	w.mu.Lock()
	for (len(w.queue) > 0 || w.writing) && w.err == nil && !w.finishing {
		w.wake.Wait()
	}
	if w.err != nil || w.finishing {
		w.mu.Unlock()
		return fmt.Errorf("switching the client connection: %w", net.ErrClosed)
	}
	w.switching = true
	old := w.c
	w.mu.Unlock()
	c, err := fn(old)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.switching = false
	if err != nil {
		if w.err == nil {
			w.err = err
		}
	} else {
		w.c = c
	}
	w.wake.Broadcast()
	return err
}

// conn returns the connection the writer writes to.
func (w *replyWriter) conn() net.Conn {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.c
}

// wait blocks until run has returned and the connection is closed.
func (w *replyWriter) wait() { <-w.done }

// run is the writer goroutine.
func (w *replyWriter) run() {
	defer close(w.done)
	defer func() {
		w.mu.Lock()
		c := w.c
		w.mu.Unlock()
		c.Close()
	}()
	for {
		w.mu.Lock()
		for (len(w.queue) == 0 && !w.halfClose && !w.finishing || w.switching) && w.err == nil {
			w.wake.Wait()
		}
		if w.err != nil {
			err := w.err
			w.mu.Unlock()
			w.failed(err)
			return
		}
		if len(w.queue) == 0 {
			if w.halfClose {
				w.halfClose = false
				c := w.c
				w.mu.Unlock()
				closeWrite(c)
				continue
			}
			w.mu.Unlock() // finishing, all written
			return
		}
		b := w.queue[0]
		w.queue[0] = nil
		w.queue = w.queue[1:]
		w.queued -= len(b)
		// Under mu, so that finish's deadline is never overridden.
		deadline := time.Now().Add(w.timeout)
		if w.finishing && w.finishBy.Before(deadline) {
			deadline = w.finishBy
		}
		c := w.c
		c.SetWriteDeadline(deadline)
		w.writing = true
		w.mu.Unlock()

		_, err := c.Write(b)
		w.mu.Lock()
		w.writing = false
		w.wake.Broadcast() // switchConn may wait for the write to end
		w.mu.Unlock()
		if err != nil {
			w.mu.Lock()
			ended := w.finishing
			if w.err == nil {
				w.err = fmt.Errorf("writing to client: %w", err)
			}
			err = w.err
			w.mu.Unlock()
			if !ended {
				w.failed(err)
			}
			return
		}
	}
}
