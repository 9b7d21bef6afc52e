package proxy

import (
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// receivedBytes returns how many bytes the kernel has received on c's TCP
// socket (tcp_info's tcpi_bytes_received), through a TLS layer if there is
// one. It works while io.Copy splices c, where no byte passes through user
// space to be counted; ok is false where the kernel does not say.
func receivedBytes(c net.Conn) (n uint64, ok bool) {
	if tc, isTLS := c.(*tls.Conn); isTLS {
		c = tc.NetConn()
	}
	tcp, isTCP := c.(*net.TCPConn)
	if !isTCP {
		return 0, false
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || gerr != nil {
		return 0, false
	}
	return info.Bytes_received, true
}

// idleWatch aborts a relayed data link whose two connections have
// received no byte for DataIdle: a peer that stalls (stops reading, or
// stops sending without closing) would otherwise hold its data port, its
// pinhole and the transfer until TCP gives up, which can take hours.
type idleWatch struct {
	fired atomic.Bool
	once  sync.Once
	stop  chan struct{}
	done  chan struct{}
}

// watchIdle starts watching cc and sc; it is off (returns nil) without
// DataIdle or if the kernel does not count received bytes.
func (l *dataLink) watchIdle(cc, sc net.Conn) *idleWatch {
	d := l.ss.srv.DataIdle
	if d <= 0 {
		return nil
	}
	total := func() (uint64, bool) {
		a, okA := receivedBytes(cc)
		b, okB := receivedBytes(sc)
		return a + b, okA && okB
	}
	last, ok := total()
	if !ok {
		return nil
	}
	w := &idleWatch{stop: make(chan struct{}), done: make(chan struct{})}
	tick := min(max(d/4, 100*time.Millisecond), 5*time.Second)
	go func() {
		defer close(w.done)
		t := time.NewTicker(tick)
		defer t.Stop()
		progress := time.Now()
		for {
			select {
			case <-w.stop:
				return
			case now := <-t.C:
				n, ok := total()
				switch {
				case !ok:
					return // a connection is closed: the relay ends anyway
				case n != last:
					last, progress = n, now
				case now.Sub(progress) >= d:
					w.fired.Store(true)
					l.ss.log.Warn("data connection idle: closed", "link", l.id, "idle_seconds", d.Seconds())
					abort(cc)
					abort(sc)
					return
				}
			}
		}
	}()
	return w
}

// halt stops the watch: one direction has ended cleanly, and the other
// is bounded by data_timeout (copyData).
func (w *idleWatch) halt() {
	if w != nil {
		w.once.Do(func() { close(w.stop) })
	}
}

// end stops the watch, waits for it, and reports whether it closed the
// link.
func (w *idleWatch) end() bool {
	if w == nil {
		return false
	}
	w.halt()
	<-w.done
	return w.fired.Load()
}
