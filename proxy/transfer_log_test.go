package proxy

import (
	"slices"
	"sync"
	"testing"
)

// transferRecorder collects what Server.OnTransfer receives.
type transferRecorder struct {
	mu  sync.Mutex
	got []Transfer
}

func (r *transferRecorder) record(t Transfer) {
	r.mu.Lock()
	r.got = append(r.got, t)
	r.mu.Unlock()
}

func (r *transferRecorder) all() []Transfer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// TestTransferLine: every transfer command on the relay path gets one
// transfer line and one record, with the user, the command and its path
// as separate fields, the direction, the bytes, the final reply code and
// the outcome; a refused command closes its data port at once.
func TestTransferLine(t *testing.T) {
	rec := new(transferRecorder)
	h := newHarness(t, func(s *Server) { s.OnTransfer = rec.record })
	down := randomBytes(21, fileSize)
	up := randomBytes(22, fileSize/2)
	h.fake.SetFile("dir/down file.bin", down)

	c := h.dial()
	c.login()
	c.cmd("TYPE I", 200)
	sameContent(t, "RETR", c.retr("EPSV", "dir/down file.bin"), down)
	c.stor("PORT", "up.bin", up)
	c.negotiate("PASV")
	c.cmd("RETR missing", 550)
	if !eventually(ioTimeout, func() bool { return h.srv.ClientPorts.InUse()+h.srv.ServerPorts.InUse() == 0 }) {
		t.Error("the data ports of a refused RETR are still in use")
	}
	c.quit()
	h.sessionsEnded()

	want := []Transfer{
		{Command: "RETR", Path: "dir/down file.bin", Direction: "download", Mode: "passive", BytesToClient: int64(len(down)), Code: 226, Outcome: "ok"},
		{Command: "STOR", Path: "up.bin", Direction: "upload", Mode: "active", BytesToServer: int64(len(up)), Code: 226, Outcome: "ok"},
		{Command: "RETR", Path: "missing", Direction: "download", Mode: "passive", Code: 550, Outcome: "refused"},
	}
	got := rec.all()
	if len(got) != len(want) {
		t.Fatalf("%d transfer records, want %d: %+v", len(got), len(want), got)
	}
	// A record comes once its data connection has ended and its reply
	// was sent: not always in the order of the commands.
	slices.SortFunc(got, func(a, b Transfer) int { return a.Start.Compare(b.Start) })
	for i, w := range want {
		g := got[i]
		if g.Command != w.Command || g.Path != w.Path || g.Direction != w.Direction || g.Mode != w.Mode ||
			g.BytesToClient != w.BytesToClient || g.BytesToServer != w.BytesToServer ||
			g.Code != w.Code || g.Outcome != w.Outcome {
			t.Errorf("record %d: got %+v\nwant %+v", i, g, w)
		}
		if g.User != "anonymous" || g.Listener != t.Name() || g.Client.Addr().String() != "127.0.0.1" ||
			g.DataPath != RelayPath || g.Start.IsZero() || g.Seconds < 0 {
			t.Errorf("record %d: user %q, listener %q, client %v, path %v, start %v, seconds %v",
				i, g.User, g.Listener, g.Client, g.DataPath, g.Start, g.Seconds)
		}
	}
	h.waitLog("msg=transfer", "user=anonymous command=RETR", `path="dir/down file.bin" direction=download data_path=relay mode=passive`,
		"bytes=1048576", "code=226 outcome=ok")
	h.waitLog("msg=transfer", "command=STOR path=up.bin direction=upload", "bytes=524288", "code=226 outcome=ok")
	h.waitLog("msg=transfer", "command=RETR path=missing", "code=550 outcome=refused")
	if h.logged("guest") { // login() sends PASS guest
		t.Error("a transfer line carries the password")
	}
}

// TestTransferLineSessionEnds: a transfer whose session ends before the
// final reply (the server vanishes mid-transfer) still gets its line, with
// code 0.
func TestTransferLineSessionEnds(t *testing.T) {
	rec := new(transferRecorder)
	h := newHarness(t, func(s *Server) { s.OnTransfer = rec.record })
	c := h.dial()
	c.login()
	p := c.negotiate("PASV")
	c.send("RETR " + vanishFile)
	if dc, err := p.tryOpen(); err == nil {
		readAll(dc)
		dc.Close()
	}
	c.expect(150)
	c.expectClosed()
	c.c.Close()
	h.sessionsEnded()
	got := rec.all()
	if len(got) != 1 || got[0].Code != 0 || got[0].Outcome != "aborted" || got[0].Path != vanishFile {
		t.Errorf("records %+v, want one RETR %s with code 0 and outcome aborted", got, vanishFile)
	}
	h.waitLog("msg=transfer", "command=RETR path="+vanishFile, "code=0 outcome=aborted")
}
