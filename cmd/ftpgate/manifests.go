package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/ftpgate/ftpgate/cmd/ftpgate/config"
	"github.com/ftpgate/ftpgate/nat"
)

const manifestsHelp = `usage: ftpgate manifests --config FILE [--name NAME]

ftpgate manifests prints, as YAML on stdout, the Kubernetes Services that
expose the ports of the configuration in FILE, which it first checks as
"ftpgate check" does (certificate files included). A Service has no port
ranges, so every passive data port is listed on its own:

  - Service NAME, type LoadBalancer with externalTrafficPolicy Local,
    selecting the pods labelled app.kubernetes.io/name=NAME: the control
    port of each listener (port 21 if there is one listener; with several,
    each keeps its own number), named ftp (ftp-0, ftp-1, ...), and every
    port of its client_ports, named pasv-PORT, each to the same port of
    the pod (with advertise_ports: the advertised port to the client_ports
    port it stands for);
  - Service NAME-metrics, a ClusterIP Service with the port metrics.listen,
    named metrics, labelled app.kubernetes.io/component=ftpgate for a
    ServiceMonitor (none if metrics.listen is empty or a loopback address).

`

// manifestPort is one port of a Service.
type manifestPort struct {
	name         string
	port, target uint16
	comment      string // a comment line before it, if any
}

// manyServicePorts is the port count above which manifests warns: load
// balancers commonly limit the ports of one Service.
const manyServicePorts = 100

