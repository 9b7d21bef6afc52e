package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

var updateManifests = flag.Bool("update", false, "rewrite testdata/manifests-*.yaml from ftpgate manifests")

// manifests runs "ftpgate manifests" on the configuration at path (with
// test certificates in place of the deployment's) and returns its output.
func manifests(t *testing.T, path string, args ...string) (stdout, stderr string) {
	t.Helper()
	path = withTestCertificates(t, path)
	var out, errOut bytes.Buffer
	if code := run(append([]string{"manifests", "--config", path}, args...), &out, &errOut); code != 0 {
		t.Fatalf("ftpgate manifests --config %s %v: exit %d\n%s", path, args, code, errOut.String())
	}
	return out.String(), errOut.String()
}

// decodeDocuments decodes every YAML document of text.
func decodeDocuments(t *testing.T, file, text string) []*k8sObject {
	t.Helper()
	var objs []*k8sObject
	dec := yaml.NewDecoder(strings.NewReader(text))
	for {
		o := &k8sObject{file: file}
		err := dec.Decode(o)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("%s: %v\n%s", file, err, text)
		}
		objs = append(objs, o)
	}
}

// generatedServices runs "ftpgate manifests --name name" on the
// configuration at path and returns its Services by name, after checking
// their port names.
func generatedServices(t *testing.T, path, name string) map[string]*k8sObject {
	t.Helper()
	out, _ := manifests(t, path, "--name", name)
	services := map[string]*k8sObject{}
	for _, o := range decodeDocuments(t, "ftpgate manifests", out) {
		if o.APIVersion != "v1" || o.Kind != "Service" {
			t.Errorf("ftpgate manifests printed a %s %s", o.APIVersion, o.Kind)
			continue
		}
		checkPortNames(t, o)
		services[o.Metadata.Name] = o
	}
	return services
}

// portName is a Kubernetes port name (an IANA service name): at most 15
// lower-case letters, digits and inner single '-', with a letter.
var portName = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)

func checkPortNames(t *testing.T, o *k8sObject) {
	t.Helper()
	var svc k8sService
	o.decodeSpec(t, &svc)
	seen := map[string]bool{}
	ports := map[int]bool{}
	for _, p := range svc.Ports {
		if len(p.Name) > 15 || !portName.MatchString(p.Name) || !strings.ContainsAny(p.Name, "abcdefghijklmnopqrstuvwxyz") {
			t.Errorf("Service %s: port name %q is not a valid port name (at most 15 characters)", o.Metadata.Name, p.Name)
		}
		if seen[p.Name] || ports[p.Port] {
			t.Errorf("Service %s: port %s (%d) twice", o.Metadata.Name, p.Name, p.Port)
		}
		seen[p.Name], ports[p.Port] = true, true
	}
}

// servicePortSet is a Service's ports as "name port->targetPort".
func servicePortSet(t *testing.T, o *k8sObject) []string {
	t.Helper()
	var svc k8sService
	o.decodeSpec(t, &svc)
	var set []string
	for _, p := range svc.Ports {
		set = append(set, fmt.Sprintf("%s %d->%d", p.Name, p.Port, p.TargetPort))
	}
	slices.Sort(set)
	return set
}

// comparePorts checks that the Service checked in has the generated one's
// ports, by name, port and targetPort.
func comparePorts(t *testing.T, generated, checkedIn *k8sObject) {
	t.Helper()
	got, want := servicePortSet(t, checkedIn), servicePortSet(t, generated)
	for _, p := range want {
		if !slices.Contains(got, p) {
			t.Errorf("%s: Service %s lacks port %s, which ftpgate manifests writes", checkedIn.file, checkedIn.Metadata.Name, p)
		}
	}
	for _, p := range got {
		if !slices.Contains(want, p) {
			t.Errorf("%s: Service %s has port %s, which ftpgate manifests does not write", checkedIn.file, checkedIn.Metadata.Name, p)
		}
	}
}

