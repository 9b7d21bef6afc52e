package netlab

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// InteropClient is one client configuration of the interoperability
// matrix: a Client (name, mode, and the data command its protocol log must
// show) of one Program, possibly driven through standard input, and the
// operations it cannot do at all.
type InteropClient struct {
	Client
	// Program is the client program, the column group of the matrix:
	// "curl", "lftp", "ftplib", "wget" or "tnftp".
	Program string
	// Package is the Debian package that ships Program.
	Package string
	// stdin, when set, returns the commands fed to the program on its
	// standard input (an interactive client); argv then gives the command
	// line.
	stdin stdinFunc
	// cannot returns why the program itself cannot do op, or "".
	cannot func(op Op) string
}

// NotApplicable returns why the client program itself cannot do op (e.g.
// "wget cannot upload"), or "" when it can.
func (c InteropClient) NotApplicable(op Op) string {
	if c.cannot == nil {
		return ""
	}
	return c.cannot(op)
}

// InteropClients are the clients of the interoperability matrix: curl,
// lftp and Python's ftplib as in Clients (passive ones strict, so that a
// wrong 227 rewrite fails), wget (retrieval only) and tnftp, the classic
// BSD ftp client, driven through its standard input. Each in passive and
// active mode; curl both with the classic (PASV/PORT) and the extended
// (EPSV/EPRT) commands. Over IPv6 every client uses EPSV/EPRT.
var InteropClients = []InteropClient{
	{Program: "curl", Package: "curl", Client: ClientByName("curl EPSV")},
	{Program: "curl", Package: "curl", Client: ClientByName("curl PASV strict")},
	{Program: "curl", Package: "curl", Client: ClientByName("curl EPRT")},
	{Program: "curl", Package: "curl", Client: ClientByName("curl PORT")},
	{Program: "lftp", Package: "lftp", Client: ClientByName("lftp passive strict")},
	{Program: "lftp", Package: "lftp", Client: ClientByName("lftp active")},
	{Program: "ftplib", Package: "python3", Client: ClientByName("ftplib passive strict")},
	{Program: "ftplib", Package: "python3", Client: ClientByName("ftplib active")},
	{Program: "wget", Package: "wget", cannot: wgetCannot,
		Client: Client{Name: "wget passive", Passive: true, Want: "==> PASV", Avoid: "==> PORT", argv: wget()}},
	{Program: "wget", Package: "wget", cannot: wgetCannot,
		Client: Client{Name: "wget active", Want: "==> PORT", Avoid: "==> PASV", argv: wget("--no-passive-ftp")}},
	{Program: "tnftp", Package: "tnftp", stdin: tnftpScript("passive on"),
		Client: Client{Name: "tnftp passive", Passive: true, Want: "---> PASV", Avoid: "---> PORT", argv: tnftp}},
	{Program: "tnftp", Package: "tnftp", stdin: tnftpScript("passive off"),
		Client: Client{Name: "tnftp active", Want: "---> PORT", Avoid: "---> PASV", argv: tnftp}},
}

// wgetCannot: wget only retrieves (REST+RETR is wget -c).
func wgetCannot(op Op) string {
	if op == OpStor {
		return "wget cannot upload"
	}
	return ""
}

// wget retrieves with wget (its default verbosity logs each command as
// "==> PASV ... done."). It runs in the folder of the local file: a
// listing goes through a temporary .listing file there.
func wget(opts ...string) func(h *HomeRouter, host string, port int, op Op, remote, local string) []string {
	return func(h *HomeRouter, host string, port int, op Op, remote, local string) []string {
		args := []string{"env", "-C", filepath.Dir(local), "wget", "--no-proxy", "--tries=1", "--connect-timeout=10", "--read-timeout=30",
			"--user=anonymous", "--password=ftpgate@", "--no-config"}
		args = append(args, opts...)
		url := fmt.Sprintf("ftp://%s/%s", net.JoinHostPort(host, strconv.Itoa(port)), remote)
		switch op {
		case OpList:
			args = append(args, "-O", "-", url)
		case OpResume:
			args = append(args, "-c", "-O", local, url)
		default:
			args = append(args, "-O", local, url)
		}
		return args
	}
}

// tnftp is the command line of the classic client: no auto-login (-n),
// verbose (-v: the server's replies), to host and port; the session itself
// comes on standard input.
func tnftp(h *HomeRouter, host string, port int, op Op, remote, local string) []string {
	return []string{"tnftp", "-n", "-v", host, strconv.Itoa(port)}
}

