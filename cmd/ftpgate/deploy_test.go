package main

// Tests of deploy/: every example configuration and every configuration
// embedded in a Kubernetes ConfigMap passes "ftpgate check"; the Kubernetes
// manifests decode, and their Services expose exactly the ports the
// configurations listen on; the scaled-out StatefulSet's render-config
// script gives each replica its own range and address; the systemd unit
// checks before start and cleans up after stop. Every Pod spec meets the
// "restricted" Pod Security Standard, pins its images, and stops in
// order (preStop, grace period above drain_timeout); a ServiceMonitor
// finds the metrics port. Nothing here needs a cluster, Docker or
// systemd; the alert rules need promtool. A missing file or tool fails
// the tests: none skips.

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"math/big"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ftpgate/ftpgate/cmd/ftpgate/config"
	"github.com/ftpgate/ftpgate/nat"
	"github.com/ftpgate/ftpgate/proxy"
	"github.com/ftpgate/ftpgate/rules"
)

// deployDir is deploy/, seen from this package's directory.
const deployDir = "../../deploy"

// The deployments: one example configuration each, and for Kubernetes a
// directory of manifests named like its example.
var (
	deployExamples = []string{"home-router", "corporate-edge", "sidecar", "scaled"}
	deployK8sDirs  = []string{"sidecar", "scaled"}
)

// checkConfig runs "ftpgate check --config path", as the systemd unit's
// ExecStartPre does, and returns the loaded configuration.
//
// The examples name their certificates under /etc/ftpgate/tls/, where a
// deployment puts them and check loads them: they are checked with a test
// certificate written there in their place (a copy of the file, under
// the test's temporary directory).
func checkConfig(t *testing.T, path string) *config.Config {
	t.Helper()
	path = withTestCertificates(t, path)
	var stdout, stderr bytes.Buffer
	if code := run([]string{"check", "--config", path}, &stdout, &stderr); code != 0 {
		t.Fatalf("ftpgate check --config %s: exit %d\n%s%s", path, code, stdout.String(), stderr.String())
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("loading %s after check passed: %v", path, err)
	}
	return cfg
}

func TestDeployExamples(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join(deployDir, "examples", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range deployExamples {
		if !slices.Contains(paths, filepath.Join(deployDir, "examples", name+".yaml")) {
			t.Errorf("deploy/examples/%s.yaml is missing", name)
		}
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) { checkConfig(t, path) })
	}
}

// k8sObject is one document of a Kubernetes manifest: the fields these
// tests read.
type k8sObject struct {
	file       string
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Data      map[string]string `yaml:"data"`      // ConfigMap
	Resources []string          `yaml:"resources"` // Kustomization
	Spec      yaml.Node         `yaml:"spec"`
}

type k8sService struct {
	Type                  string            `yaml:"type"`
	ClusterIP             string            `yaml:"clusterIP"`
	ExternalTrafficPolicy string            `yaml:"externalTrafficPolicy"`
	Selector              map[string]string `yaml:"selector"`
	Ports                 []struct {
		Name       string `yaml:"name"`
		Port       int    `yaml:"port"`
		TargetPort int    `yaml:"targetPort"` // numeric in these manifests
	} `yaml:"ports"`
}

type k8sWorkload struct { // Deployment, StatefulSet
	Replicas int `yaml:"replicas"`
	Strategy struct {
		Type string `yaml:"type"`
	} `yaml:"strategy"`
	Template struct {
		Metadata struct {
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"metadata"`
		Spec k8sPodSpec `yaml:"spec"`
	} `yaml:"template"`
}

// k8sPodSpec holds what the Pod Security Standards and these tests read.
type k8sPodSpec struct {
	TerminationGracePeriodSeconds *int64                 `yaml:"terminationGracePeriodSeconds"`
	HostNetwork                   bool                   `yaml:"hostNetwork"`
	HostPID                       bool                   `yaml:"hostPID"`
	HostIPC                       bool                   `yaml:"hostIPC"`
	SecurityContext               k8sSecurityContext     `yaml:"securityContext"`
	InitContainers                []k8sContainer         `yaml:"initContainers"`
	Containers                    []k8sContainer         `yaml:"containers"`
	EphemeralContainers           []k8sContainer         `yaml:"ephemeralContainers"`
	Volumes                       []map[string]yaml.Node `yaml:"volumes"`
}

// k8sSecurityContext is a pod's or a container's: the fields of both that
// the Pod Security Standards constrain.
type k8sSecurityContext struct {
	RunAsNonRoot             *bool  `yaml:"runAsNonRoot"`
	RunAsUser                *int64 `yaml:"runAsUser"`
	AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
	Privileged               *bool  `yaml:"privileged"`
	ProcMount                string `yaml:"procMount"`
	Capabilities             struct {
		Add  []string `yaml:"add"`
		Drop []string `yaml:"drop"`
	} `yaml:"capabilities"`
	SeccompProfile struct {
		Type string `yaml:"type"`
	} `yaml:"seccompProfile"`
	AppArmorProfile struct {
		Type string `yaml:"type"`
	} `yaml:"appArmorProfile"`
	SELinuxOptions struct {
		User string `yaml:"user"`
		Role string `yaml:"role"`
		Type string `yaml:"type"`
	} `yaml:"seLinuxOptions"`
	WindowsOptions struct {
		HostProcess bool `yaml:"hostProcess"`
	} `yaml:"windowsOptions"`
	Sysctls []struct {
		Name string `yaml:"name"`
	} `yaml:"sysctls"` // pod only
}

type k8sContainer struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
		HostPort      int    `yaml:"hostPort"`
		HostIP        string `yaml:"hostIP"`
	} `yaml:"ports"`
	ReadinessProbe struct {
		HTTPGet struct {
			Path string `yaml:"path"`
			Port string `yaml:"port"`
		} `yaml:"httpGet"`
	} `yaml:"readinessProbe"`
	Lifecycle struct {
		PreStop *struct {
			Sleep *struct {
				Seconds int64 `yaml:"seconds"`
			} `yaml:"sleep"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	SecurityContext k8sSecurityContext `yaml:"securityContext"`
}

func (o *k8sObject) decodeSpec(t *testing.T, v any) {
	t.Helper()
	if err := o.Spec.Decode(v); err != nil {
		t.Fatalf("%s: %s %s: spec: %v", o.file, o.Kind, o.Metadata.Name, err)
	}
}

// loadManifests decodes every YAML document of every *.yaml file in dir.
func loadManifests(t *testing.T, dir string) []*k8sObject {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("%s: no manifests", dir)
	}
	var objs []*k8sObject
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for i := 0; ; i++ {
			o := &k8sObject{file: filepath.Base(file)}
			err := dec.Decode(o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: document %d: %v", file, i, err)
			}
			if o.APIVersion == "" || o.Kind == "" {
				t.Errorf("%s: document %d has no apiVersion or kind", file, i)
			}
			if o.Kind != "Kustomization" && o.Metadata.Name == "" {
				t.Errorf("%s: document %d (%s) has no metadata.name", file, i, o.Kind)
			}
			objs = append(objs, o)
		}
	}
	return objs
}

