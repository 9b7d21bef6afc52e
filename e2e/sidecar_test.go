//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ftpgate/ftpgate/e2e/netlab"
)

// TestSidecar plays a Kubernetes sidecar deployment: a pod whose legacy
// vsftpd listens on 127.0.0.1 only, ftpgate in front of it without firewall
// privileges (relay, backend none) advertising the Service's address and
// ports, and a node that plays the Service by DNAT of port 21 and of a
// passive range that it remaps (30000-30009 on the Service, 40000-40009 in
// the pod). Clients outside pass the core matrix, in plain FTP and in FTPS
// (TLS offloaded for the legacy server, as the sidecar example does).
//
// ftpgate runs from the static image (deploy/docker/Containerfile.static),
// built here with podman from the tests' binary and run in the pod's
// namespace as user 65532 with no capability, as deploy/kubernetes/sidecar
// runs it; so it listens on 2021, and the Service sends port 21 there.
func TestSidecar(t *testing.T) {
	if _, err := exec.LookPath("podman"); err != nil {
		t.Fatalf("podman not found (packages podman, runc: make deps): %v", err)
	}
	h, err := netlab.NewSidecar("iptables")
	if err != nil {
		t.Fatal(err)
	}
	// A cleanup, not a defer: it must run after the container's (cleanups
	// run last registered first, and after the deferred calls).
	t.Cleanup(func() { h.Close() })
	image := buildImage(t, h.Dir, "localhost/ftpgate-e2e:"+h.Prefix)
	files, err := h.MakeTLSFiles()
	if err != nil {
		t.Fatal(err)
	}
	// The Service maps port 21 to ftpgate's 2021, as
	// deploy/kubernetes/sidecar/service.yaml does: inserted before the
	// node's DNAT of 21 to the pod's 21.
	if _, err := h.Gateway.Run(h.IPTables, "-t", "nat", "-I", "PREROUTING", "1", "-d", netlab.SidecarService,
		"-p", "tcp", "--dport", "21", "-j", "DNAT", "--to-destination", netlab.SidecarPodAddr+":2021"); err != nil {
		t.Fatal(err)
	}
	// As deploy/examples/sidecar.yaml: TLS offloaded for the legacy server,
	// optional for the clients, session reuse required; the certificate
	// where the Kubernetes Secret is mounted.
	config := fmt.Sprintf(`
listeners:
  - name: sidecar
    listen: %s:2021
    upstream: 127.0.0.1:21
    tls: {mode: explicit, cert: /etc/ftpgate/tls/tls.crt, key: /etc/ftpgate/tls/tls.key, required: false, session_reuse: required}
    data:
      client_address: %s
      client_ports: %d-%d
      advertise_ports: %d-%d
      server_ports: 50000-50009
log: {level: debug}
firewall: {backend: none}
metrics: {listen: "127.0.0.1:9121"}
`, netlab.SidecarPodAddr, netlab.SidecarService,
		netlab.SidecarPodPorts, netlab.SidecarPodPorts+netlab.SidecarPorts-1,
		netlab.SidecarServicePorts, netlab.SidecarServicePorts+netlab.SidecarPorts-1)
	etc, err := sidecarEtc(h.Dir, config, files)
	if err != nil {
		t.Fatal(err)
	}
	runContainer(t, h, image, etc)
	clients := slices.Clone(netlab.Clients)
	for _, c := range netlab.FTPSClients(files.CA) {
		if !strings.HasPrefix(c.Name, "ftplib") { // no session reuse: refused with required
			clients = append(clients, c)
		}
	}
	for _, c := range clients {
		for _, op := range netlab.Ops {
			t.Run(strings.ReplaceAll(c.Name, " ", "_")+"/"+string(op), func(t *testing.T) {
				cell := h.Do(c, netlab.SidecarService, 21, op)
				if cell.Err != nil {
					t.Fatalf("%v\n--- client log ---\n%s", cell.Err, tail(cell.Log, 40))
				}
				if strings.Contains(cell.Log, "227 Entering Passive Mode (198,19,0,1,") {
					// The 227 names the Service and one of its ports.
					if !strings.Contains(cell.Log, fmt.Sprintf("(198,19,0,1,%d,", netlab.SidecarServicePorts/256)) {
						t.Errorf("the 227 does not name a Service port:\n%s", tail(cell.Log, 20))
					}
				}
			})
		}
	}
	if n, err := h.StrayPackets(); err != nil || n > 0 {
		t.Errorf("%d packets outside the test space (%v)", n, err)
	}
}

