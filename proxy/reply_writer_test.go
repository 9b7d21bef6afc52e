package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// pipeWriter is a replyWriter on one end of a net.Pipe, which buffers
// nothing: a write blocks until the other end reads it.
func pipeWriter(t *testing.T) (*replyWriter, net.Conn, func() []error) {
	t.Helper()
	ours, theirs := net.Pipe()
	t.Cleanup(func() { theirs.Close() })
	var mu sync.Mutex
	var failures []error
	w := newReplyWriter(ours, time.Minute, func(err error) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, err)
	})
	go w.run()
	return w, theirs, func() []error {
		mu.Lock()
		defer mu.Unlock()
		return append([]error(nil), failures...)
	}
}

// TestReplyWriterOrder: replies go out in the order queued, then a
// half-close, then the last reply of finish, then the connection closes.
func TestReplyWriterOrder(t *testing.T) {
	w, client, failures := pipeWriter(t)
	for _, r := range []string{"220 a\r\n", "331 b\r\n", "230 c\r\n"} {
		if err := w.write([]byte(r)); err != nil {
			t.Fatal(err)
		}
	}
	w.finish([]byte("421 bye\r\n"), time.Minute)
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "220 a\r\n331 b\r\n230 c\r\n421 bye\r\n" {
		t.Errorf("client read %q, %v", got, err)
	}
	w.wait()
	if f := failures(); len(f) != 0 {
		t.Errorf("failed called: %v", f)
	}
	if err := w.write([]byte("200 late\r\n")); err == nil {
		t.Error("write after finish succeeded")
	}
}

// TestReplyWriterFinishBounded: a client that reads nothing holds the
// writer, and so the connection, no longer than finish says.
func TestReplyWriterFinishBounded(t *testing.T) {
	w, _, failures := pipeWriter(t)
	w.write([]byte("150 a reply nobody reads\r\n"))
	time.Sleep(50 * time.Millisecond) // the writer is blocked in Write
	start := time.Now()
	w.finish([]byte("421 bye\r\n"), 200*time.Millisecond)
	done := make(chan struct{})
	go func() { w.wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the writer still runs 5s after finish(200ms)")
	}
	t.Logf("closed %s after finish", time.Since(start).Round(time.Millisecond))
	if f := failures(); len(f) != 0 {
		t.Errorf("failed called after finish: %v", f)
	}
}

// TestReplyWriterNotReading: replies that pile up past
// maxQueuedReplyBytes end the writer (and the session), instead of taking
// memory without bound.
func TestReplyWriterNotReading(t *testing.T) {
	w, _, failures := pipeWriter(t)
	line := make([]byte, 64<<10)
	var err error
	for i := 0; i < 2*maxQueuedReplyBytes/len(line) && err == nil; i++ {
		err = w.write(line)
	}
	if !errors.Is(err, errClientNotReading) {
		t.Fatalf("write past the bound = %v, want errClientNotReading", err)
	}
	w.wait()
	if f := failures(); len(f) != 1 || !errors.Is(f[0], errClientNotReading) {
		t.Errorf("failed called with %v, want errClientNotReading once", f)
	}
}