func findObject(t *testing.T, objs []*k8sObject, kind string) *k8sObject {
	t.Helper()
	var found *k8sObject
	for _, o := range objs {
		if o.Kind == kind {
			if found != nil {
				t.Fatalf("more than one %s: %s and %s", kind, found.Metadata.Name, o.Metadata.Name)
			}
			found = o
		}
	}
	if found == nil {
		t.Fatalf("no %s", kind)
	}
	return found
}

func TestDeployKubernetes(t *testing.T) {
	for _, name := range deployK8sDirs {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(deployDir, "kubernetes", name)
			objs := loadManifests(t, dir)
			checkKustomization(t, dir, objs)

			// Every ftpgate configuration in a ConfigMap passes check, and
			// the one named ftpgate.yaml is the deployment's example.
			var (
				checked int
				cfg     *config.Config // ftpgate.yaml's
			)
			for _, o := range objs {
				if o.Kind != "ConfigMap" {
					continue
				}
				for key, text := range o.Data {
					if !strings.HasSuffix(key, ".yaml") {
						continue
					}
					path := filepath.Join(t.TempDir(), key)
					if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
						t.Fatal(err)
					}
					t.Logf("%s: ConfigMap %s: %s", o.file, o.Metadata.Name, key)
					c := checkConfig(t, path)
					checked++
					if key == "ftpgate.yaml" {
						cfg = c
						example := filepath.Join(deployDir, "examples", name+".yaml")
						want, err := os.ReadFile(example)
						if err != nil {
							t.Fatal(err)
						}
						if text != string(want) {
							t.Errorf("%s: ConfigMap %s: %s differs from %s; embed the example verbatim", o.file, o.Metadata.Name, key, example)
						}
					}
				}
			}
			if checked == 0 {
				t.Fatalf("%s: no ConfigMap holds an ftpgate configuration (a data key ending in .yaml)", dir)
			}
			if cfg == nil {
				t.Fatalf("%s: no ConfigMap holds ftpgate.yaml", dir)
			}

			pods := podSpecs(t, objs)
			if len(pods) == 0 {
				t.Fatalf("%s: no Pod spec", dir)
			}
			for _, p := range pods {
				checkRestricted(t, p.where, p.spec)
				checkImages(t, p.where, p.spec)
				checkStopping(t, p.where, p.spec, cfg.Limits.DrainTimeout)
			}
			checkServiceMonitor(t, objs, cfg)

			switch name {
			case "sidecar":
				checkSidecar(t, objs)
			case "scaled":
				checkScaled(t, objs)
			}
		})
	}
}

// checkKustomization checks that kustomization.yaml lists every other
// manifest of dir, and nothing else, so that "kubectl apply -k" applies
// them all.
func checkKustomization(t *testing.T, dir string, objs []*k8sObject) {
	t.Helper()
	k := findObject(t, objs, "Kustomization")
	if k.file != "kustomization.yaml" {
		t.Errorf("the Kustomization is in %s, want kustomization.yaml", k.file)
	}
	var want []string
	for _, o := range objs {
		if o.file != k.file && !slices.Contains(want, o.file) {
			want = append(want, o.file)
		}
	}
	got := slices.Clone(k.Resources)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s/kustomization.yaml: resources %v, want the manifests %v", dir, got, want)
	}
}

// ftpgateListener returns the only listener of a deployment's
// configuration, its control port and its passive range.
func ftpgateListener(t *testing.T, cfg *config.Config) (config.Listener, uint16, nat.PortRange) {
	t.Helper()
	if len(cfg.Listeners) != 1 {
		t.Fatalf("%d listeners, want 1", len(cfg.Listeners))
	}
	l := cfg.Listeners[0]
	ap, err := netip.ParseAddrPort(l.Listen)
	if err != nil {
		t.Fatal(err)
	}
	r, err := nat.ParsePortRange(l.Data.ClientPorts)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Firewall.Backend != config.BackendNone {
		t.Errorf("firewall.backend %q, want none: the pod has no NET_ADMIN", cfg.Firewall.Backend)
	}
	if l.Data.ClientAddress == "" {
		t.Error("no client_address: the 227 would name the pod's own address")
	}
	return l, ap.Port(), r
}

// checkService checks that svc sends port 21 to ftpgate's control port,
// and exactly the ports of pasv each to the same port, with the traffic
// policy that keeps the client's address.
func checkService(t *testing.T, o *k8sObject, control uint16, pasv nat.PortRange) {
	t.Helper()
	var svc k8sService
	o.decodeSpec(t, &svc)
	if svc.Type != "LoadBalancer" || svc.ExternalTrafficPolicy != "Local" {
		t.Errorf("Service %s: type %q, externalTrafficPolicy %q; want LoadBalancer, Local", o.Metadata.Name, svc.Type, svc.ExternalTrafficPolicy)
	}
	want := map[int]int{21: int(control)}
	for p := int(pasv.First); p <= int(pasv.Last); p++ {
		want[p] = p
	}
	got := map[int]int{}
	for _, p := range svc.Ports {
		got[p.Port] = p.TargetPort
	}
	for port, target := range want {
		if got[port] != target {
			t.Errorf("Service %s: port %d goes to %d, want %d", o.Metadata.Name, port, got[port], target)
		}
	}
	for port, target := range got {
		if _, ok := want[port]; !ok {
			t.Errorf("Service %s: port %d (to %d) is none of ftpgate's", o.Metadata.Name, port, target)
		}
	}
}