// podmanFlags are make image's: runc, cgroupfs, vfs storage, and
// deploy/docker/containers.conf (no default ulimits), which the Makefile
// explains.
var podmanFlags = []string{"--runtime", "runc", "--cgroup-manager", "cgroupfs", "--storage-driver", "vfs"}

// podman runs podman with podmanFlags, bounded to d, and returns its
// standard output; the error holds its standard error.
func podman(d time.Duration, args ...string) (string, error) {
	conf, err := filepath.Abs("../deploy/docker/containers.conf")
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, "podman", append(slices.Clone(podmanFlags), args...)...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+conf)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("killed after %s: %w", d, err)
		}
		return stdout.String(), fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// buildImage builds the static image, tagged tag, offline as make image
// does: from a context directory under dir holding the tests' ftpgate
// binary (static: CGO_ENABLED=0), deploy/docker's passwd and group, and
// this machine's CA bundle. The image is removed when the test ends.
func buildImage(t *testing.T, dir, tag string) string {
	t.Helper()
	ctxDir := filepath.Join(dir, "image")
	if err := os.Mkdir(ctxDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for src, name := range map[string]string{
		ftpgateBin:                           "ftpgate",
		"../deploy/docker/passwd":            "passwd",
		"../deploy/docker/group":             "group",
		"/etc/ssl/certs/ca-certificates.crt": "ca-certificates.crt",
	} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatalf("image context: %v", err)
		}
		mode := os.FileMode(0o644)
		if name == "ftpgate" {
			mode = 0o755
		}
		if err := os.WriteFile(filepath.Join(ctxDir, name), data, mode); err != nil {
			t.Fatalf("image context: %v", err)
		}
	}
	t.Cleanup(func() {
		if _, err := podman(time.Minute, "rmi", "--force", "--ignore", tag); err != nil {
			t.Errorf("removing the image: %v", err)
		}
	})
	start := time.Now()
	if out, err := podman(3*time.Minute, "build", "--pull=never", "--quiet",
		"-f", "../deploy/docker/Containerfile.static", "-t", tag, ctxDir); err != nil {
		t.Fatalf("building the image: %v\n%s", err, out)
	}
	t.Logf("built %s in %s", tag, time.Since(start).Round(time.Millisecond))
	return tag
}

// sidecarEtc writes what the container mounts at /etc/ftpgate into
// dir/etc-ftpgate: ftpgate.yaml, and the gateway's certificate and key in
// tls/ (tls.crt, tls.key), owned by 65532 as a Kubernetes Secret mounted
// with fsGroup would be readable by it.
func sidecarEtc(dir, config string, files *netlab.TLSFiles) (string, error) {
	etc := filepath.Join(dir, "etc-ftpgate")
	if err := os.MkdirAll(filepath.Join(etc, "tls"), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(etc, "ftpgate.yaml"), []byte(config), 0o644); err != nil {
		return "", err
	}
	for src, name := range map[string]string{files.GatewayCert: "tls.crt", files.GatewayKey: "tls.key"} {
		data, err := os.ReadFile(src)
		if err != nil {
			return "", err
		}
		path := filepath.Join(etc, "tls", name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return "", err
		}
		if err := os.Chown(path, 65532, 65532); err != nil {
			return "", err
		}
	}
	return etc, nil
}

