package netlab

import (
	_ "embed"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

//go:embed ftpclient.py
var ftpclientPy []byte

// Op is one FTP operation of the test matrix.
type Op string

// The operations of the matrix.
const (
	OpList   Op = "LIST"
	OpRetr   Op = "RETR"
	OpStor   Op = "STOR"
	OpResume Op = "REST+RETR"
)

// Ops lists every operation, in matrix order.
var Ops = []Op{OpList, OpRetr, OpStor, OpResume}

// resumeOffset is where a resumed RETR starts: the local file already holds
// the first resumeOffset bytes.
const resumeOffset = 3 << 20

// Client is one real FTP client program in one configuration.
type Client struct {
	Name    string
	Passive bool
	// Want must appear in the client's protocol log (the data command it
	// really sent); Avoid must not (a silent fallback, e.g. EPSV to PASV).
	Want, Avoid string
	// Args are extra options put right after the program name (for curl,
	// e.g. "--limit-rate 1M").
	Args []string
	argv func(h *HomeRouter, host string, port int, op Op, remote, local string) []string
}

// Clients is the client matrix: curl, lftp and Python's ftplib, passive and
// active, and each passive client both strict (it connects to the address
// in the 227 reply, so a wrong rewrite fails) and with its defaults (it
// connects to the control peer and ignores the 227 address).
var Clients = []Client{
	{Name: "curl EPSV", Passive: true, Want: "> EPSV", Avoid: "> PASV", argv: curl()},
	{Name: "curl PASV strict", Passive: true, Want: "> PASV", Avoid: "> EPSV", argv: curl("--disable-epsv", "--no-ftp-skip-pasv-ip")},
	{Name: "curl PASV", Passive: true, Want: "> PASV", Avoid: "> EPSV", argv: curl("--disable-epsv")},
	{Name: "curl EPRT", Want: "> EPRT", Avoid: "> PORT", argv: curl("--ftp-port", clientIP)},
	{Name: "curl PORT", Want: "> PORT", Avoid: "> EPRT", argv: curl("--ftp-port", clientIP, "--disable-eprt")},
	{Name: "lftp passive strict", Passive: true, Want: "---> PASV", argv: lftp("set ftp:passive-mode on; set ftp:fix-pasv-address no")},
	{Name: "lftp passive", Passive: true, Want: "---> PASV", argv: lftp("set ftp:passive-mode on")},
	{Name: "lftp active", Want: "---> PORT", argv: lftp("set ftp:passive-mode off")},
	{Name: "ftplib passive strict", Passive: true, Want: "*cmd* 'PASV'", argv: ftplib("passive", "--strict")},
	{Name: "ftplib passive", Passive: true, Want: "*cmd* 'PASV'", argv: ftplib("passive")},
	{Name: "ftplib active", Want: "*cmd* 'PORT", argv: ftplib("active")},
}

// ClientByName returns the client called name.
func ClientByName(name string) Client {
	for _, c := range Clients {
		if c.Name == name {
			return c
		}
	}
	panic("netlab: no client " + name)
}

// clientIP in a client's options stands for the client's own address.
const clientIP = "{client}"

func curl(opts ...string) func(h *HomeRouter, host string, port int, op Op, remote, local string) []string {
	return curlURL("ftp", opts...)
}

// curlURL is curl with URLs of scheme (ftp, or ftps for implicit TLS).
func curlURL(scheme string, opts ...string) func(h *HomeRouter, host string, port int, op Op, remote, local string) []string {
	return func(h *HomeRouter, host string, port int, op Op, remote, local string) []string {
		args := []string{"curl", "-sS", "-v", "--max-time", "60", "--connect-timeout", "10", "-u", "anonymous:ftpgate@"}
		for _, o := range opts {
			if o == clientIP {
				o = h.ClientIP
				if strings.Contains(host, ":") {
					o = h.ClientIP6
				}
			}
			args = append(args, o)
		}
		url := fmt.Sprintf("%s://%s/%s", scheme, net.JoinHostPort(host, strconv.Itoa(port)), remote)
		switch op {
		case OpRetr:
			args = append(args, "-o", local, url)
		case OpStor:
			args = append(args, "-T", local, url)
		case OpResume:
			args = append(args, "-C", "-", "-o", local, url)
		default:
			args = append(args, url)
		}
		return args
	}
}

func lftp(settings string) func(h *HomeRouter, host string, port int, op Op, remote, local string) []string {
	return func(h *HomeRouter, host string, port int, op Op, remote, local string) []string {
		script := "set cmd:fail-exit yes; set net:max-retries 1; set net:reconnect-interval-base 1; " +
			"set net:timeout 20; set ftp:ssl-allow no; set xfer:clobber on; " + settings + "; " +
			fmt.Sprintf("open -u anonymous,ftpgate@ -p %d %s; ", port, host)
		switch op {
		case OpRetr:
			script += fmt.Sprintf("get %s -o %s", remote, local)
		case OpStor:
			script += fmt.Sprintf("put %s -o %s", local, remote)
		case OpResume:
			script += fmt.Sprintf("get -c %s -o %s", remote, local)
		default:
			script += "ls " + remote
		}
		return []string{"lftp", "-d", "-c", script + "; bye"}
	}
}

func ftplib(mode string, opts ...string) func(h *HomeRouter, host string, port int, op Op, remote, local string) []string {
	return func(h *HomeRouter, host string, port int, op Op, remote, local string) []string {
		ops := map[Op]string{OpList: "list", OpRetr: "retr", OpStor: "stor", OpResume: "resume"}
		args := []string{"python3", h.PythonClient(), host, strconv.Itoa(port), mode, ops[op], remote, local}
		return append(args, opts...)
	}
}

// Cell is the outcome of one client running one operation.
type Cell struct {
	Client  string
	Op      Op
	Log     string // the client's standard output and error
	Elapsed time.Duration
	Err     error // nil when the operation succeeded and its result checked out
}

// Do runs op with client c from the client namespace against host:port and
// checks the result: the listing names the big file, a retrieved file (whole
// or resumed) has the server file's SHA-256, a stored file arrives on the
// server with the sent file's SHA-256, and the client's protocol log shows
// the data command it was meant to use.
func (h *Network) Do(c Client, host string, port int, op Op) Cell {
	return h.do(c, host, port, op, nil)
}

// stdinFunc builds what a client program reads on standard input (the
// classic interactive client is driven this way).
type stdinFunc func(h *Network, host string, port int, op Op, remote, local string) []byte

// do is Do, with the client's standard input from stdin when it is not nil.
func (h *Network) do(c Client, host string, port int, op Op, stdin stdinFunc) Cell {
	cell := Cell{Client: c.Name, Op: op}
	n := h.cellSeq.Add(1)
	name := fmt.Sprintf("%s-%d", strings.NewReplacer(" ", "-", "+", "-").Replace(strings.ToLower(c.Name)), n)
	local := filepath.Join(h.Dir, "client", name)
	if err := os.MkdirAll(filepath.Dir(local), 0o755); err != nil {
		cell.Err = err
		return cell
	}
	remote := BigFile
	upload := ""
	switch op {
	case OpList:
		remote = "pub/"
	case OpStor:
		upSum, err := h.uploadSource()
		if err != nil {
			cell.Err = err
			return cell
		}
		remote = "upload/" + name
		upload = upSum
		local = filepath.Join(h.Dir, "upload-source.bin")
	case OpResume:
		if err := copyPrefix(filepath.Join(h.FTPRoot, BigFile), local, resumeOffset); err != nil {
			cell.Err = err
			return cell
		}
	}
	argv := c.argv(h, host, port, op, remote, local)
	argv = append(append([]string{argv[0]}, c.Args...), argv[1:]...)
	var in []byte
	if stdin != nil {
		in = stdin(h, host, port, op, remote, local)
	}
	start := time.Now()
	stdout, stderr, err := h.Client.Exec(90*time.Second, in, argv[0], argv[1:]...)
	cell.Elapsed = time.Since(start)
	cell.Log = stdout + stderr
	if err != nil {
		cell.Err = fmt.Errorf("%s: %w", c.Name, err)
		return cell
	}
	cell.Err = h.check(c, host, op, cell.Log, local, remote, upload)
	return cell
}

func (h *Network) check(c Client, host string, op Op, log, local, remote, uploadSum string) error {
	want, avoid := c.Want, c.Avoid
	if strings.Contains(host, ":") {
		// Over IPv6 every client uses the extended commands (RFC 2428):
		// curl even overrides --disable-epsv and --disable-eprt there.
		want, avoid = strings.NewReplacer("PASV", "EPSV", "PORT", "EPRT").Replace(want), ""
	}
	if !strings.Contains(log, want) {
		return fmt.Errorf("protocol log lacks %q", want)
	}
	if avoid != "" && strings.Contains(log, avoid) {
		return fmt.Errorf("protocol log has %q: the client fell back", avoid)
	}
	switch op {
	case OpList:
		if !strings.Contains(log, filepath.Base(BigFile)) {
			return fmt.Errorf("listing lacks %s", filepath.Base(BigFile))
		}
		return nil
	case OpStor:
		return matchSHA(filepath.Join(h.FTPRoot, remote), uploadSum)
	default:
		return matchSHA(local, h.BigSHA256)
	}
}

func matchSHA(path, want string) error {
	got, err := FileSHA256(path)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%s: %w: got %.12s, want %.12s", path, errMismatch, got, want)
	}
	return nil
}

// uploadSource writes the file that STOR sends, once, and returns its hash.
func (h *Network) uploadSource() (string, error) {
	h.uploadMu.Lock()
	defer h.uploadMu.Unlock()
	path := filepath.Join(h.Dir, "upload-source.bin")
	if _, err := os.Stat(path); err == nil {
		return FileSHA256(path)
	}
	return WriteRandomFile(path, BigSize)
}

// PythonClient writes ftpclient.py (a client on Python's ftplib) into the lab
// once and returns its path.
func (h *Network) PythonClient() string {
	path := filepath.Join(h.Dir, "ftpclient.py")
	if _, err := os.Stat(path); err != nil {
		os.WriteFile(path, ftpclientPy, 0o644)
	}
	return path
}

// copyPrefix writes the first n bytes of src to dst.
func copyPrefix(src, dst string, n int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(out, in, n); err != nil {
		out.Close()
		return fmt.Errorf("copying %d bytes of %s: %w", n, src, err)
	}
	return out.Close()
}