func TestManifestsGolden(t *testing.T) {
	out, stderr := manifests(t, filepath.Join(deployDir, "examples", "sidecar.yaml"), "--name", "legacy-ftp")
	if stderr != "" {
		t.Errorf("stderr: %s", stderr)
	}
	golden := filepath.Join("testdata", "manifests-sidecar.yaml")
	if *updateManifests {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test -run TestManifestsGolden -update writes it)", err)
	}
	if out != string(want) {
		t.Errorf("ftpgate manifests differs from %s (go test -run TestManifestsGolden -update rewrites it):\n%s", golden, out)
	}
	for _, o := range decodeDocuments(t, golden, out) {
		checkPortNames(t, o)
	}
}

// TestManifestsSidecar checks that deploy/kubernetes/sidecar/service.yaml
// holds, port for port, the Services that "ftpgate manifests" writes for
// the configuration in the sidecar's ConfigMap, and no other Service.
func TestManifestsSidecar(t *testing.T) {
	dir := filepath.Join(deployDir, "kubernetes", "sidecar")
	objs := loadManifests(t, dir)
	cm := findObject(t, objs, "ConfigMap")
	path := filepath.Join(t.TempDir(), "ftpgate.yaml")
	if err := os.WriteFile(path, []byte(cm.Data["ftpgate.yaml"]), 0o644); err != nil {
		t.Fatal(err)
	}
	dep := findObject(t, objs, "Deployment")
	generated := generatedServices(t, path, dep.Metadata.Name)
	if len(generated) != 2 {
		t.Errorf("ftpgate manifests wrote %d Services, want 2 (FTP, metrics)", len(generated))
	}
	checkedIn := map[string]*k8sObject{}
	for _, o := range objs {
		if o.Kind == "Service" {
			if o.file != "service.yaml" {
				t.Errorf("Service %s is in %s, not service.yaml", o.Metadata.Name, o.file)
			}
			checkedIn[o.Metadata.Name] = o
		}
	}
	for name, g := range generated {
		c := checkedIn[name]
		if c == nil {
			t.Errorf("service.yaml has no Service %s, which ftpgate manifests writes", name)
			continue
		}
		comparePorts(t, g, c)
		var gs, cs k8sService
		g.decodeSpec(t, &gs)
		c.decodeSpec(t, &cs)
		if gs.Type != cs.Type || gs.ExternalTrafficPolicy != cs.ExternalTrafficPolicy || !selects(gs.Selector, cs.Selector) || !selects(cs.Selector, gs.Selector) {
			t.Errorf("Service %s: type %q, externalTrafficPolicy %q, selector %v; ftpgate manifests writes %q, %q, %v",
				name, cs.Type, cs.ExternalTrafficPolicy, cs.Selector, gs.Type, gs.ExternalTrafficPolicy, gs.Selector)
		}
	}
	for name := range checkedIn {
		if generated[name] == nil {
			t.Errorf("service.yaml has a Service %s, which ftpgate manifests does not write", name)
		}
	}
}