// runContainer runs image in h's pod namespace (podman --network ns:) with
// etc mounted at /etc/ftpgate, as user 65532 without capabilities, and
// waits until its /readyz answers. It checks that the process runs as
// 65532 with no capability, in the pod's namespace. When the test ends it
// stops the container (SIGTERM) and removes it, and checks ftpgate's log:
// podman's log file of the container (what podman logs reads), kept in h's
// directory after the container is gone.
func runContainer(t *testing.T, h *netlab.Network, image, etc string) {
	t.Helper()
	name := h.Prefix + "-ftpgate"
	logFile := filepath.Join(h.Dir, "ftpgate-container.log")
	started := false
	t.Cleanup(func() {
		if _, err := podman(30*time.Second, "stop", "--ignore", "-t", "10", name); err != nil {
			t.Errorf("stopping ftpgate's container: %v", err)
		}
		if _, err := podman(30*time.Second, "rm", "--force", "--ignore", name); err != nil {
			t.Errorf("removing ftpgate's container: %v", err)
		}
		if out, err := podman(30*time.Second, "ps", "--all", "--quiet", "--filter", "name=^"+name+"$"); err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("ftpgate's container is still there (%q, %v)", out, err)
		}
		if !started {
			return
		}
		log := containerLog(logFile)
		if t.Failed() {
			t.Logf("--- ftpgate log ---\n%s", tail(log, 200))
		}
		if strings.Contains(log, "panic") {
			t.Errorf("ftpgate panicked:\n%s", tail(log, 100))
		}
		if !strings.Contains(log, `msg="ftpgate stopped"`) {
			t.Errorf("ftpgate did not stop cleanly:\n%s", tail(log, 20))
		}
	})
	start := time.Now()
	if _, err := podman(time.Minute, "run", "--detach", "--rm", "--name", name,
		"--network", "ns:/run/netns/"+h.Server.Name,
		"--user", "65532:65532", "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--read-only",
		"--log-driver", "k8s-file", "--log-opt", "path="+logFile,
		"--volume", etc+":/etc/ftpgate:ro",
		image, "run", "--config", "/etc/ftpgate/ftpgate.yaml"); err != nil {
		t.Fatal(err)
	}
	started = true
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _, err := h.Server.Exec(5*time.Second, nil, "curl", "-sf", "--max-time", "2", "http://127.0.0.1:9121/readyz")
		if err == nil && strings.TrimSpace(out) == "ready" {
			break
		}
		state, ierr := podman(30*time.Second, "container", "inspect", "--format", "{{.State.Status}}", name)
		if state = strings.TrimSpace(state); state != "running" {
			t.Fatalf("ftpgate's container is not running (%q, %v):\n%s", state, ierr, tail(containerLog(logFile), 40))
		}
		if time.Now().After(deadline) {
			t.Fatalf("ftpgate not ready after 30s (/readyz: %q, %v):\n%s", out, err, tail(containerLog(logFile), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("container %s ready in %s", name, time.Since(start).Round(time.Millisecond))
	out, err := podman(30*time.Second, "container", "inspect", "--format", "{{.State.Pid}}", name)
	if err != nil {
		t.Fatal(err)
	}
	pid := strings.TrimSpace(out)
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Fatalf("ftpgate's process: %v", err)
	}
	for _, want := range []string{"Uid:\t65532\t65532\t65532\t65532\n", "Gid:\t65532\t65532\t65532\t65532\n",
		"CapPrm:\t0000000000000000\n", "CapEff:\t0000000000000000\n", "CapBnd:\t0000000000000000\n"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("ftpgate's process (pid %s) lacks %q:\n%s", pid, want, status)
		}
	}
	if ns, err := exec.Command("ip", "netns", "identify", pid).Output(); err != nil || strings.TrimSpace(string(ns)) != h.Server.Name {
		t.Errorf("ftpgate's process (pid %s) is in namespace %q (%v), not the pod's %s", pid, ns, err, h.Server.Name)
	}
}

// containerLog is ftpgate's log from podman's k8s-file log file at path:
// each line "<time> <stream> <F|P> <text>", P for part of a longer line.
func containerLog(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(reading ftpgate's log: %v)", err)
	}
	var b strings.Builder
	for line := range strings.Lines(string(data)) {
		f := strings.SplitN(strings.TrimSuffix(line, "\n"), " ", 4)
		if len(f) < 4 {
			b.WriteString(line)
			continue
		}
		b.WriteString(f[3])
		if f[2] != "P" {
			b.WriteByte('\n')
		}
	}
	return b.String()
}
