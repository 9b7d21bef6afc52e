package netlab

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ServerKind names an FTP server program of the interoperability matrix.
type ServerKind string

// The servers of the interoperability matrix.
const (
	Vsftpd   ServerKind = "vsftpd"
	PureFTPd ServerKind = "pure-ftpd"
	ProFTPD  ServerKind = "proftpd"
)

// ServerKinds lists every server kind, in matrix order.
var ServerKinds = []ServerKind{Vsftpd, PureFTPd, ProFTPD}

// serverSpec is what a kind needs: the Debian package it comes from, its
// binary (relative to the unpacked tree for cached packages), and the
// passive port range it is given. The ranges differ so that all three
// can run at once in one server namespace.
var serverSpecs = map[ServerKind]struct {
	pkg          string
	binary       string
	cached       bool // unpacked into ServersCache by e2e/install-deps.sh
	passiveFirst int
	passiveLast  int
}{
	Vsftpd:   {pkg: "vsftpd", binary: "vsftpd", passiveFirst: 30000, passiveLast: 30999},
	PureFTPd: {pkg: "pure-ftpd", binary: "usr/sbin/pure-ftpd", cached: true, passiveFirst: 31000, passiveLast: 31999},
	ProFTPD:  {pkg: "proftpd-core", binary: "usr/sbin/proftpd", cached: true, passiveFirst: 32000, passiveLast: 32999},
}

// ServersCache is the folder where e2e/install-deps.sh unpacks the FTP
// servers that conflict with vsftpd as Debian packages (pure-ftpd,
// proftpd-core): $FTPGATE_TEST_SERVERS, by default
// /var/cache/ftpgate-test-servers. Each package's current version is
// unpacked under ServersCache()/<package>.
func ServersCache() string {
	if d := os.Getenv("FTPGATE_TEST_SERVERS"); d != "" {
		return d
	}
	return "/var/cache/ftpgate-test-servers"
}

// Server is an FTP server running in a network's server namespace, on the
// server's IPv4 address and, in a dual-stack network, its IPv6 address,
// at Port on both. Every server of a network serves the same files
// (FTPRoot) to the anonymous user: pub/ to read, upload/ to write.
type Server struct {
	Kind ServerKind
	// Version is the Debian package and version, e.g.
	// "pure-ftpd 1.0.50-2.1+b2".
	Version string
	Port    int
	// PassiveFirst..PassiveLast is the server's passive port range.
	PassiveFirst, PassiveLast int
	// Procs are the server's processes (one per address family for
	// vsftpd and pure-ftpd, one for both for proftpd); the lab kills them
	// at Close.
	Procs []*Proc
	// Logs are the server's own log files.
	Logs []string
	// shared is set for the network's own vsftpd, which Stop leaves alone.
	shared bool
}

// Stop ends the server's processes (SIGTERM to each process group, SIGKILL
// after 5 seconds), by PID. The network's own vsftpd is left running.
func (s *Server) Stop() error {
	if s.shared {
		return nil
	}
	var errs []error
	for _, p := range s.Procs {
		if p.Exited() {
			continue
		}
		syscall.Kill(-p.PID(), syscall.SIGTERM)
		select {
		case <-p.done:
			continue
		case <-time.After(5 * time.Second):
		}
		syscall.Kill(-p.PID(), syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			errs = append(errs, fmt.Errorf("netlab: %s pid %d survived SIGKILL", s.Kind, p.PID()))
		}
	}
	return errors.Join(errs...)
}

// StartServer runs an FTP server of kind in the server namespace on
// ServerIP and ServerIP6 (when set) at port, in the foreground, configured
// by files written into the lab's directory: anonymous only, no TLS, the
// anonymous root FTPRoot (read pub/, write upload/), passive ports from the
// kind's own range, and in 227 replies its own (private) address. It
// returns once the server listens on every address. The lab kills the
// server at Close; Stop ends it sooner. The network's own vsftpd already
// runs at port 21: StartServer(Vsftpd, 21) returns it.
func (h *Network) StartServer(kind ServerKind, port int) (*Server, error) {
	return h.startServer(kind, port, nil)
}