// tnftpScript returns the commands a person would type: log in as
// anonymous, binary mode, the classic PASV/PORT over IPv4 (epsv4 off; over
// IPv6 tnftp uses EPSV/EPRT), passive mode on or off without fallback,
// debug (each command sent is logged as "---> PASV"), the operation, bye.
func tnftpScript(mode string) func(h *Network, host string, port int, op Op, remote, local string) []byte {
	return func(h *Network, host string, port int, op Op, remote, local string) []byte {
		var cmd string
		switch op {
		case OpList:
			cmd = "ls " + remote
		case OpRetr:
			cmd = fmt.Sprintf("get %s %s", remote, local)
		case OpStor:
			cmd = fmt.Sprintf("put %s %s", local, remote)
		case OpResume:
			cmd = fmt.Sprintf("reget %s %s", remote, local)
		}
		return []byte(strings.Join([]string{"user anonymous ftpgate@", "binary", "epsv4 off", mode, "debug", cmd, "bye"}, "\n") + "\n")
	}
}

// DoInterop runs op with c from the client namespace against host:port,
// with the checks of Do: the listing names the big file, a retrieved file
// has the server file's SHA-256, a stored file arrives with the sent
// file's SHA-256, and the protocol log shows the data command the client
// was meant to use and not its fallback. A client that the program itself
// cannot run for op is an error here: ask NotApplicable first.
func (h *Network) DoInterop(c InteropClient, host string, port int, op Op) Cell {
	if why := c.NotApplicable(op); why != "" {
		return Cell{Client: c.Name, Op: op, Err: fmt.Errorf("%s: not applicable: %s", c.Name, why)}
	}
	return h.do(c.Client, host, port, op, c.stdin)
}

// PackageVersion returns the installed version of a Debian package, or
// "?" when dpkg does not know it.
func PackageVersion(pkg string) string {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", pkg).Output()
	if err != nil || len(out) == 0 {
		return "?"
	}
	return string(out)
}

// Reply is one command sent to a server and the reply it got, exactly as
// received without the line endings (a multi-line reply has several
// lines).
type Reply struct {
	Family  string // "ipv4" or "ipv6": the control connection's
	Command string // e.g. "PASV", "EPRT |1|198.18.1.1|52999|"
	Lines   []string
}

// Text is the reply as received, its lines joined with CRLF.
func (r Reply) Text() string { return strings.Join(r.Lines, "\r\n") }

// replyCollector logs in anonymously to one server and sends each command
// given on the command line, printing one JSON object per command:
// {"command": ..., "reply": [lines]}. It never opens a data connection.
const replyCollector = `import json, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, port), timeout=20)
f = s.makefile("rb")
def reply():
    lines = []
    while True:
        line = f.readline().decode("latin-1")
        if not line:
            raise SystemExit("connection closed after %r" % lines)
        lines.append(line.rstrip("\r\n"))
        first = lines[0]
        if first[3:4] != "-" or (line[:3] == first[:3] and line[3:4] == " "):
            return lines
reply()
for cmd in ["USER anonymous", "PASS ftpgate@"] + sys.argv[3:] + ["QUIT"]:
    s.sendall(cmd.encode("latin-1") + b"\r\n")
    print(json.dumps({"command": cmd, "reply": reply()}), flush=True)
`

// CollectReplies sends the address-bearing commands to server s over one
// control connection per address family, straight from the gateway (not
// through ftpgate), and returns the replies as the server sent them:
// PASV, EPSV, EPSV 1 and 2, EPRT of each family (to the gateway's inside
// address, never used: no transfer follows), EPRT of an unknown family,
// PORT, LPSV, EPSV ALL and PASV after it.
func (h *Network) CollectReplies(s *Server) ([]Reply, error) {
	script := filepath.Join(h.Dir, "collect-replies.py")
	if err := os.WriteFile(script, []byte(replyCollector), 0o644); err != nil {
		return nil, err
	}
	var all []Reply
	for _, family := range []string{"ipv4", "ipv6"} {
		ip := h.ServerIP
		if family == "ipv6" {
			if h.ServerIP6 == "" {
				continue
			}
			ip = h.ServerIP6
		}
		cmds := []string{"PASV", "EPSV", "EPSV 1", "EPSV 2",
			"EPRT |1|" + GatewayIn + "|52999|", "EPRT |2|" + GatewayIn6 + "|52999|", "EPRT |3|" + GatewayIn + "|52999|",
			"PORT 198,18,1,1,207,7", "LPSV", "EPSV ALL", "PASV"}
		args := append([]string{script, ip, strconv.Itoa(s.Port)}, cmds...)
		stdout, stderr, err := h.Gateway.Exec(60*time.Second, nil, "python3", args...)
		if err != nil {
			return nil, fmt.Errorf("collecting %s's replies over %s: %w: %s", s.Kind, family, err, stderr)
		}
		sc := bufio.NewScanner(strings.NewReader(stdout))
		for sc.Scan() {
			var r struct {
				Command string   `json:"command"`
				Reply   []string `json:"reply"`
			}
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				return nil, fmt.Errorf("collecting %s's replies: %q: %w", s.Kind, sc.Text(), err)
			}
			if strings.HasPrefix(r.Command, "USER ") || strings.HasPrefix(r.Command, "PASS ") || r.Command == "QUIT" {
				continue
			}
			all = append(all, Reply{Family: family, Command: r.Command, Lines: r.Reply})
		}
	}
	return all, nil
}
