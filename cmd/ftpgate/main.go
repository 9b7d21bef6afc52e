// Command ftpgate is a firewall-aware FTP application-layer gateway.
//
//	ftpgate run --config FILE      serve the listeners of FILE until SIGINT/SIGTERM
//	ftpgate check --config FILE    validate FILE: exit 0 with a summary, or 1 with every error
//	ftpgate cleanup --config FILE  remove ftpgate's firewall chains and jumps (after a crash)
//	ftpgate version                print the version
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"reflect"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ftpgate/ftpgate/cmd/ftpgate/config"
	"github.com/ftpgate/ftpgate/nat"
	"github.com/ftpgate/ftpgate/proxy"
	"github.com/ftpgate/ftpgate/rules"
)

// version is set at link time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

const usage = `usage:
  ftpgate run --config FILE     serve the listeners of FILE until SIGINT or SIGTERM
  ftpgate check --config FILE   validate FILE (exit 0 with a summary, 1 with every error)
  ftpgate cleanup --config FILE remove ftpgate's firewall chains and jumps (after a crash)
  ftpgate trace FILE            explain FTP data-connection failures from a capture (or --interface IF)
  ftpgate manifests --config FILE  print Kubernetes Services for FILE's ports, each listed (--name NAME)
  ftpgate version               print the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one subcommand and returns the process exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "cleanup":
		return cmdCleanup(args[1:], stdout, stderr)
	case "trace":
		return cmdTrace(args[1:], stdout, stderr)
	case "manifests":
		return cmdManifests(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, versionString())
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "ftpgate: unknown command %q\n%s", args[0], usage)
	return 2
}

func versionString() string {
	s := "ftpgate " + version
	if bi, ok := debug.ReadBuildInfo(); ok {
		s += " (" + bi.GoVersion + ")"
	}
	return s
}

// commandHelp says what each subcommand that takes --config does.
var commandHelp = map[string]string{
	"run":     "runs the gateway: every listener of the configuration, until SIGTERM or SIGINT (drain); SIGHUP reloads the configuration and the TLS certificates.",
	"check":   "checks the configuration, reporting every problem at once with its line, and exits 0 if it is good (nothing is started).",
	"cleanup": "removes every firewall chain, ipset and nftables table that an ftpgate with this configuration (its chain_prefix) left behind, say after kill -9.",
}

// errHelp is configFlag's answer to -h/--help: the help went to stdout.
var errHelp = errors.New("help requested")

// configFlag parses "--config FILE" for a subcommand. On -h or --help it
// prints what the subcommand does to stdout and returns errHelp.
func configFlag(name string, args []string, stdout, stderr io.Writer) (string, error) {
	fs := flag.NewFlagSet("ftpgate "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/ftpgate/ftpgate.yaml", "configuration `file`")
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "usage: ftpgate %s [--config FILE]\n\nftpgate %s %s\n\n", name, name, commandHelp[name])
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
	fs.Usage = func() {} // printed below, to stdout for help, to stderr after an error
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout)
			return "", errHelp
		}
		usage(stderr)
		return "", err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ftpgate %s: unexpected argument %q\n", name, fs.Arg(0))
		return "", fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return *path, nil
}

// flagExit is the exit code of a subcommand whose flags configFlag
// refused (2) or answered with help (0).
func flagExit(err error) int {
	if errors.Is(err, errHelp) {
		return 0
	}
	return 2
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	path, err := configFlag("check", args, stdout, stderr)
	if err != nil {
		return flagExit(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintf(stderr, "ftpgate check: %s\n", indentErrors(err))
		return 1
	}
	fmt.Fprintf(stdout, "%s: OK: %s\n", path, cfg.Summary())
	return 0
}

// indentErrors prints each of the joined errors on its own line.
func indentErrors(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "\n  ")
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	path, err := configFlag("run", args, stdout, stderr)
	if err != nil {
		return flagExit(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintf(stderr, "ftpgate run: %s\n", indentErrors(err))
		return 1
	}
	log := newLogger(cfg.Log, stderr)
	notify := newNotifier(os.Getenv("NOTIFY_SOCKET"), log) // systemd's Type=notify

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	// ready answers /readyz: true once every listener is bound and the
	// chains are in place, false again from SIGTERM on, so that load
	// balancers stop sending new clients while the running transfers
	// drain.
	var ready atomic.Bool
	go func() {
		select {
		case sig := <-sigs:
			log.Info("stopping", "signal", sig.String())
			notify.send("STOPPING=1")
			cancel(proxy.ErrShutdown) // first: serve checks ctx after it sets ready
			ready.Store(false)
		case <-ctx.Done():
		}
	}()

	reg := newRegistry()
	// The metrics listener outlives the drain: /metrics and /healthz
	// answer until ftpgate exits.
	metricsCtx, stopMetrics := context.WithCancel(context.Background())
	defer stopMetrics()
	if err := serveMetrics(metricsCtx, cfg.Metrics.Listen, reg, &ready, log); err != nil {
		log.Error("ftpgate not started", "err", err)
		return 1
	}
	fw, err := newFirewall(cfg.Firewall, log, reg)
	if err != nil {
		log.Error("ftpgate not started", "err", err)
		return 1
	}
	if err := fw.start(ctx, log); err != nil {
		log.Error("ftpgate not started", "err", err)
		fw.stop()
		return 1
	}
	err = serve(ctx, path, cfg, log, fw, reg, &ready, hup, notify)
	// Every session has ended and closed its pinholes: remove the chains.
	err = errors.Join(err, fw.stop())
	logPinholeLatency(log, reg)
	if err != nil {
		log.Error("ftpgate stopped", "err", err)
		return 1
	}
	log.Info("ftpgate stopped")
	return 0
}

// serve binds every listener of cfg and serves them until ctx is done or one
// of them fails. On SIGHUP (hup) it reloads the configuration file at path
// (see reload).
func serve(ctx context.Context, path string, cfg *config.Config, log *slog.Logger, fw *firewall,
	reg prometheus.Registerer, ready *atomic.Bool, hup <-chan os.Signal, notify notifier) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sup := &supervisor{
		ctx: ctx, fail: cancel, log: log, fw: fw, metrics: proxy.NewMetrics(reg),
		limiter: newLimiter(cfg.Limits),
		logins:  proxy.NewLoginThrottle(cfg.Limits.LoginFailures, cfg.Limits.LoginFailureWindow, cfg.Limits.LoginBan),
		ports:   nat.NewPortAllocator(),
		certs:   newCertificates(log),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ftpgate_config_reloads_total",
			Help: "Configuration reloads (SIGHUP) by result: ok; failed, some listener did not start and runs on as it was; refused, the file failed the checks.",
		}, []string{"result"}),
		running: map[string]*listener{},
	}
	sup.reloadOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ftpgate_config_last_reload_successful",
		Help: "1 if the last configuration load (the start, or a SIGHUP) succeeded, else 0.",
	})
	sup.reloadTime = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ftpgate_config_last_reload_success_timestamp_seconds",
		Help: "When the configuration was last loaded successfully (the start, or a SIGHUP), in Unix seconds.",
	})
	for _, c := range []prometheus.Collector{sup.reloads, sup.reloadOK, sup.reloadTime} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("registering reload metrics: %w", err)
		}
	}
	sup.reloadOK.Set(1)
	sup.reloadTime.SetToCurrentTime()
	if cfg.Log.Xferlog != "" {
		x, err := openXferlog(cfg.Log.Xferlog)
		if err != nil {
			return err
		}
		defer x.Close()
		sup.xferlog = x
	}
	for _, r := range []string{"ok", "failed", "refused"} {
		sup.reloads.WithLabelValues(r)
	}
	defer sup.closeSockets()
	for _, lc := range cfg.Listeners {
		if err := sup.start(lc, cfg.Limits); err != nil {
			cancel(err)
			sup.wg.Wait()
			return err
		}
	}
	sup.cfg = cfg
	log.Info("ftpgate started", "version", version, "firewall", fw.describe(), "listeners", len(cfg.Listeners),
		"data_paths", dataPaths(cfg), "metrics", cfg.Metrics.Listen, "xferlog", cfg.Log.Xferlog)
	ready.Store(true)
	if ctx.Err() != nil { // a SIGTERM came during the start
		ready.Store(false)
	} else {
		notify.send("READY=1") // listeners bound, firewall chains in place (cmdRun)
	}
	defer ready.Store(false)
	for {
		select {
		case <-hup:
			notify.reloading()
			sup.reload(path)
			notify.send("READY=1") // whatever the reload's outcome
		case <-ctx.Done():
			sup.wg.Wait()
			if err := context.Cause(ctx); !errors.Is(err, proxy.ErrShutdown) {
				return err
			}
			return nil
		}
	}
}

// dataPaths lists the data paths cfg's listeners use, for the start-up
// line: "relay", "kernel" or "relay+kernel".
func dataPaths(cfg *config.Config) string {
	var relay, kernel bool
	for _, l := range cfg.Listeners {
		if l.Data.Path == config.PathKernel {
			kernel = true
		} else {
			relay = true
		}
	}
	switch {
	case relay && kernel:
		return "relay+kernel"
	case kernel:
		return "kernel"
	}
	return "relay"
}

// supervisor runs the listeners of the current configuration and those
// that a reload retired, until their sessions end.
type supervisor struct {
	ctx     context.Context
	fail    context.CancelCauseFunc // a listener failed on its own: stop all
	log     *slog.Logger
	fw      *firewall
	metrics *proxy.Metrics
	limiter *proxy.SessionLimiter
	// logins is the failed-login throttle, shared by every listener.
	logins *proxy.LoginThrottle
	// reloads counts SIGHUPs by result: ok, failed (some listener did not
	// start; it runs on as it was), refused (the file failed the checks).
	reloads *prometheus.CounterVec
	// reloadOK and reloadTime: the last load's result, and when one last
	// succeeded.
	reloadOK, reloadTime prometheus.Gauge
	// certs are the TLS certificates of the listeners, re-read on SIGHUP.
	certs *certificates
	// xferlog, if log.xferlog is set, receives the file transfers; it is
	// reopened on SIGHUP.
	xferlog *xferlog
	// ports is shared by every listener's data port pools, of every
	// configuration generation: a port of an address is held by one
	// pinhole at a time.
	ports   *nat.PortAllocator
	cfg     *config.Config
	running map[string]*listener // by name
	wg      sync.WaitGroup       // one per Serve, running or retired
}

// listener is one running listener.
type listener struct {
	lc     config.Listener
	limits config.Limits
	srv    *proxy.Server
	sock   *listenSocket
	ln     net.Listener // the Server's: a view of sock, maybe behind a PROXY protocol reader
}

// start binds one listener and serves it.
func (sup *supervisor) start(lc config.Listener, limits config.Limits) error {
	return sup.startOn(nil, lc, limits)
}

// startOn serves lc on sock, a running listener's socket for the same
// address, or on a new socket if sock is nil. On error nothing is left
// bound or running (sock is left as it was).
func (sup *supervisor) startOn(sock *listenSocket, lc config.Listener, limits config.Limits) error {
	srv, err := newServer(lc, limits, sup.limiter, sup.ports, sup.log)
	if err != nil {
		return err
	}
	err = sup.configureTLS(srv, lc)
	if err != nil {
		return err
	}
	srv.Pinholes = sup.fw.pinholes
	srv.Metrics = sup.metrics
	srv.LoginThrottle = sup.logins
	if x := sup.xferlog; x != nil {
		srv.OnTransfer = func(t proxy.Transfer) {
			if err := x.record(t); err != nil {
				sup.log.Warn("transfer not written to the xferlog", "err", err)
			}
		}
	}
	if srv.DataPath == proxy.KernelPath {
		if srv.Connections, err = sup.fw.connections(sup.log); err != nil {
			return fmt.Errorf("listener %s: %w", lc.Name, err)
		}
	}
	if sock == nil {
		lcfg := net.ListenConfig{}
		if lc.Intercept == config.InterceptTPROXY {
			lcfg = rules.TransparentListenConfig()
		}
		raw, err := lcfg.Listen(sup.ctx, "tcp", lc.Listen)
		if err != nil {
			return fmt.Errorf("listener %s: %w", lc.Name, err)
		}
		sock = newListenSocket(raw)
	}
	var ln net.Listener = sock.handTo()
	if lc.ProxyProtocol {
		ln = proxyProtocolListener(ln, lc.Parsed.TrustedProxies)
		srv.ProxyProtocol = true
	}
	sup.running[lc.Name] = &listener{lc: lc, limits: limits, srv: srv, sock: sock, ln: ln}
	to := strings.Join(lc.UpstreamList(), ", ")
	switch lc.Mode {
	case config.ModeTransparent:
		to = "original destination (" + lc.Intercept + ")"
	case config.ModeForward:
		to = "USER name@host"
	}
	sup.log.Info("listening", "listener", lc.Name, "listen", ln.Addr().String(), "to", to,
		"data_path", lc.Data.Path, "server_mode", lc.Data.ServerMode)
	sup.wg.Go(func() {
		if err := srv.Serve(sup.ctx, ln); err != nil && sup.ctx.Err() == nil {
			sup.fail(fmt.Errorf("listener %s: %w", lc.Name, err))
		}
	})
	return nil
}

// newLimiter is the session limiter of lim, shared by every listener.
func newLimiter(lim config.Limits) *proxy.SessionLimiter {
	l := proxy.NewSessionLimiter(lim.MaxSessions, lim.MaxSessionsPerClient)
	l.SetIPv6Prefix(lim.ClientIPv6Prefix)
	return l
}

// configureTLS sets srv's TLS towards clients from lc.
func (sup *supervisor) configureTLS(srv *proxy.Server, lc config.Listener) error {
	if u := lc.UpstreamTLS; u.Mode != config.TLSOff {
		cfg := &tls.Config{ServerName: u.ServerName, MinVersion: tlsVersion(u.MinVersion)}
		if cfg.ServerName == "" {
			host, _, err := net.SplitHostPort(lc.UpstreamList()[0])
			if err != nil {
				return fmt.Errorf("listener %s: upstream: %w", lc.Name, err)
			}
			cfg.ServerName = host
		}
		if u.CA != "" {
			pem, err := os.ReadFile(u.CA)
			if err != nil {
				return fmt.Errorf("listener %s: upstream_tls.ca: %w", lc.Name, err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return fmt.Errorf("listener %s: upstream_tls.ca: %s holds no PEM certificate", lc.Name, u.CA)
			}
		}
		srv.UpstreamTLS = cfg
		srv.UpstreamTLSMode = proxy.TLSExplicit
		if u.Mode == config.TLSImplicit {
			srv.UpstreamTLSMode = proxy.TLSImplicit
		}
	}
	if lc.TLS.Mode == config.TLSOff {
		return nil
	}
	getCert, err := sup.certs.get(lc.TLS.Cert, lc.TLS.Key)
	if err != nil {
		return fmt.Errorf("listener %s: tls: %w", lc.Name, err)
	}
	srv.ClientTLS = &tls.Config{GetCertificate: getCert, MinVersion: tlsVersion(lc.TLS.MinVersion)}
	srv.ClientTLSMode = proxy.TLSExplicit
	if lc.TLS.Mode == config.TLSImplicit {
		srv.ClientTLSMode = proxy.TLSImplicit
	}
	srv.TLSRequired = lc.TLS.Required
	srv.ClientTLSReuse = lc.TLS.SessionReuse == config.ReuseRequired
	return nil
}

// closeSockets closes the sockets of the running listeners, once their
// Servers have returned.
func (sup *supervisor) closeSockets() {
	sup.wg.Wait()
	for _, l := range sup.running {
		l.sock.Close()
	}
}

// reload reads the configuration file again. A file that fails the checks
// of `ftpgate check` is refused with a log line and the old configuration
// stays. Otherwise new limits apply to new sessions, and listeners that
// are new or changed (address, mode, data, limits) start anew: the old
// one stops accepting, its sessions go on untouched until they end.
// Listeners no longer in the file are retired the same way. The firewall,
// metrics and log settings need a restart.
func (sup *supervisor) reload(path string) {
	cfg, err := config.Load(path)
	if err != nil {
		sup.reloads.WithLabelValues("refused").Inc()
		sup.reloadOK.Set(0)
		sup.log.Error("reload refused: the configuration stays as it was", "err", err)
		return
	}
	if !reflect.DeepEqual(cfg.Firewall, sup.cfg.Firewall) || cfg.Metrics != sup.cfg.Metrics || cfg.Log != sup.cfg.Log {
		sup.log.Warn("reload: firewall, metrics and log settings change only at a restart")
	}
	sup.limiter.SetLimits(cfg.Limits.MaxSessions, cfg.Limits.MaxSessionsPerClient)
	sup.limiter.SetIPv6Prefix(cfg.Limits.ClientIPv6Prefix)
	sup.logins.SetLimits(cfg.Limits.LoginFailures, cfg.Limits.LoginFailureWindow, cfg.Limits.LoginBan)
	sup.certs.reload()
	if sup.xferlog != nil {
		// After log rotation moved it away.
		if err := sup.xferlog.reopen(); err != nil {
			sup.log.Error("reload: the xferlog stays where it was", "err", err)
		}
	}
	wanted := map[string]bool{}
	for _, lc := range cfg.Listeners {
		wanted[lc.Name] = true
	}
	// Listeners no longer in the file.
	for name, l := range sup.running {
		if !wanted[name] {
			l.ln.Close()
			l.sock.Close()
			delete(sup.running, name)
			sup.log.Info("listener retired by reload; its sessions go on", "listener", name)
		}
	}
	// New and changed ones: the successor starts before the old one
	// retires, so that a listener is never down. On the same address it
	// takes over the old one's socket; on another it binds first, and if
	// it cannot, the old one stays as it was.
	var errs []error
	for _, lc := range cfg.Listeners {
		old := sup.running[lc.Name]
		switch {
		case old == nil:
			if err := sup.start(lc, cfg.Limits); err != nil {
				errs = append(errs, err)
			}
		case reflect.DeepEqual(lc, old.lc) && cfg.Limits == old.limits:
			// unchanged: keeps running
		case lc.Listen == old.lc.Listen && lc.Intercept == old.lc.Intercept:
			// startOn hands the socket over: the old Server's Accept
			// returns net.ErrClosed and it retires, its sessions go on.
			if err := sup.startOn(old.sock, lc, cfg.Limits); err != nil {
				errs = append(errs, fmt.Errorf("%w (the listener runs on as it was)", err))
				continue
			}
			sup.log.Info("listener replaced by reload on its socket; the old one's sessions go on", "listener", lc.Name)
		default:
			if err := sup.startOn(nil, lc, cfg.Limits); err != nil {
				sup.running[lc.Name] = old
				errs = append(errs, fmt.Errorf("%w (the listener runs on as it was, at %s)", err, old.lc.Listen))
				continue
			}
			old.ln.Close()
			old.sock.Close()
			sup.log.Info("listener moved by reload; the old one's sessions go on", "listener", lc.Name, "from", old.lc.Listen, "to", lc.Listen)
		}
	}
	sup.cfg = cfg
	if err := errors.Join(errs...); err != nil {
		sup.reloads.WithLabelValues("failed").Inc()
		sup.reloadOK.Set(0)
		sup.log.Error("reload: some listeners did not start", "err", err)
		return
	}
	sup.reloads.WithLabelValues("ok").Inc()
	sup.reloadOK.Set(1)
	sup.reloadTime.SetToCurrentTime()
	sup.log.Info("configuration reloaded", "summary", cfg.Summary())
}

// newServer builds the proxy for one configured listener. cfg has been
// validated, so parse errors here are programming errors, still reported.
func newServer(lc config.Listener, lim config.Limits, limiter *proxy.SessionLimiter, ports *nat.PortAllocator, log *slog.Logger) (*proxy.Server, error) {
	modes := map[string]proxy.ServerMode{
		config.ServerModeSame:    proxy.SameMode,
		config.ServerModePassive: proxy.PassiveMode,
		config.ServerModeActive:  proxy.ActiveMode,
	}
	mode, ok := modes[lc.Data.ServerMode]
	if !ok {
		return nil, fmt.Errorf("listener %s: unknown server_mode %q", lc.Name, lc.Data.ServerMode)
	}
	// The values the check parsed (lc.Parsed): none is parsed again here.
	v := lc.Parsed
	if v.ClientPorts.Len() == 0 || v.ServerPorts.Len() == 0 {
		return nil, fmt.Errorf("listener %s: the configuration was not checked (no parsed port ranges)", lc.Name)
	}
	srv := &proxy.Server{
		Name:             lc.Name,
		Upstream:         lc.Upstream,
		Upstreams:        lc.Upstreams,
		UpstreamHoldDown: lc.UpstreamHoldDown,
		ServerMode:       mode,
		ClientPorts:      nat.NewSharedPortPool(v.ClientPorts, ports),
		ServerPorts:      nat.NewSharedPortPool(v.ServerPorts, ports),
		ClientAddress:    v.ClientAddress,
		ServerAddress:    v.ServerAddress,
		AdvertisePorts:   v.AdvertisePorts,
		AllowClients:     v.AllowClients,
		SessionRate:      v.SessionRate,
		ListenerRate:     v.ListenerRate,
		LoginTimeout:     lim.LoginTimeout,
		IdleTimeout:      lim.IdleTimeout,
		DataTimeout:      lim.DataTimeout,
		DataIdle:         lim.DataIdleTimeout,
		DrainTimeout:     lim.DrainTimeout,
		MaxLineBytes:     lim.MaxLineBytes,
		Limiter:          limiter,
		Logger:           log,
	}
	srv.ClientPorts.SetOwnerShare(lim.ClientPortShare)
	srv.ServerPorts.SetOwnerShare(lim.ClientPortShare)
	if v.ClientAddressName != "" {
		// Resolved while serving.
		srv.ClientAddressHost = &proxy.ResolvedAddress{Host: v.ClientAddressName, Refresh: lc.Data.ClientAddressRefresh}
	}
	if lc.Data.Path == config.PathKernel {
		srv.DataPath = proxy.KernelPath
	}
	for _, v := range lc.ExtraVerbs {
		srv.ExtraVerbs = append(srv.ExtraVerbs, strings.ToUpper(v))
	}
	srv.ReadOnly = lc.ReadOnly
	if lc.UpstreamPolicy == config.UpstreamRoundRobin {
		srv.UpstreamPolicy = proxy.UpstreamsRoundRobin
	}
	switch lc.UpstreamProxyProtocol {
	case "v1":
		srv.UpstreamProxyProtocol = 1
	case "v2":
		srv.UpstreamProxyProtocol = 2
	}
	for _, v := range lc.DenyCommands {
		srv.DenyCommands = append(srv.DenyCommands, strings.ToUpper(v))
	}
	switch lc.Data.SourceCheck {
	case "trusted":
		srv.SourceCheck = proxy.SourceCheckTrusted
		srv.TrustedSources = v.TrustedProxies
	case "off":
		srv.SourceCheck = proxy.SourceCheckOff
		log.Warn("data.source_check is off: data connections are accepted from any source; only the firewall pinholes guard them",
			"listener", lc.Name)
	}
	switch lc.Data.ServerCommands {
	case "classic":
		srv.ServerCommands = proxy.ClassicCommands
	case "extended":
		srv.ServerCommands = proxy.ExtendedCommands
	}
	if lc.Mode == config.ModeTransparent || lc.Mode == config.ModeForward {
		srv.Forward = lc.Mode == config.ModeForward
		srv.AllowDestinations = v.AllowDestinations
		srv.AllowPorts = v.AllowPorts
		if lc.Mode == config.ModeTransparent {
			srv.OriginalDestination = redirectedDestination
			if lc.Intercept == config.InterceptTPROXY {
				srv.OriginalDestination = tproxyDestination
			}
		}
	}
	return srv, nil
}

// proxyProtocolListener reads a PROXY protocol header (v1 or v2) on every
// connection from a trusted load balancer, and refuses one from any other
// source (which may still connect without a header). The session reads the
// header first, so a slow peer blocks only itself.
func proxyProtocolListener(ln net.Listener, nets []netip.Prefix) net.Listener {
	return &proxyproto.Listener{
		Listener: ln,
		ConnPolicy: func(opts proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
			if ta, ok := opts.Upstream.(*net.TCPAddr); ok {
				from := ta.AddrPort().Addr().Unmap()
				for _, p := range nets {
					if p.Contains(from) {
						return proxyproto.REQUIRE, nil
					}
				}
			}
			// Not trusted: the connection is served as it is, at once (an
			// FTP client waits for the greeting; waiting for a header would
			// hold it up). A header it sends anyway is not believed: the
			// session refuses it as a command.
			return proxyproto.SKIP, nil
		},
		ReadHeaderTimeout: 10 * time.Second, // from trusted load balancers only
	}
}

// redirectedDestination is where a connection REDIRECTed to ftpgate was
// going (SO_ORIGINAL_DST).
func redirectedDestination(c net.Conn) (netip.AddrPort, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%T is not a TCP connection", c)
	}
	return rules.OriginalDestination(tc)
}

// tproxyDestination is where a connection diverted by TPROXY was going:
// the local address it was accepted on.
func tproxyDestination(c net.Conn) (netip.AddrPort, error) {
	ta, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%T is not a TCP address", c.LocalAddr())
	}
	return ta.AddrPort(), nil
}

func newLogger(lc config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(lc.Level)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if lc.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