// selects reports whether a Service's selector matches labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func checkSidecar(t *testing.T, objs []*k8sObject) {
	cm := findObject(t, objs, "ConfigMap")
	path := filepath.Join(t.TempDir(), "ftpgate.yaml")
	if err := os.WriteFile(path, []byte(cm.Data["ftpgate.yaml"]), 0o644); err != nil {
		t.Fatal(err)
	}
	_, control, pasv := ftpgateListener(t, checkConfig(t, path))

	dep := findObject(t, objs, "Deployment")
	var w k8sWorkload
	dep.decodeSpec(t, &w)
	// A second pod behind the Service would get data connections of the
	// first one's sessions.
	if w.Replicas != 1 || w.Strategy.Type != "Recreate" {
		t.Errorf("Deployment %s: replicas %d, strategy %q; want 1, Recreate", dep.Metadata.Name, w.Replicas, w.Strategy.Type)
	}
	var svc *k8sObject // the LoadBalancer; the other Service is for metrics
	for _, o := range objs {
		var spec k8sService
		if o.Kind == "Service" {
			if o.decodeSpec(t, &spec); spec.Type == "LoadBalancer" {
				if svc != nil {
					t.Fatalf("two LoadBalancer Services: %s and %s", svc.Metadata.Name, o.Metadata.Name)
				}
				svc = o
			}
		}
	}
	if svc == nil {
		t.Fatal("no LoadBalancer Service")
	}
	var spec k8sService
	svc.decodeSpec(t, &spec)
	if !selects(spec.Selector, w.Template.Metadata.Labels) {
		t.Errorf("Service %s does not select the pods of Deployment %s", svc.Metadata.Name, dep.Metadata.Name)
	}
	checkService(t, svc, control, pasv)
}

