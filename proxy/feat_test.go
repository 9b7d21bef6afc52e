package proxy

import (
	"slices"
	"testing"
)

// TestFeat: the TLS features disappear from the server's FEAT list (ftpgate
// refuses AUTH), EPRT is added (ftpgate answers it whatever the server
// supports), the rest passes through byte for byte.
func TestFeat(t *testing.T) {
	h := newHarness(t)
	c := h.dial()
	c.login()
	c.send("FEAT")
	var got []string
	for {
		rl, err := c.rr.Next()
		if err != nil {
			t.Fatalf("reading FEAT reply: %v (so far %q)", err, got)
		}
		got = append(got, string(rl.Raw))
		if rl.Last {
			break
		}
	}
	want := []string{"211-Features:\r\n", " EPSV\r\n", " MDTM\r\n", " PASV\r\n", " REST STREAM\r\n",
		" SIZE\r\n", " TVFS\r\n", " UTF8\r\n", " EPRT\r\n", "211 End\r\n"}
	if !slices.Equal(got, want) {
		t.Errorf("FEAT reply:\n got %q\nwant %q", got, want)
	}
	c.cmd("NOOP", 200)
	c.quit()
	h.sessionsEnded()
}

// TestAuthRefused: AUTH never reaches the server; the client gets 534 and
// goes on in the clear.
func TestAuthRefused(t *testing.T) {
	h := newHarness(t)
	c := h.dial()
	c.expect(220)
	c.cmd("AUTH TLS", 534)
	c.cmd("USER anonymous", 331)
	c.quit()
	h.sessionsEnded()
	if slices.Contains(h.verbs(), "AUTH") {
		t.Errorf("the server received AUTH: %v", h.verbs())
	}
	h.waitLog("command refused", "reason=tls")
}
