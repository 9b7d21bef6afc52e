package proxy

import (
	"net/netip"
	"sync"
	"time"
)

// Transfer is the audit record of one transfer command (RETR, STOR, APPE,
// STOU, LIST, NLST, MLSD): what was asked, by whom, what moved and how it
// ended. ftpgate logs it as the "transfer" line, on both data paths, once
// the data connection has ended and the client has had the command's
// final reply (or the session has ended without one), and hands it to
// Server.OnTransfer.
type Transfer struct {
	Listener string
	Session  uint64
	Client   netip.AddrPort
	// User is the name the client logged in with (USER); never the
	// password. Empty if it sent none.
	User string
	// Command is the transfer verb; Path its argument as the client sent
	// it (empty for a bare LIST).
	Command, Path string
	// Direction is "download" (RETR), "upload" (STOR, APPE, STOU) or
	// "listing" (LIST, NLST, MLSD).
	Direction string
	DataPath  DataPath
	// Mode is "passive" (PASV/EPSV) or "active" (PORT/EPRT).
	Mode string
	// ASCII is set if the client's last TYPE was A (ASCII), not I.
	ASCII bool
	// ClientData and ServerData are the peers' data addresses, on the
	// relay path once connected.
	ClientData, ServerData string
	// BytesToClient and BytesToServer are what ftpgate copied; on the
	// kernel path, where the data never enters ftpgate, both are zero.
	BytesToClient, BytesToServer int64
	// Start is when the command arrived; Seconds runs from then until
	// the data connection had ended and the final reply was sent.
	Start   time.Time
	Seconds float64
	// Code is the final reply the client got for the command: the
	// server's, or ftpgate's own 426 when the data never reached the
	// client. 0 if the session ended first.
	Code int
	// Outcome is how the data connection ended: "ok", "aborted", "idle"
	// (limits.data_idle_timeout), "failed" (never connected) on the relay
	// path; "forwarded" or "expired" on the kernel path.
	Outcome string
}

// Bytes is the number of bytes that went the transfer's way.
func (t Transfer) Bytes() int64 {
	if t.Direction == "upload" {
		return t.BytesToServer
	}
	return t.BytesToClient
}

// transferDirection is the Direction of a transfer verb.
func transferDirection(verb string) string {
	switch verb {
	case "RETR":
		return "download"
	case "STOR", "APPE", "STOU":
		return "upload"
	}
	return "listing"
}

// dataResult is what a data link reports when it ends.
type dataResult struct {
	path                   DataPath
	mode                   string
	clientData, serverData string
	toClient, toServer     int64
	outcome                string
	attrs                  []any // extra fields for the log line
}

// transferRecord gathers a Transfer from its two halves, the data link's
// end and the command's final reply, which come in either order; the
// second one logs it.
type transferRecord struct {
	ss   *session
	link *dataLink // the link it uses, once known; guarded by ss.mu
	// answered is closed when the reply half is in.
	answered chan struct{}

	mu      sync.Mutex
	t       Transfer
	data    bool // the data half is in
	replied bool // the reply half is in
	attrs   []any
}

func (ss *session) newTransferRecord(verb, arg string) *transferRecord {
	ss.mu.Lock()
	user, ascii := ss.user, ss.ascii
	ss.mu.Unlock()
	return &transferRecord{ss: ss, answered: make(chan struct{}), t: Transfer{
		Listener:  ss.srv.Name,
		Session:   ss.id,
		Client:    ss.clientPeer,
		User:      user,
		Command:   verb,
		Path:      arg,
		Direction: transferDirection(verb),
		ASCII:     ascii,
		DataPath:  ss.srv.DataPath,
		Start:     time.Now(),
	}}
}

// dataDone records the data link's end. Only the first call counts.
func (r *transferRecord) dataDone(res dataResult) {
	r.mu.Lock()
	if r.data {
		r.mu.Unlock()
		return
	}
	r.data = true
	r.t.DataPath, r.t.Mode = res.path, res.mode
	r.t.ClientData, r.t.ServerData = res.clientData, res.serverData
	r.t.BytesToClient, r.t.BytesToServer = res.toClient, res.toServer
	r.t.Outcome = res.outcome
	r.attrs = res.attrs
	r.finishLocked()
}

// replyDoneLocked records the final reply code the client got (0: none
// came). It runs with ss.mu held; only the first call counts.
func (r *transferRecord) replyDoneLocked(code int) {
	r.mu.Lock()
	if r.replied {
		r.mu.Unlock()
		return
	}
	r.replied = true
	close(r.answered)
	r.t.Code = code
	r.finishLocked()
}

// finishLocked logs the record once both halves are in, and unlocks.
func (r *transferRecord) finishLocked() {
	if !r.data || !r.replied {
		r.mu.Unlock()
		return
	}
	r.t.Seconds = time.Since(r.t.Start).Seconds()
	t, extra := r.t, r.attrs
	r.mu.Unlock()
	ss := r.ss
	attrs := []any{"user", t.User, "command", t.Command, "path", t.Path, "direction", t.Direction,
		"data_path", t.DataPath.String(), "mode", t.Mode}
	if t.ClientData != "" {
		attrs = append(attrs, "client_data", t.ClientData, "server_data", t.ServerData)
	}
	attrs = append(attrs, "bytes", t.Bytes(), "bytes_to_client", t.BytesToClient, "bytes_to_server", t.BytesToServer,
		"seconds", t.Seconds, "code", t.Code, "outcome", t.Outcome)
	ss.log.Info("transfer", append(attrs, extra...)...)
	ss.srv.Metrics.transfer(t)
	if ss.srv.OnTransfer != nil {
		ss.srv.OnTransfer(t)
	}
}