// checkScaled runs the StatefulSet's render-config script for every
// replica, checks each replica's configuration, and compares its range and
// address with the replica's own Service.
func checkScaled(t *testing.T, objs []*k8sObject) {
	sts := findObject(t, objs, "StatefulSet")
	var w k8sWorkload
	sts.decodeSpec(t, &w)
	if w.Replicas < 2 {
		t.Errorf("StatefulSet %s: %d replicas, want several", sts.Metadata.Name, w.Replicas)
	}
	var render *k8sContainer
	for i := range w.Template.Spec.InitContainers {
		if c := &w.Template.Spec.InitContainers[i]; c.Name == "render-config" {
			render = c
		}
	}
	if render == nil {
		t.Fatalf("StatefulSet %s: no initContainer render-config", sts.Metadata.Name)
	}
	env := map[string]string{}
	for _, e := range render.Env {
		env[e.Name] = e.Value
	}
	base, err1 := strconv.Atoi(env["PORT_BASE"])
	per, err2 := strconv.Atoi(env["PORTS_PER_REPLICA"])
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("render-config: PORT_BASE, PORTS_PER_REPLICA: %v", err)
	}

	cm := findObject(t, objs, "ConfigMap")
	dir := t.TempDir()
	for _, key := range []string{"ftpgate.yaml", "client-addresses", "render-config.sh"} {
		if cm.Data[key] == "" {
			t.Fatalf("ConfigMap %s: no %s", cm.Metadata.Name, key)
		}
		if err := os.WriteFile(filepath.Join(dir, key), []byte(cm.Data[key]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Contains(render.Command, "/etc/ftpgate-template/render-config.sh") {
		t.Errorf("render-config runs %q, not the ConfigMap's render-config.sh", render.Command)
	}
	addresses := strings.Fields(cm.Data["client-addresses"])
	if len(addresses) != w.Replicas {
		t.Errorf("ConfigMap %s: %d client-addresses for %d replicas", cm.Metadata.Name, len(addresses), w.Replicas)
	}

	renderFor := func(k int) (string, error) {
		out := filepath.Join(dir, "replica-"+strconv.Itoa(k)+".yaml")
		cmd := exec.Command("/bin/sh", filepath.Join(dir, "render-config.sh"))
		cmd.Env = []string{
			"PATH=" + os.Getenv("PATH"),
			"POD_NAME=" + sts.Metadata.Name + "-" + strconv.Itoa(k),
			"TEMPLATE=" + filepath.Join(dir, "ftpgate.yaml"),
			"ADDRESSES=" + filepath.Join(dir, "client-addresses"),
			"OUT=" + out,
			"PORT_BASE=" + env["PORT_BASE"],
			"PORTS_PER_REPLICA=" + env["PORTS_PER_REPLICA"],
		}
		msg, err := cmd.CombinedOutput()
		t.Logf("render-config for %s-%d: %s", sts.Metadata.Name, k, bytes.TrimSpace(msg))
		return out, err
	}

	services := map[string]*k8sObject{} // by the pod they select
	for _, o := range objs {
		if o.Kind != "Service" {
			continue
		}
		var spec k8sService
		o.decodeSpec(t, &spec)
		if pod := spec.Selector["statefulset.kubernetes.io/pod-name"]; pod != "" {
			services[pod] = o
		}
	}
	if len(services) != w.Replicas {
		t.Errorf("%d per-replica Services for %d replicas", len(services), w.Replicas)
	}

	for k := 0; k < w.Replicas; k++ {
		out, err := renderFor(k)
		if err != nil {
			t.Fatalf("render-config for replica %d: %v", k, err)
		}
		l, control, pasv := ftpgateListener(t, checkConfig(t, out))
		want := nat.PortRange{First: uint16(base + per*k), Last: uint16(base + per*k + per - 1)}
		if pasv != want {
			t.Errorf("replica %d: client_ports %s, want %s", k, pasv, want)
		}
		if k < len(addresses) && l.Data.ClientAddress != addresses[k] {
			t.Errorf("replica %d: client_address %s, want %s", k, l.Data.ClientAddress, addresses[k])
		}
		if k == 0 {
			got, _ := os.ReadFile(out)
			if string(got) != cm.Data["ftpgate.yaml"] {
				t.Error("the ConfigMap's ftpgate.yaml is not replica 0's configuration as render-config writes it")
			}
		}
		pod := sts.Metadata.Name + "-" + strconv.Itoa(k)
		svc := services[pod]
		if svc == nil {
			t.Errorf("no Service selects %s", pod)
			continue
		}
		checkService(t, svc, control, pasv)
		// What "ftpgate manifests" prints for this replica's configuration
		// has the ports of its Service.
		generated := generatedServices(t, out, pod)
		if g := generated[pod]; g == nil {
			t.Errorf("ftpgate manifests --name %s printed no Service %s", pod, pod)
		} else {
			comparePorts(t, g, svc)
		}
	}
	// One more replica than addresses: render-config refuses it.
	if _, err := renderFor(len(addresses)); err == nil {
		t.Errorf("render-config gave replica %d a configuration, with only %d addresses", len(addresses), len(addresses))
	}
}

// systemdUnit reads a unit file into its directives, in order, by key.
func systemdUnit(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	unit := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") || strings.HasPrefix(line, "[") {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("%s: not a directive: %q", path, line)
			continue
		}
		unit[key] = append(unit[key], value)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return unit
}

func TestDeploySystemd(t *testing.T) {
	unit := systemdUnit(t, filepath.Join(deployDir, "systemd", "ftpgate.service"))
	const (
		bin  = "/usr/local/bin/ftpgate"
		conf = " --config /etc/ftpgate/ftpgate.yaml"
	)
	for key, want := range map[string]string{
		"ExecStartPre":    bin + " check" + conf,
		"ExecStart":       bin + " run" + conf,
		"ExecStopPost":    bin + " cleanup" + conf,
		"User":            "ftpgate",
		"NoNewPrivileges": "yes",
		"ProtectSystem":   "strict",
		"Restart":         "on-failure",
		// sd_notify: READY=1 when it serves, RELOADING=1, STOPPING=1.
		"Type":             "notify",
		"NotifyAccess":     "main",
		"ExecReload":       "/bin/kill -HUP $MAINPID",
		"PrivateMounts":    "yes",
		"RemoveIPC":        "yes",
		"SystemCallFilter": "@system-service",
	} {
		if got := unit[key]; !slices.Contains(got, want) {
			t.Errorf("ftpgate.service: %s=%q, want %q", key, got, want)
		}
	}
	caps := []string{"CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"}
	for _, key := range []string{"AmbientCapabilities", "CapabilityBoundingSet"} {
		var got []string
		for _, v := range unit[key] {
			got = append(got, strings.Fields(v)...)
		}
		slices.Sort(got)
		if !slices.Equal(got, caps) {
			t.Errorf("ftpgate.service: %s %v, want exactly %v", key, got, caps)
		}
	}
	for _, name := range []string{"ftpgate.sysusers.conf", "ftpgate.tmpfiles.conf", "README.md"} {
		if _, err := os.Stat(filepath.Join(deployDir, "systemd", name)); err != nil {
			t.Error(err)
		}
	}

	// Of /run, only the xtables lock, which ftpgate.tmpfiles.conf creates;
	// "-" for a host that has none.
	const lock = "/run/xtables.lock"
	if got := unit["ReadWritePaths"]; !slices.Equal(got, []string{"-" + lock}) {
		t.Errorf("ftpgate.service: ReadWritePaths %q, want exactly -%s", got, lock)
	}
	tmpfiles, err := os.ReadFile(filepath.Join(deployDir, "systemd", "ftpgate.tmpfiles.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^f\s+` + regexp.QuoteMeta(lock) + `\s+0640\s+root\s+ftpgate\b`).Match(tmpfiles) {
		t.Errorf("ftpgate.tmpfiles.conf does not create %s as root:ftpgate 0640", lock)
	}
	// The notification socket is a unix socket.
	var families []string
	for _, v := range unit["RestrictAddressFamilies"] {
		families = append(families, strings.Fields(v)...)
	}
	if !slices.Contains(families, "AF_UNIX") {
		t.Errorf("ftpgate.service: RestrictAddressFamilies %v lacks AF_UNIX (sd_notify, the journal)", families)
	}
	// The stop waits out the drain of the examples it runs.
	stop, err := time.ParseDuration(strings.Join(unit["TimeoutStopSec"], ""))
	if err != nil {
		t.Fatalf("ftpgate.service: TimeoutStopSec: %v", err)
	}
	for _, name := range []string{"home-router", "corporate-edge"} {
		cfg := checkConfig(t, filepath.Join(deployDir, "examples", name+".yaml"))
		if stop <= cfg.Limits.DrainTimeout {
			t.Errorf("ftpgate.service: TimeoutStopSec %s is not above %s.yaml's drain_timeout %s", stop, name, cfg.Limits.DrainTimeout)
		}
	}
}

func TestDeployDocker(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(deployDir, "docker", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df := string(data)
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", " AS gateway", " AS static", "USER nonroot", "./cmd/ftpgate"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	for _, name := range []string{"Dockerfile.dockerignore", "README.md"} {
		if _, err := os.Stat(filepath.Join(deployDir, "docker", name)); err != nil {
			t.Error(err)
		}
	}
}

func TestDeployREADMEs(t *testing.T) {
	for _, dir := range []string{".", "systemd", "docker", "kubernetes/sidecar", "kubernetes/scaled"} {
		if _, err := os.Stat(filepath.Join(deployDir, dir, "README.md")); err != nil {
			t.Error(err)
		}
	}
}

// deployTLSDir is where the examples' certificates live in a deployment.
const deployTLSDir = "/etc/ftpgate/tls/"

// withTestCertificates returns path itself if its configuration names no
// file under deployTLSDir; otherwise a copy of it whose such files are
// test files: every name ending in .key (or key.pem) a private key,
// every other one the certificate that key signs.
func withTestCertificates(t *testing.T, path string) string {
	t.Helper()
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(text, []byte(deployTLSDir)) {
		return path
	}
	dir := t.TempDir()
	certPEM, keyPEM := testCertificate(t)
	for _, m := range regexp.MustCompile(regexp.QuoteMeta(deployTLSDir)+`[\w.-]+`).FindAll(text, -1) {
		name := filepath.Base(string(m))
		body := certPEM
		if strings.HasSuffix(name, ".key") || strings.HasSuffix(name, "key.pem") {
			body = keyPEM
		}
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	copied := filepath.Join(dir, filepath.Base(path))
	if err := os.WriteFile(copied, bytes.ReplaceAll(text, []byte(deployTLSDir), []byte(dir+"/")), 0o600); err != nil {
		t.Fatal(err)
	}
	return copied
}

// testCertificate is a self-signed certificate and its key, in PEM.
func testCertificate(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "ftp.example.com"},
		DNSNames:     []string{"ftp.example.com"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// podSpec is one Pod spec of the manifests, and where it is.
type podSpec struct {
	where  string // file: kind name
	spec   k8sPodSpec
	meta   map[string]string // the pod template's annotations
	labels map[string]string // the pod template's labels
}

// podSpecs finds every Pod spec in objs: of a Pod, and of the pod
// template of a workload.
func podSpecs(t *testing.T, objs []*k8sObject) []podSpec {
	t.Helper()
	var pods []podSpec
	for _, o := range objs {
		where := o.file + ": " + o.Kind + " " + o.Metadata.Name
		switch o.Kind {
		case "Pod":
			var spec k8sPodSpec
			o.decodeSpec(t, &spec)
			pods = append(pods, podSpec{where: where, spec: spec})
		case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job":
			var w k8sWorkload
			o.decodeSpec(t, &w)
			pods = append(pods, podSpec{where: where, spec: w.Template.Spec,
				meta: w.Template.Metadata.Annotations, labels: w.Template.Metadata.Labels})
		case "CronJob":
			var cj struct {
				JobTemplate struct {
					Spec k8sWorkload `yaml:"spec"`
				} `yaml:"jobTemplate"`
			}
			o.decodeSpec(t, &cj)
			pods = append(pods, podSpec{where: where, spec: cj.JobTemplate.Spec.Template.Spec})
		}
	}
	return pods
}

// Pod Security Standards, restricted profile (which includes baseline):
// https://kubernetes.io/docs/concepts/security/pod-security-standards/
var (
	pssVolumeTypes = []string{"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
	pssSysctls     = []string{"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
		"net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_keepalive_time",
		"net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}
	pssSELinuxTypes = []string{"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
	pssSeccomp      = []string{"RuntimeDefault", "Localhost"}
)

// checkRestricted checks every rule of the restricted Pod Security
// Standard on a Pod spec, for each of its containers, init and ephemeral
// ones included: what "pod-security.kubernetes.io/enforce: restricted"
// on the namespace would enforce.
func checkRestricted(t *testing.T, where string, p k8sPodSpec) {
	t.Helper()
	if p.HostNetwork || p.HostPID || p.HostIPC {
		t.Errorf("%s: hostNetwork %v, hostPID %v, hostIPC %v: no host namespace is allowed", where, p.HostNetwork, p.HostPID, p.HostIPC)
	}
	for _, v := range p.Volumes {
		name := ""
		if n, ok := v["name"]; ok {
			name = n.Value
		}
		for kind := range v {
			if kind != "name" && !slices.Contains(pssVolumeTypes, kind) {
				t.Errorf("%s: volume %s is a %s volume; restricted allows %v", where, name, kind, pssVolumeTypes)
			}
		}
	}
	ps := p.SecurityContext
	for _, s := range ps.Sysctls {
		if !slices.Contains(pssSysctls, s.Name) {
			t.Errorf("%s: sysctl %s is not one of the safe set", where, s.Name)
		}
	}
	if ps.RunAsUser != nil && *ps.RunAsUser == 0 {
		t.Errorf("%s: the pod's runAsUser is 0", where)
	}
	all := slices.Concat(p.InitContainers, p.Containers, p.EphemeralContainers)
	if len(p.Containers) == 0 {
		t.Errorf("%s: no containers", where)
	}
	for _, c := range all {
		cw := where + ": container " + c.Name
		cs := c.SecurityContext
		nonRoot := ps.RunAsNonRoot
		if cs.RunAsNonRoot != nil {
			nonRoot = cs.RunAsNonRoot
		}
		if nonRoot == nil || !*nonRoot {
			t.Errorf("%s: runAsNonRoot is not true (neither the container's nor the pod's)", cw)
		}
		// runAsNonRoot alone refuses an image whose user is root, or a
		// name: a numeric user other than 0 lets every image start.
		uid := ps.RunAsUser
		if cs.RunAsUser != nil {
			uid = cs.RunAsUser
		}
		if uid == nil || *uid == 0 {
			t.Errorf("%s: no non-zero runAsUser (the container's or the pod's)", cw)
		}
		if cs.AllowPrivilegeEscalation == nil || *cs.AllowPrivilegeEscalation {
			t.Errorf("%s: allowPrivilegeEscalation must be set to false", cw)
		}
		if cs.Privileged != nil && *cs.Privileged {
			t.Errorf("%s: privileged", cw)
		}
		if !slices.Contains(cs.Capabilities.Drop, "ALL") {
			t.Errorf("%s: capabilities.drop %v lacks ALL", cw, cs.Capabilities.Drop)
		}
		for _, c := range cs.Capabilities.Add {
			if c != "NET_BIND_SERVICE" {
				t.Errorf("%s: capabilities.add %s; restricted allows NET_BIND_SERVICE only", cw, c)
			}
		}
		seccomp := ps.SeccompProfile.Type
		if cs.SeccompProfile.Type != "" {
			seccomp = cs.SeccompProfile.Type
		}
		if !slices.Contains(pssSeccomp, seccomp) {
			t.Errorf("%s: seccompProfile %q (the container's, else the pod's); want one of %v", cw, seccomp, pssSeccomp)
		}
		for _, sc := range []k8sSecurityContext{ps, cs} {
			if sc.AppArmorProfile.Type == "Unconfined" {
				t.Errorf("%s: appArmorProfile Unconfined", cw)
			}
			if se := sc.SELinuxOptions; !slices.Contains(pssSELinuxTypes, se.Type) || se.User != "" || se.Role != "" {
				t.Errorf("%s: seLinuxOptions %+v", cw, se)
			}
			if sc.WindowsOptions.HostProcess {
				t.Errorf("%s: windowsOptions.hostProcess", cw)
			}
		}
		if cs.ProcMount != "" && cs.ProcMount != "Default" {
			t.Errorf("%s: procMount %s", cw, cs.ProcMount)
		}
		for _, port := range c.Ports {
			if port.HostPort != 0 || port.HostIP != "" {
				t.Errorf("%s: port %s: hostPort %d, hostIP %q", cw, port.Name, port.HostPort, port.HostIP)
			}
		}
	}
}

// pinnedTag is an image tag that names a version: v1.2.3, 1.37, 0.16.3.
var pinnedTag = regexp.MustCompile(`^v?[0-9]+(\.[0-9]+)*([-+._][0-9A-Za-z._-]+)?$`)

// checkImages checks that every image is pinned: by digest, or by a tag
// that names a version (never latest, nor none, which means latest).
func checkImages(t *testing.T, where string, p k8sPodSpec) {
	t.Helper()
	for _, c := range slices.Concat(p.InitContainers, p.Containers, p.EphemeralContainers) {
		ref := c.Image
		if _, digest, ok := strings.Cut(ref, "@"); ok {
			if !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(digest) {
				t.Errorf("%s: container %s: image %s: bad digest", where, c.Name, ref)
			}
			continue
		}
		name, tag := ref, ""
		if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
			name, tag = ref[:i], ref[i+1:]
		}
		if name == "" || !pinnedTag.MatchString(tag) {
			t.Errorf("%s: container %s: image %q is not pinned to a version (tag %q) or a digest", where, c.Name, ref, tag)
		}
	}
}

// ftpgateContainer is the container that runs "ftpgate run".
func ftpgateContainer(t *testing.T, where string, p k8sPodSpec) *k8sContainer {
	t.Helper()
	var found *k8sContainer
	for i := range p.Containers {
		if c := &p.Containers[i]; len(c.Args) > 0 && c.Args[0] == "run" {
			if found != nil {
				t.Fatalf("%s: two containers run ftpgate: %s and %s", where, found.Name, c.Name)
			}
			found = c
		}
	}
	if found == nil {
		t.Fatalf("%s: no container runs ftpgate (args: [run, ...])", where)
	}
	return found
}

// checkStopping checks that a pod stops in order. ftpgate's preStop sleeps
// while the endpoints go (it runs before SIGTERM, and ftpgate's image has
// no shell: the sleep action); then SIGTERM, and drain lets transfers
// finish. The grace period, counted from the start of the preStop, must
// outlast both. Every other container sleeps at least as long, so that
// the server behind ftpgate outlives the drain, and less than the grace
// period.
func checkStopping(t *testing.T, where string, p k8sPodSpec, drain time.Duration) {
	t.Helper()
	if p.TerminationGracePeriodSeconds == nil {
		t.Errorf("%s: no terminationGracePeriodSeconds (the default, 30s, is drain_timeout's default)", where)
		return
	}
	grace := time.Duration(*p.TerminationGracePeriodSeconds) * time.Second
	fg := ftpgateContainer(t, where, p)
	if fg.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("%s: container %s: readinessProbe %q, want /readyz (503 from SIGTERM on)", where, fg.Name, fg.ReadinessProbe.HTTPGet.Path)
	}
	sleep := func(c *k8sContainer) (time.Duration, bool) {
		if c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
			t.Errorf("%s: container %s: no lifecycle.preStop.sleep", where, c.Name)
			return 0, false
		}
		return time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second, true
	}
	fgSleep, ok := sleep(fg)
	if !ok {
		return
	}
	if fgSleep < time.Second {
		t.Errorf("%s: container %s: preStop sleeps %s: the endpoints need a few seconds to go", where, fg.Name, fgSleep)
	}
	if grace <= fgSleep+drain {
		t.Errorf("%s: terminationGracePeriodSeconds %s is not above %s's preStop sleep %s plus the configuration's drain_timeout %s",
			where, grace, fg.Name, fgSleep, drain)
	}
	for i := range p.Containers {
		c := &p.Containers[i]
		if c == fg {
			continue
		}
		if d, ok := sleep(c); ok && (d < fgSleep+drain || d >= grace) {
			t.Errorf("%s: container %s: preStop sleeps %s; want from %s (ftpgate's sleep and drain_timeout: it must outlive the drain) to below the grace period %s",
				where, c.Name, d, fgSleep+drain, grace)
		}
	}
}

// k8sServiceMonitor is a monitoring.coreos.com/v1 ServiceMonitor's spec.
type k8sServiceMonitor struct {
	JobLabel string `yaml:"jobLabel"`
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
	Endpoints []struct {
		Port string `yaml:"port"`
		Path string `yaml:"path"`
	} `yaml:"endpoints"`
}

// alertJob is the job label that deploy/prometheus/ftpgate-alerts.yaml
// expects of ftpgate's series.
const alertJob = "ftpgate"

// checkServiceMonitor checks that a ServiceMonitor, in a file of its own,
// selects a Service whose port of the endpoint's name leads to the
// container port named metrics, which is metrics.listen's port; that the
// job label it gives is the one the alert rules use; and that the pods
// keep their prometheus.io annotations for the same port.
func checkServiceMonitor(t *testing.T, objs []*k8sObject, cfg *config.Config) {
	t.Helper()
	if cfg.Metrics.Listen == "" {
		t.Fatal("ftpgate.yaml: no metrics.listen")
	}
	_, port, err := splitHostPort(cfg.Metrics.Listen)
	if err != nil {
		t.Fatal(err)
	}
	sm := findObject(t, objs, "ServiceMonitor")
	if sm.APIVersion != "monitoring.coreos.com/v1" || sm.file != "servicemonitor.yaml" {
		t.Errorf("ServiceMonitor %s: %s in %s; want monitoring.coreos.com/v1 in servicemonitor.yaml (a cluster without the CRD can leave it out)",
			sm.Metadata.Name, sm.APIVersion, sm.file)
	}
	for _, o := range objs {
		if o.file == sm.file && o != sm {
			t.Errorf("%s holds a %s too: keep the ServiceMonitor on its own", sm.file, o.Kind)
		}
	}
	var spec k8sServiceMonitor
	sm.decodeSpec(t, &spec)
	if len(spec.Endpoints) == 0 || len(spec.Selector.MatchLabels) == 0 {
		t.Fatalf("ServiceMonitor %s: endpoints %v, selector %v", sm.Metadata.Name, spec.Endpoints, spec.Selector.MatchLabels)
	}
	pods := podSpecs(t, objs)
	for _, ep := range spec.Endpoints {
		if ep.Path != "" && ep.Path != "/metrics" {
			t.Errorf("ServiceMonitor %s: path %s", sm.Metadata.Name, ep.Path)
		}
		var scraped int
		for _, o := range objs {
			if o.Kind != "Service" || !selects(spec.Selector.MatchLabels, o.Metadata.Labels) {
				continue
			}
			var svc k8sService
			o.decodeSpec(t, &svc)
			for _, p := range svc.Ports {
				if p.Name != ep.Port {
					continue
				}
				scraped++
				if p.TargetPort != int(port) {
					t.Errorf("Service %s: port %s goes to %d; metrics.listen is %s", o.Metadata.Name, p.Name, p.TargetPort, cfg.Metrics.Listen)
				}
				if job := o.Metadata.Labels[spec.JobLabel]; spec.JobLabel == "" || job != alertJob {
					t.Errorf("ServiceMonitor %s: jobLabel %q gives job %q from Service %s; the alert rules expect job %q",
						sm.Metadata.Name, spec.JobLabel, job, o.Metadata.Name, alertJob)
				}
				var selected int
				for _, pod := range pods {
					if !selects(svc.Selector, pod.labels) {
						continue
					}
					selected++
					fg := ftpgateContainer(t, pod.where, pod.spec)
					var named bool
					for _, cp := range fg.Ports {
						if cp.Name == ep.Port && cp.ContainerPort == int(port) {
							named = true
						}
					}
					if !named {
						t.Errorf("%s: container %s has no port %s = %d", pod.where, fg.Name, ep.Port, port)
					}
					if pod.meta["prometheus.io/scrape"] != "true" || pod.meta["prometheus.io/port"] != strconv.Itoa(int(port)) {
						t.Errorf("%s: prometheus.io annotations %v; want scrape \"true\" and port %d", pod.where, pod.meta, port)
					}
				}
				if selected == 0 {
					t.Errorf("Service %s: no pod to scrape", o.Metadata.Name)
				}
			}
		}
		if scraped == 0 {
			t.Errorf("ServiceMonitor %s: no Service selected by %v has a port named %q", sm.Metadata.Name, spec.Selector.MatchLabels, ep.Port)
		}
	}
}

// metricDef is a metric that ftpgate's code defines: its label names.
type metricDef struct {
	labels    []string
	histogram bool // also NAME_bucket (with le), NAME_sum, NAME_count
}

// metricCalls are the client_golang constructors whose first argument
// names a metric: Opts with a Name, or (NewDesc) the name itself.
var metricCalls = map[string]bool{
	"NewCounter": true, "NewCounterVec": true, "NewGauge": true, "NewGaugeVec": true,
	"NewHistogram": true, "NewHistogramVec": true, "NewSummary": true, "NewSummaryVec": true,
	"NewCounterFunc": true, "NewGaugeFunc": true, "NewDesc": true,
}

// definedMetrics reads every metric that the module's Go code (tests and
// e2e aside) defines, from the syntax of the constructor calls.
func definedMetrics(t *testing.T) map[string]metricDef {
	t.Helper()
	defs := map[string]metricDef{}
	str := func(e ast.Expr) (string, bool) {
		lit, ok := e.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(lit.Value)
		return s, err == nil
	}
	strs := func(e ast.Expr) []string { // []string{...} or prometheus.Labels{...} keys
		var out []string
		if cl, ok := e.(*ast.CompositeLit); ok {
			for _, el := range cl.Elts {
				if kv, ok := el.(*ast.KeyValueExpr); ok {
					el = kv.Key
				}
				if s, ok := str(el); ok {
					out = append(out, s)
				}
			}
		}
		return out
	}
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "e2e" || name == "bench") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			var fn string
			switch f := call.Fun.(type) {
			case *ast.SelectorExpr:
				fn = f.Sel.Name
			case *ast.Ident:
				fn = f.Name
			}
			if !metricCalls[fn] {
				return true
			}
			def := metricDef{histogram: strings.Contains(fn, "Histogram") || strings.Contains(fn, "Summary")}
			var name string
			if fn == "NewDesc" {
				name, _ = str(call.Args[0])
				if len(call.Args) == 4 {
					def.labels = append(strs(call.Args[2]), strs(call.Args[3])...)
				}
			} else if opts, ok := call.Args[0].(*ast.CompositeLit); ok {
				for _, el := range opts.Elts {
					kv, ok := el.(*ast.KeyValueExpr)
					if !ok {
						continue
					}
					switch key, _ := kv.Key.(*ast.Ident); {
					case key == nil:
					case key.Name == "Name":
						name, _ = str(kv.Value)
					case key.Name == "ConstLabels":
						def.labels = append(def.labels, strs(kv.Value)...)
					case key.Name == "Namespace" || key.Name == "Subsystem":
						t.Errorf("%s: a metric with %s: this test reads Name alone", path, key.Name)
					}
				}
				if strings.HasSuffix(fn, "Vec") && len(call.Args) > 1 {
					def.labels = append(def.labels, strs(call.Args[1])...)
				}
			}
			if strings.HasPrefix(name, "ftpgate_") {
				defs[name] = def
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The reader above must see what a real registry holds (those series
	// that exist before any traffic).
	reg := newRegistry()
	proxy.NewMetrics(reg).InitListener("x")
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var gathered int
	for _, mf := range families {
		if !strings.HasPrefix(mf.GetName(), "ftpgate_") {
			continue
		}
		gathered++
		def, ok := defs[mf.GetName()]
		if !ok {
			t.Errorf("the registry has %s, which the code reader did not find", mf.GetName())
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if !slices.Contains(def.labels, l.GetName()) {
					t.Errorf("the registry's %s has label %s; the code reader found %v", mf.GetName(), l.GetName(), def.labels)
				}
			}
		}
	}
	if gathered < 5 {
		t.Fatalf("the registry holds %d ftpgate metrics", gathered)
	}
	return defs
}

// targetLabels are the labels Prometheus gives every series of a target.
var targetLabels = []string{"job", "instance"}

// lookupMetric returns the labels of a series name: a defined metric, a
// histogram's series, or up.
func lookupMetric(defs map[string]metricDef, name string) ([]string, bool) {
	if name == "up" {
		return targetLabels, true
	}
	if d, ok := defs[name]; ok {
		return slices.Concat(d.labels, targetLabels), true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if d, ok := defs[strings.TrimSuffix(name, suffix)]; ok && d.histogram && strings.HasSuffix(name, suffix) {
			labels := slices.Concat(d.labels, targetLabels)
			if suffix == "_bucket" {
				labels = append(labels, "le")
			}
			return labels, true
		}
	}
	return nil, false
}

var (
	promMetric   = regexp.MustCompile(`\b(ftpgate_[a-z0-9_]+|up)\b(\{[^}]*\})?`)
	promMatcher  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
	promGrouping = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	promLabelRef = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)
)

// checkMatchers checks the label matchers {...} of a series name against
// its metric's labels, and reason values against RejectionReasons.
func checkMatchers(t *testing.T, where, name, matchers string, labels []string) {
	t.Helper()
	for _, m := range promMatcher.FindAllStringSubmatch(matchers, -1) {
		if !slices.Contains(labels, m[1]) {
			t.Errorf("%s: %s has no label %s (it has %v)", where, name, m[1], labels)
		}
		reasons, what := proxy.RejectionReasons, "rejection"
		if name == "ftpgate_pinhole_errors_total" {
			reasons, what = rules.ErrorReasons, "pinhole error"
		}
		if m[1] == "reason" && m[2] == "=" && !slices.Contains(reasons, m[3]) {
			t.Errorf("%s: reason %q is none of ftpgate's %s reasons", where, m[3], what)
		}
	}
}

func TestDeployPrometheus(t *testing.T) {
	dir := filepath.Join(deployDir, "prometheus")
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool: %v (Debian's package prometheus has it: e2e/install-deps.sh installs it)", err)
	}
	for _, args := range [][]string{
		{"check", "rules", "ftpgate-alerts.yaml"},
		{"test", "rules", "ftpgate-alerts.test.yaml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		} else {
			t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "README.md")); err != nil {
		t.Error(err)
	}

	defs := definedMetrics(t)
	data, err := os.ReadFile(filepath.Join(dir, "ftpgate-alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(data, &rules); err != nil {
		t.Fatal(err)
	}
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			where := "alert " + r.Alert
			// Every series it reads is ftpgate's, with labels it has.
			var common []string // labels of every ftpgate metric it reads
			var names int
			for _, m := range promMetric.FindAllStringSubmatch(r.Expr, -1) {
				labels, ok := lookupMetric(defs, m[1])
				if !ok {
					t.Errorf("%s: %s is no metric of ftpgate's code", where, m[1])
					continue
				}
				checkMatchers(t, where, m[1], m[2], labels)
				if names == 0 {
					common = labels
				} else {
					common = slices.DeleteFunc(slices.Clone(common), func(l string) bool { return !slices.Contains(labels, l) })
				}
				names++
			}
			if names == 0 {
				t.Errorf("%s reads no ftpgate metric: %s", where, r.Expr)
			}
			// Grouped by labels that the series have; the annotations name
			// labels that the alert has.
			result := common
			for _, m := range promGrouping.FindAllStringSubmatch(r.Expr, -1) {
				var group []string
				for l := range strings.SplitSeq(m[2], ",") {
					if l = strings.TrimSpace(l); l != "" {
						group = append(group, l)
						if !slices.Contains(common, l) {
							t.Errorf("%s: %s (%s): not a label of every series it reads (%v)", where, m[1], l, common)
						}
					}
				}
				if m[1] == "by" {
					result = group
				}
			}
			if strings.HasPrefix(strings.TrimSpace(r.Expr), "absent(") {
				result = targetLabels[:1] // absent() keeps its equality matchers: job
			}
			for _, text := range r.Annotations {
				for _, m := range promLabelRef.FindAllStringSubmatch(text, -1) {
					if !slices.Contains(result, m[1]) {
						t.Errorf("%s: an annotation names $labels.%s; the alert has %v", where, m[1], result)
					}
				}
			}
		}
	}
	for _, want := range []string{"FtpgateDown", "FtpgateAbsent", "FtpgateUpstreamDown", "FtpgateDataPortsNearlyExhausted",
		"FtpgateDataPortsExhausted", "FtpgatePinholeErrors", "FtpgateRejectionsSpike"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("ftpgate-alerts.yaml has no alert %s", want)
		}
	}

	// The unit tests' series are ftpgate's too, and they make the upstream
	// and pool alerts fire (not only stay quiet).
	data, err = os.ReadFile(filepath.Join(dir, "ftpgate-alerts.test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		Tests []struct {
			InputSeries []struct {
				Series string `yaml:"series"`
			} `yaml:"input_series"`
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(data, &tests); err != nil {
		t.Fatal(err)
	}
	fires := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, s := range tc.InputSeries {
			name, matchers, _ := strings.Cut(s.Series, "{")
			labels, ok := lookupMetric(defs, name)
			if !ok {
				if !strings.HasPrefix(name, "ftpgate_") && name != "up" {
					t.Errorf("test series %s: neither ftpgate's nor up", s.Series)
				} else {
					t.Errorf("test series %s: %s is no metric of ftpgate's code", s.Series, name)
				}
				continue
			}
			checkMatchers(t, "test series "+s.Series, name, matchers, labels)
		}
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			}
		}
	}
	for _, want := range alerts {
		if !fires[want] {
			t.Errorf("ftpgate-alerts.test.yaml never makes %s fire", want)
		}
	}
}
