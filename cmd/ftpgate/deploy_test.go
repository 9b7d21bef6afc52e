package main

// Tests of deploy/: every example configuration and every configuration
// embedded in a Kubernetes ConfigMap passes "ftpgate check"; the Kubernetes
// manifests decode, and their Services expose exactly the ports the
// configurations listen on; the scaled-out StatefulSet's render-config
// script gives each replica its own range and address; the systemd unit
// checks before start and cleans up after stop. Nothing here needs a
// cluster, Docker or systemd. A missing file fails the tests: none skips.

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
		Name string `yaml:"name"`
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
			Labels map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Spec struct {
			InitContainers []k8sContainer `yaml:"initContainers"`
			Containers     []k8sContainer `yaml:"containers"`
		} `yaml:"spec"`
	} `yaml:"template"`
}

type k8sContainer struct {
	Name    string   `yaml:"name"`
	Command []string `yaml:"command"`
	Env     []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
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
			var checked int
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
					checkConfig(t, path)
					checked++
					if key == "ftpgate.yaml" {
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
	svc := findObject(t, objs, "Service")
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
