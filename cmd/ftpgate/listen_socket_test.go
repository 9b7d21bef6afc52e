package main

import (
	"errors"
	"net"
	"testing"
	"time"
)

// accepted returns the next connection of v, or fails after 2s.
func accepted(t *testing.T, v net.Listener) net.Conn {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := v.Accept(); ch <- res{c, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Accept: %v", r.err)
		}
		return r.c
	case <-time.After(2 * time.Second):
		t.Fatal("no connection accepted within 2s")
	}
	return nil
}

// TestListenSocketHandover: a reload hands a listener's socket to the
// successor; the retiring view's Accept returns net.ErrClosed (its Server
// retires), and a connection made in between waits for the successor
// instead of being refused.
func TestListenSocketHandover(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sock := newListenSocket(raw)
	first := sock.handTo()
	c1, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	accepted(t, first).Close()

	retired := make(chan error, 1)
	go func() { _, err := first.Accept(); retired <- err }()
	second := sock.handTo()
	select {
	case err := <-retired:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("the retiring view's Accept = %v, want net.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the retiring view's Accept did not return")
	}
	// Connected while no Server accepts on the successor yet.
	c2, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatalf("dialing during the handover: %v", err)
	}
	defer c2.Close()
	time.Sleep(100 * time.Millisecond)
	accepted(t, second).Close()

	second.Close()
	if err := sock.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := second.Accept(); err == nil {
		t.Error("Accept after Close succeeded")
	}
	if _, err := net.Dial("tcp", raw.Addr().String()); err == nil {
		t.Error("the socket still accepts after Close")
	}
}