// manifestsConfig writes a configuration of the given listeners, with
// metrics on metricsListen.
func manifestsConfig(t *testing.T, listeners, metricsListen string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ftpgate.yaml")
	text := "listeners:\n" + listeners + "firewall:\n  backend: none\nmetrics:\n  listen: " + metricsListen + "\n"
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestManifestsListeners(t *testing.T) {
	path := manifestsConfig(t, `  - name: one
    listen: 0.0.0.0:2021
    upstream: 127.0.0.1:2121
    data: {path: relay, client_ports: 40000-40002}
  - name: two
    listen: 0.0.0.0:2022
    upstream: 127.0.0.1:2122
    data: {path: relay, client_ports: 41000-41001, advertise_ports: 31000-31001, server_ports: 51000-51009}
`, "0.0.0.0:9200")
	services := generatedServices(t, path, "gw")
	if len(services) != 2 || services["gw"] == nil || services["gw-metrics"] == nil {
		t.Fatalf("Services %v, want gw and gw-metrics", slices.Collect(maps.Keys(services)))
	}
	want := []string{
		// Several listeners: each control port keeps its number.
		"ftp-0 2021->2021", "ftp-1 2022->2022",
		"pasv-40000 40000->40000", "pasv-40001 40001->40001", "pasv-40002 40002->40002",
		// advertise_ports: the port the 227 names, to the port ftpgate listens on.
		"pasv-31000 31000->41000", "pasv-31001 31001->41001",
	}
	slices.Sort(want)
	if got := servicePortSet(t, services["gw"]); !slices.Equal(got, want) {
		t.Errorf("gw ports:\n got %v\nwant %v", got, want)
	}
	if got := servicePortSet(t, services["gw-metrics"]); !slices.Equal(got, []string{"metrics 9200->9200"}) {
		t.Errorf("gw-metrics ports %v", got)
	}
	var svc k8sService
	services["gw"].decodeSpec(t, &svc)
	if svc.Type != "LoadBalancer" || svc.ExternalTrafficPolicy != "Local" || svc.Selector["app.kubernetes.io/name"] != "gw" {
		t.Errorf("gw: type %q, externalTrafficPolicy %q, selector %v", svc.Type, svc.ExternalTrafficPolicy, svc.Selector)
	}
	if services["gw-metrics"].Metadata.Labels["app.kubernetes.io/component"] != alertJob {
		t.Errorf("gw-metrics labels %v: the ServiceMonitors select app.kubernetes.io/component: %s", services["gw-metrics"].Metadata.Labels, alertJob)
	}
}

func TestManifestsRefused(t *testing.T) {
	one := "  - name: one\n    listen: 0.0.0.0:2021\n    upstream: 127.0.0.1:2121\n    data: {path: relay, client_ports: 40000-40009}\n"
	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string // in stdout
		err  string // in stderr
	}{
		{name: "help", args: []string{"--help"}, code: 0, out: "ftpgate manifests prints, as YAML on stdout, the Kubernetes Services"},
		{name: "bad name", args: []string{"--config", manifestsConfig(t, one, ""), "--name", "Legacy_FTP"}, code: 2, err: `--name "Legacy_FTP"`},
		{name: "stray argument", args: []string{"--config", manifestsConfig(t, one, ""), "extra"}, code: 2, err: `unexpected argument "extra"`},
		{name: "bad config", args: []string{"--config", manifestsConfig(t, "  - name: one\n", "")}, code: 1, err: "listen: required"},
		// Two addresses, one port: valid for ftpgate, not for one Service.
		{name: "shared data port", code: 1, err: "both need Service port 40005", args: []string{"--config", manifestsConfig(t,
			"  - name: a\n    listen: 10.0.0.1:2021\n    upstream: 127.0.0.1:2121\n    data: {path: relay, client_ports: 40000-40009}\n"+
				"  - name: b\n    listen: 10.0.0.2:2022\n    upstream: 127.0.0.1:2121\n    data: {path: relay, client_ports: 40005-40006, server_ports: 51000-51009}\n", "")}},
		// No Service for a loopback metrics listener, and no Service at all
		// for metrics off.
		{name: "loopback metrics", args: []string{"--config", manifestsConfig(t, one, "127.0.0.1:9121")}, code: 0, err: "loopback"},
		{name: "no metrics", args: []string{"--config", manifestsConfig(t, one, `""`)}, code: 0, out: "name: pasv-40009"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"manifests"}, tc.args...), &stdout, &stderr)
			if code != tc.code || !strings.Contains(stdout.String(), tc.out) || !strings.Contains(stderr.String(), tc.err) {
				t.Errorf("exit %d, want %d; stdout %q, want %q in it; stderr %q, want %q in it",
					code, tc.code, stdout.String(), tc.out, stderr.String(), tc.err)
			}
			if code == 0 && tc.name != "help" && strings.Contains(stdout.String(), "-metrics") {
				t.Errorf("a metrics Service for metrics.listen that no Service can reach:\n%s", stdout.String())
			}
		})
	}
}
