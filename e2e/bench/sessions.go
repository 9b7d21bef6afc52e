package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The session client: the bench runs itself again inside the client
// namespace (ip netns exec NS BENCH -session-client ...) so that the client
// side of the session-rate measurement is a few goroutines, not one Python
// interpreter per client competing with the gateway for the two cores.

// sessionTimeout bounds each session: dial, commands, data.
const sessionTimeout = 20 * time.Second

// runSessionClient runs n sessions against addr, conc at a time, each a
// login, EPSV, RETR of file (which must be size bytes) and QUIT, and prints
// "SESSIONS n FAILED f SECONDS s". With caFile, each session speaks FTPS:
// AUTH TLS, PBSZ 0, PROT P, and a TLS data connection that resumes the
// control connection's session (as curl does), trusting caFile. It returns
// the process exit code.
func runSessionClient(addr, file string, size int64, caFile string, n, conc int) int {
	if n < 1 || conc < 1 || conc > n {
		fmt.Fprintf(os.Stderr, "session client: bad counts: %d sessions, %d clients\n", n, conc)
		return 2
	}
	var roots *x509.CertPool
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		roots = x509.NewCertPool()
		if err != nil || !roots.AppendCertsFromPEM(pem) {
			fmt.Fprintf(os.Stderr, "session client: no CA certificate in %s: %v\n", caFile, err)
			return 2
		}
	}
	var (
		next, failed atomic.Int64
		once         sync.Once
		firstErr     error
		wg           sync.WaitGroup
	)
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := session(addr, file, size, roots); err != nil {
					failed.Add(1)
					once.Do(func() { firstErr = err })
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	fmt.Printf("SESSIONS %d FAILED %d SECONDS %.6f\n", n, failed.Load(), elapsed.Seconds())
	if firstErr != nil {
		fmt.Fprintf(os.Stderr, "session client: %d of %d sessions failed; first: %v\n", failed.Load(), n, firstErr)
		return 1
	}
	return 0
}

// session runs one FTP session: login, EPSV, RETR file, QUIT; with roots,
// in FTPS.
func session(addr, file string, size int64, roots *x509.CertPool) error {
	deadline := time.Now().Add(sessionTimeout)
	host, _, _ := net.SplitHostPort(addr)
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(deadline)
	tp := textproto.NewConn(c)
	if _, _, err := tp.ReadResponse(220); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	var tlsConfig *tls.Config
	if roots != nil {
		tlsConfig = &tls.Config{RootCAs: roots, ServerName: host, ClientSessionCache: tls.NewLRUClientSessionCache(1)}
		if _, _, err := command(tp, 234, "AUTH TLS"); err != nil {
			return err
		}
		tc := tls.Client(c, tlsConfig)
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("TLS on the control connection: %w", err)
		}
		tp = textproto.NewConn(tc)
	}
	// vsftpd with no_anon_password logs anonymous in at USER (230).
	code, msg, err := command(tp, 0, "USER anonymous")
	switch {
	case err != nil:
		return err
	case code == 331:
		if _, _, err := command(tp, 230, "PASS bench@"); err != nil {
			return err
		}
	case code != 230:
		return fmt.Errorf("USER: %d %s", code, msg)
	}
	if tlsConfig != nil {
		if _, _, err := command(tp, 200, "PBSZ 0"); err != nil {
			return err
		}
		if _, _, err := command(tp, 200, "PROT P"); err != nil {
			return err
		}
	}
	_, msg, err = command(tp, 229, "EPSV")
	if err != nil {
		return err
	}
	port, err := parse229(msg)
	if err != nil {
		return err
	}
	raw, err := net.DialTimeout("tcp", net.JoinHostPort(host, port), 10*time.Second)
	if err != nil {
		return fmt.Errorf("data connection: %w", err)
	}
	defer raw.Close()
	raw.SetDeadline(deadline)
	if _, _, err := command(tp, 1, "RETR "+file); err != nil {
		return err
	}
	var dc net.Conn = raw
	if tlsConfig != nil {
		tc := tls.Client(raw, tlsConfig)
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("TLS on the data connection: %w", err)
		}
		if !tc.ConnectionState().DidResume {
			return errors.New("the TLS data connection did not resume the control connection's session")
		}
		dc = tc
	}
	got, err := io.Copy(io.Discard, dc)
	dc.Close()
	if err != nil {
		return fmt.Errorf("reading data: %w", err)
	}
	if got != size {
		return fmt.Errorf("RETR %s: got %d bytes, want %d", file, got, size)
	}
	if _, _, err := tp.ReadResponse(226); err != nil {
		return fmt.Errorf("after RETR: %w", err)
	}
	if _, _, err := command(tp, 221, "QUIT"); err != nil {
		return err
	}
	return nil
}

// command sends line and reads the reply, which must start with expect
// (see textproto.Reader.ReadResponse; 0 accepts any code).
func command(tp *textproto.Conn, expect int, line string) (int, string, error) {
	if err := tp.PrintfLine("%s", line); err != nil {
		return 0, "", fmt.Errorf("sending %s: %w", strings.Fields(line)[0], err)
	}
	code, msg, err := tp.ReadResponse(expect)
	if err != nil {
		return code, msg, fmt.Errorf("%s: %w", strings.Fields(line)[0], err)
	}
	return code, msg, nil
}

// parse229 returns the port of "Entering Extended Passive Mode (|||port|)"
// (RFC 2428: any delimiter).
func parse229(msg string) (string, error) {
	open, end := strings.IndexByte(msg, '('), strings.LastIndexByte(msg, ')')
	if open < 0 || end < open+2 {
		return "", fmt.Errorf("unparsable 229 reply %q", msg)
	}
	inner := msg[open+1 : end]
	f := strings.Split(inner, inner[:1])
	if len(f) != 5 || f[3] == "" {
		return "", fmt.Errorf("unparsable 229 reply %q", msg)
	}
	return f[3], nil
}

// errNoResult is returned when the session client printed no result line.
var errNoResult = errors.New("no SESSIONS line in the session client's output")

// parseSessionResult reads the line runSessionClient prints and returns the
// session rate (sessions per second).
func parseSessionResult(out string) (float64, error) {
	for line := range strings.Lines(out) {
		var n, failed int
		var secs float64
		if _, err := fmt.Sscanf(line, "SESSIONS %d FAILED %d SECONDS %g", &n, &failed, &secs); err == nil {
			if failed > 0 {
				return 0, fmt.Errorf("%d of %d sessions failed", failed, n)
			}
			if secs <= 0 {
				return 0, fmt.Errorf("session client reported %g seconds", secs)
			}
			return float64(n) / secs, nil
		}
	}
	return 0, errNoResult
}
