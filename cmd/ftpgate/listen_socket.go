package main

import (
	"errors"
	"net"
	"sync"
	"time"
)

// listenSocket is one listening socket that one proxy.Server after another
// accepts on. A reload that keeps a listener's address hands the socket
// from the retiring Server to its successor (handTo) without closing it:
// the address is never unbound, and a connection that arrives meanwhile
// waits for the successor instead of being refused.
//
// One goroutine (acceptLoop) accepts, and hands each connection to the
// current view; a view is what a Server takes as its net.Listener.
type listenSocket struct {
	ln   net.Listener
	done chan struct{} // closed when acceptLoop has returned

	mu  sync.Mutex
	cur *socketView // gets the connections; nil: none does
	err error       // why acceptLoop returned
}

// newListenSocket starts accepting on ln; no connection is handed out
// before the first handTo.
func newListenSocket(ln net.Listener) *listenSocket {
	s := &listenSocket{ln: ln, done: make(chan struct{})}
	go s.acceptLoop()
	return s
}

// handTo returns a new view of the socket, which gets every connection
// from now on. The previous view is closed: its Accept returns
// net.ErrClosed, which retires its Server.
func (s *listenSocket) handTo() *socketView {
	v := &socketView{s: s, conns: make(chan net.Conn), closed: make(chan struct{})}
	s.mu.Lock()
	old := s.cur
	s.cur = v
	s.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return v
}

// Close closes the socket; every view's Accept returns.
func (s *listenSocket) Close() error {
	err := s.ln.Close()
	<-s.done
	return err
}

// acceptLoop accepts until the socket fails or is closed, backing off on
// temporary errors as net/http does.
func (s *listenSocket) acceptLoop() {
	defer close(s.done)
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && !errors.Is(err, net.ErrClosed) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			return
		}
		delay = 0
		if !s.deliver(c) {
			c.Close()
		}
	}
}

// deliver hands c to the current view, once its Server accepts; it
// reports false if no view takes connections.
func (s *listenSocket) deliver(c net.Conn) bool {
	for {
		s.mu.Lock()
		v := s.cur
		s.mu.Unlock()
		if v == nil {
			return false
		}
		select {
		case v.conns <- c:
			return true
		case <-v.closed: // retired or closed meanwhile: the next one
		}
	}
}

// socketView is a net.Listener on a listenSocket for one Server.
type socketView struct {
	s      *listenSocket
	conns  chan net.Conn // unbuffered: a connection is handed over only to Accept
	closed chan struct{}
	once   sync.Once
}

// Accept returns the next connection for this view, or net.ErrClosed once
// the view is closed or handed over, or the socket's error.
func (v *socketView) Accept() (net.Conn, error) {
	select {
	case c := <-v.conns:
		return c, nil
	case <-v.closed:
		return nil, net.ErrClosed
	case <-v.s.done:
		v.s.mu.Lock()
		err := v.s.err
		v.s.mu.Unlock()
		return nil, err
	}
}

// Close ends this view (its Accept returns net.ErrClosed); it leaves the
// socket open.
func (v *socketView) Close() error {
	v.once.Do(func() { close(v.closed) })
	v.s.mu.Lock()
	if v.s.cur == v {
		v.s.cur = nil
	}
	v.s.mu.Unlock()
	return nil
}

func (v *socketView) Addr() net.Addr { return v.s.ln.Addr() }