// serverTLS is how a server started by StartTLSServer speaks TLS.
type serverTLS struct {
	cert, key string
	// reuse: a data connection must resume its control connection's TLS
	// session (vsftpd and proftpd; pure-ftpd has no such setting).
	reuse bool
}

func (h *Network) startServer(kind ServerKind, port int, tls *serverTLS) (*Server, error) {
	spec, ok := serverSpecs[kind]
	if !ok {
		return nil, fmt.Errorf("netlab: unknown FTP server %q", kind)
	}
	if h.FTPRoot == "" {
		return nil, errors.New("netlab: the network has no FTP root")
	}
	s := &Server{Kind: kind, Port: port, PassiveFirst: spec.passiveFirst, PassiveLast: spec.passiveLast}
	binary := spec.binary
	if spec.cached {
		dir := filepath.Join(ServersCache(), spec.pkg)
		stamp, err := os.ReadFile(filepath.Join(dir, ".unpacked"))
		if err != nil {
			return nil, fmt.Errorf("netlab: %s is not unpacked in %s (run e2e/install-deps.sh as root): %w", spec.pkg, ServersCache(), err)
		}
		s.Version = strings.TrimSpace(string(stamp))
		binary = filepath.Join(dir, spec.binary)
	} else {
		out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", spec.pkg).Output()
		if err != nil {
			return nil, fmt.Errorf("netlab: %s is not installed (run e2e/install-deps.sh as root): %w", spec.pkg, err)
		}
		s.Version = spec.pkg + " " + strings.TrimSpace(string(out))
	}
	if _, err := os.Stat(binary); err != nil && filepath.IsAbs(binary) {
		return nil, fmt.Errorf("netlab: %s: %w", kind, err)
	}
	var err error
	switch kind {
	case Vsftpd:
		err = h.startVsftpdAt(s, tls)
	case PureFTPd:
		err = h.startPureFTPd(s, binary, tls)
	case ProFTPD:
		err = h.startProFTPD(s, binary, tls)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// serverIPs returns the addresses the network's server listens on.
func (h *Network) serverIPs() []string {
	ips := []string{h.ServerIP}
	if h.ServerIP6 != "" {
		ips = append(ips, h.ServerIP6)
	}
	return ips
}

// waitServer waits until each process of s listens on its address, and
// fails early with the process's output if one exits.
func (h *Network) waitServer(s *Server, ips []string) error {
	for i, ip := range ips {
		p := s.Procs[min(i, len(s.Procs)-1)]
		addr := net.JoinHostPort(ip, strconv.Itoa(s.Port))
		if err := h.WaitListening(h.Server, addr, 10*time.Second); err != nil {
			var logs strings.Builder
			for _, l := range s.Logs {
				if b, err := os.ReadFile(l); err == nil {
					fmt.Fprintf(&logs, "\n--- %s ---\n%s", l, b)
				}
			}
			return fmt.Errorf("netlab: %s did not start (exited: %v): %w\n%s%s%s", s.Kind, p.Exited(), err,
				p.Stdout.String(), p.Stderr.String(), logs.String())
		}
	}
	return nil
}

// startVsftpdAt returns the network's own vsftpd at port 21, or runs
// another pair of vsftpd processes with the network's configuration at
// another port.
func (h *Network) startVsftpdAt(s *Server, tls *serverTLS) error {
	extra, tag := "", fmt.Sprintf("-%d", s.Port)
	if tls != nil {
		yes := map[bool]string{true: "YES", false: "NO"}
		extra = fmt.Sprintf(`ssl_enable=YES
allow_anon_ssl=YES
force_anon_logins_ssl=YES
force_anon_data_ssl=YES
require_ssl_reuse=%s
ssl_ciphers=HIGH
rsa_cert_file=%s
rsa_private_key_file=%s
`, yes[tls.reuse], tls.cert, tls.key)
		tag = fmt.Sprintf("-tls-%d", s.Port)
	} else if s.Port == 21 && h.vsftpd != nil {
		s.shared = true
		s.Procs = []*Proc{h.vsftpd}
		if h.vsftpd6 != nil {
			s.Procs = append(s.Procs, h.vsftpd6)
		}
		s.Logs = []string{filepath.Join(h.Dir, "vsftpd.log"), filepath.Join(h.Dir, "vsftpd6.log")}
		return nil
	}
	for i, name := range []string{"vsftpd.conf", "vsftpd6.conf"} {
		if i == 1 && h.ServerIP6 == "" {
			break
		}
		text, err := os.ReadFile(filepath.Join(h.Dir, name))
		if err != nil {
			return fmt.Errorf("netlab: the network's vsftpd configuration: %w", err)
		}
		conf := strings.NewReplacer(
			"listen_port=21\n", fmt.Sprintf("listen_port=%d\n", s.Port),
			".log\n", tag+".log\n",
		).Replace(string(text)) + extra
		path := filepath.Join(h.Dir, strings.TrimSuffix(name, ".conf")+tag+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			return err
		}
		p, err := h.Server.Start("vsftpd", path)
		if err != nil {
			return err
		}
		s.Procs = append(s.Procs, p)
		s.Logs = append(s.Logs, filepath.Join(h.Dir, strings.TrimSuffix(name, ".conf")+tag+".log"))
	}
	return h.waitServer(s, h.serverIPs())
}

// startPureFTPd runs one pure-ftpd per address family. pure-ftpd serves
// anonymous users from the home directory of the system user "ftp" and
// has no option to change it, so each runs in a mount namespace of its
// own (unshare, private propagation: nothing reaches the machine's mount
// table) where FTPRoot is bind-mounted over that home directory. The
// mount goes away with the process.
func (h *Network) startPureFTPd(s *Server, binary string, tls *serverTLS) error {
	ftp, err := user.Lookup("ftp")
	if err != nil {
		return fmt.Errorf("netlab: pure-ftpd serves the home of the user ftp (made by the vsftpd package): %w", err)
	}
	if st, err := os.Stat(ftp.HomeDir); err != nil || !st.IsDir() {
		return fmt.Errorf("netlab: pure-ftpd: the home of the user ftp, %q, is not a directory: %v", ftp.HomeDir, err)
	}
	for _, ip := range h.serverIPs() {
		tag := "4"
		if strings.Contains(ip, ":") {
			tag = "6"
		}
		if tls != nil {
			tag += fmt.Sprintf("-tls-%d", s.Port)
		}
		xfer := filepath.Join(h.Dir, "pure-ftpd"+tag+"-transfers.log")
		args := []string{
			"--mount", "--propagation", "private", "--",
			"sh", "-c", `mount --bind "$1" "$2" && shift 2 && exec "$@"`, "sh", h.FTPRoot, ftp.HomeDir,
			binary,
			"--anonymousonly",          // -e
			"--anonymouscancreatedirs", // -M
			"--dontresolve",            // -H: no DNS in the namespace
			"--syslogfacility", "none", // -f none: no syslog
			"--altlog", "clf:" + xfer, // -O: transfers
			"--maxclientsnumber", "100", // -c
			"--maxclientsperip", "100", // -C
			"--maxidletime", "5", // -I, minutes
			"--passiveportrange", fmt.Sprintf("%d:%d", s.PassiveFirst, s.PassiveLast), // -p
			"--bind", ip + "," + strconv.Itoa(s.Port), // -S
		}
		if tls != nil {
			// -Y 3: TLS required on the control and the data connections.
			args = append(args, "--tls", "3", "--certfile", tls.cert+","+tls.key)
		}
		p, err := h.Server.Start("unshare", args...)
		if err != nil {
			return err
		}
		s.Procs = append(s.Procs, p)
		s.Logs = append(s.Logs, xfer)
	}
	return h.waitServer(s, h.serverIPs())
}

// proftpdConf is the configuration of proftpd for the tests: standalone,
// on the server's addresses (%[1]s) and port (%[2]d), passive ports
// %[3]d-%[4]d, every file it writes in the lab (%[5]s), the anonymous root
// %[6]s with writes allowed in upload/ only. No DNS, ident, PAM, TLS or
// control socket.
const proftpdConf = `ServerName "ftpgate interop proftpd"
ServerType standalone
DefaultServer on
UseIPv6 on
DefaultAddress %[1]s
SocketBindTight on
Port %[2]d
PassivePorts %[3]d %[4]d
User nobody
Group nogroup
Umask 022
MaxInstances 100
UseReverseDNS off
<IfModule mod_ident.c>
  IdentLookups off
</IfModule>
<IfModule mod_auth_pam.c>
  AuthPAM off
</IfModule>
<IfModule mod_ctrls.c>
  ControlsEngine off
</IfModule>
<IfModule mod_delay.c>
  DelayEngine off
</IfModule>
AuthOrder mod_auth_unix.c
RequireValidShell off
WtmpLog off
TimeoutIdle 300
PidFile %[5]s/proftpd.pid
ScoreboardFile %[5]s/proftpd.scoreboard
SystemLog %[5]s/proftpd.log
TransferLog %[5]s/proftpd-transfers.log
<Anonymous %[6]s>
  User ftp
  Group nogroup
  UserAlias anonymous ftp
  RequireValidShell off
  <Directory *>
    <Limit WRITE>
      DenyAll
    </Limit>
  </Directory>
  <Directory upload>
    <Limit WRITE>
      AllowAll
    </Limit>
  </Directory>
</Anonymous>
`

// proftpdTLSConf loads mod_tls from %[1]s and requires TLS on the control
// and data connections (TLSRequired on) with the certificate %[2]s and
// key %[3]s, logging to %[4]s/tls.log. %[5]s: empty keeps ProFTPD's
// default, a data connection must resume its control connection's TLS
// session; "TLSOptions NoSessionReuseRequired" lifts it.
const proftpdTLSConf = `ModulePath %[1]s
LoadModule mod_tls.c
TLSEngine on
TLSRequired on
TLSProtocol TLSv1.2 TLSv1.3
TLSECCertificateFile %[2]s
TLSECCertificateKeyFile %[3]s
TLSVerifyClient off
TLSLog %[4]s/tls.log
%[5]s
`

// startProFTPD runs one proftpd, in the foreground (-n), on both address
// families.
func (h *Network) startProFTPD(s *Server, binary string, tls *serverTLS) error {
	dir := filepath.Join(h.Dir, "proftpd")
	if tls != nil {
		dir += fmt.Sprintf("-tls-%d", s.Port)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	conf := filepath.Join(dir, "proftpd.conf")
	text := fmt.Sprintf(proftpdConf, strings.Join(h.serverIPs(), " "), s.Port, s.PassiveFirst, s.PassiveLast, dir, h.FTPRoot)
	if tls != nil {
		modules := filepath.Join(ServersCache(), "proftpd-mod-crypto", "usr", "lib", "proftpd")
		if _, err := os.Stat(filepath.Join(modules, "mod_tls.so")); err != nil {
			return fmt.Errorf("netlab: proftpd's mod_tls (proftpd-mod-crypto) is not unpacked (run e2e/install-deps.sh as root): %w", err)
		}
		text = fmt.Sprintf(proftpdTLSConf, modules, tls.cert, tls.key, dir, map[bool]string{true: "", false: "TLSOptions NoSessionReuseRequired"}[tls.reuse]) + text
	}
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return err
	}
	// A wrong configuration is reported by -t, not by a silent exit.
	if out, err := h.Server.Run(binary, "-t", "-c", conf); err != nil {
		return fmt.Errorf("netlab: proftpd configuration: %w: %s", err, out)
	}
	p, err := h.Server.Start(binary, "-n", "-c", conf)
	if err != nil {
		return err
	}
	s.Procs = []*Proc{p}
	s.Logs = []string{filepath.Join(dir, "proftpd.log"), filepath.Join(dir, "proftpd-transfers.log")}
	return h.waitServer(s, h.serverIPs())
}