// serviceName is a DNS-1035 label that leaves room for "-metrics".
var serviceName = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,53}[a-z0-9])?$`)

func cmdManifests(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ftpgate manifests", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/ftpgate/ftpgate.yaml", "configuration `file`")
	name := fs.String("name", "ftpgate", "the Services' `name` and the pods' app.kubernetes.io/name label")
	usage := func(w io.Writer) {
		fmt.Fprint(w, manifestsHelp)
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout)
			return 0
		}
		usage(stderr)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ftpgate manifests: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if !serviceName.MatchString(*name) {
		fmt.Fprintf(stderr, "ftpgate manifests: --name %q: want lower-case letters, digits and '-', starting with a letter, at most 55 characters\n", *name)
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "ftpgate manifests: %s\n", indentErrors(err))
		return 1
	}
	out, warnings, err := serviceManifests(cfg, filepath.Base(*path), *name)
	for _, w := range warnings {
		fmt.Fprintf(stderr, "ftpgate manifests: warning: %s\n", w)
	}
	if err != nil {
		fmt.Fprintf(stderr, "ftpgate manifests: %v\n", err)
		return 1
	}
	fmt.Fprint(stdout, out)
	return 0
}

// servicePorts lists the ports of the FTP Service for cfg.
func servicePorts(cfg *config.Config) ([]manifestPort, error) {
	var ports []manifestPort
	owner := map[uint16]string{} // Service port: what uses it
	add := func(p manifestPort, what string) error {
		if o, ok := owner[p.port]; ok {
			return fmt.Errorf("%s and %s both need Service port %d: one Service cannot expose both (give them distinct ports, or write two Services)", o, what, p.port)
		}
		owner[p.port] = what
		ports = append(ports, p)
		return nil
	}
	for i, l := range cfg.Listeners {
		ap, err := netip.ParseAddrPort(l.Listen)
		if err != nil {
			return nil, fmt.Errorf("listener %s: listen: %w", l.Name, err)
		}
		ctl := manifestPort{name: "ftp", port: 21, target: ap.Port(),
			comment: fmt.Sprintf("listener %s: the control port, %d in the pod", l.Name, ap.Port())}
		if len(cfg.Listeners) > 1 {
			ctl.name, ctl.port = fmt.Sprintf("ftp-%d", i), ap.Port()
		}
		if err := add(ctl, fmt.Sprintf("listener %s's control port", l.Name)); err != nil {
			return nil, err
		}
		client, err := nat.ParsePortRange(l.Data.ClientPorts)
		if err != nil {
			return nil, fmt.Errorf("listener %s: client_ports: %w", l.Name, err)
		}
		advertised := client
		comment := fmt.Sprintf("listener %s: client_ports %s, each to the same port", l.Name, client)
		if l.Data.AdvertisePorts != "" {
			if advertised, err = nat.ParsePortRange(l.Data.AdvertisePorts); err != nil {
				return nil, fmt.Errorf("listener %s: advertise_ports: %w", l.Name, err)
			}
			comment = fmt.Sprintf("listener %s: advertise_ports %s, to client_ports %s port for port", l.Name, advertised, client)
		}
		for k := 0; k < client.Len(); k++ {
			p := manifestPort{port: advertised.First + uint16(k), target: client.First + uint16(k)}
			p.name = fmt.Sprintf("pasv-%d", p.port)
			if k == 0 {
				p.comment = comment
			}
			if err := add(p, fmt.Sprintf("listener %s's data port %d", l.Name, p.target)); err != nil {
				return nil, err
			}
		}
	}
	return ports, nil
}

// metricsPort is the port of the metrics Service for cfg: ok false if
// there is none (metrics off, or reachable from the pod only), with a
// warning for the latter.
func metricsPort(cfg *config.Config) (port uint16, ok bool, warning string, err error) {
	if cfg.Metrics.Listen == "" {
		return 0, false, "", nil
	}
	host, p, err := splitHostPort(cfg.Metrics.Listen)
	if err != nil {
		return 0, false, "", fmt.Errorf("metrics.listen: %w", err)
	}
	if a, err := netip.ParseAddr(host); (err == nil && a.IsLoopback()) || host == "localhost" {
		return 0, false, fmt.Sprintf("metrics.listen %s is a loopback address: no Service can reach it, so none is written", cfg.Metrics.Listen), nil
	}
	return p, true, "", nil
}

// splitHostPort splits "host:port" and parses the port.
func splitHostPort(s string) (string, uint16, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("splitting %q: %w", s, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return "", 0, fmt.Errorf("%q: port must be a number from 1 to 65535", s)
	}
	return host, uint16(p), nil
}

// serviceManifests renders the Services of cfg, loaded from the file
// source, as YAML documents.
func serviceManifests(cfg *config.Config, source, name string) (string, []string, error) {
	ports, err := servicePorts(cfg)
	if err != nil {
		return "", nil, err
	}
	var warnings []string
	if len(ports) > manyServicePorts {
		warnings = append(warnings, fmt.Sprintf("the Service has %d ports: many load balancers limit the ports of one Service, and each costs rules on every node; a smaller client_ports range keeps it short", len(ports)))
	}
	mport, hasMetrics, warning, err := metricsPort(cfg)
	if err != nil {
		return "", nil, err
	}
	if warning != "" {
		warnings = append(warnings, warning)
	}
	for _, p := range ports {
		if len(p.name) > 15 { // IANA service names; cannot happen with the names above
			return "", nil, fmt.Errorf("port name %q is longer than 15 characters", p.name)
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "# Generated by \"ftpgate manifests --name %s\" from %s: regenerate it when\n", name, source)
	b.WriteString("# the listeners or their client_ports change. A Service has no port\n")
	b.WriteString("# ranges: each passive data port is listed, with the port the 227 and 229\n")
	b.WriteString("# replies name. externalTrafficPolicy Local keeps each client's own\n")
	b.WriteString("# address, which ftpgate checks on the data connections.\n")
	b.WriteString("apiVersion: v1\nkind: Service\nmetadata:\n")
	fmt.Fprintf(&b, "  name: %s\n  labels:\n    app.kubernetes.io/name: %s\n", name, name)
	b.WriteString("spec:\n  type: LoadBalancer\n  externalTrafficPolicy: Local\n")
	fmt.Fprintf(&b, "  selector:\n    app.kubernetes.io/name: %s\n  ports:\n", name)
	for _, p := range ports {
		if p.comment != "" {
			fmt.Fprintf(&b, "    # %s\n", p.comment)
		}
		fmt.Fprintf(&b, "    - name: %s\n      port: %d\n      targetPort: %d\n", p.name, p.port, p.target)
	}
	if hasMetrics {
		b.WriteString("---\n")
		b.WriteString("# /metrics, inside the cluster only (not on the load balancer), for a\n")
		b.WriteString("# ServiceMonitor that selects app.kubernetes.io/component: ftpgate.\n")
		b.WriteString("apiVersion: v1\nkind: Service\nmetadata:\n")
		fmt.Fprintf(&b, "  name: %s-metrics\n  labels:\n    app.kubernetes.io/name: %s\n    app.kubernetes.io/component: ftpgate\n", name, name)
		fmt.Fprintf(&b, "spec:\n  type: ClusterIP\n  selector:\n    app.kubernetes.io/name: %s\n  ports:\n", name)
		fmt.Fprintf(&b, "    - name: metrics\n      port: %d\n      targetPort: %d\n", mport, mport)
	}
	return b.String(), warnings, nil
}
