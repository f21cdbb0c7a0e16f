package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

// The one cluster of a test run, started by TestMain.
var c *cluster

// cluster is everything the harness started, under one temporary directory.
type cluster struct {
	dir  string // everything lives below it: certificates, data, logs, roots
	repo string // the repository's root

	kubeCluster string // target/e2e/kube-cluster
	kubeletBin  string
	kubeletArgs []string // before the kubelet's own flags (the multi-call subcommand)
	nodeOS      string   // the kubernetes.io/os label the kubelet is expected to set
	nodeName    string

	pki             *pki
	etcdURL         string
	server          string // https://127.0.0.1:PORT
	adminKubeconfig string

	criBin    string
	criSocket string
	criRoot   string
	cri       *criClient

	kubeletRoot    string
	kubeletHealthz string
	nodeIP         string // kubelet refuses a loopback address: this machine's own (E2E_NODE_IP)
	kubeletConfig  map[string]any
	reserved       corev1.ResourceList // systemReserved + kubeReserved as configured
	evictionHard   map[string]string   // the kubelet configuration's hard eviction thresholds

	registry        *registry
	private         *registry // with basic auth
	image           string    // the busybox test image, on registry
	privateImage    string
	missingImage    string
	bootstrapToken  string
	sysctls         map[string]string
	kubeletStarted  time.Time
	procs           []*proc // in start order
	kubelet         *proc
	kubeletCmd      []string
	darwinCRI       *proc
	darwinCRICmd    []string
	mu              sync.Mutex
	timings         []timing
	teardownOnce    sync.Once
	teardownProblem []string
}

type timing struct {
	name string
	d    time.Duration
}

// record keeps a measured time for the summary at the end of the run (and logs it).
func (c *cluster) record(t testing.TB, name string, d time.Duration) {
	c.mu.Lock()
	c.timings = append(c.timings, timing{name, d})
	c.mu.Unlock()
	if t != nil {
		t.Logf("TIME %s: %s", name, d.Round(time.Millisecond))
	} else {
		fmt.Fprintf(os.Stderr, "e2e: TIME %s: %s\n", name, d.Round(time.Millisecond))
	}
}

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) (code int) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e: the end-to-end tests run as root (kubelet and darwin-cri mount and chroot)")
		return 1
	}
	var err error
	c, err = newCluster()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	// The teardown runs whatever happens: at return, on a signal, and before go test's own
	// timeout would kill this process (and leave containers running on the machine).
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintln(os.Stderr, "e2e: panic:", r)
			code = 1
		}
		if !c.teardown() && code == 0 {
			code = 1
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Fprintln(os.Stderr, "e2e: got", s, "- tearing down")
		c.teardown()
		os.Exit(1)
	}()
	if f := flag.Lookup("test.timeout"); f != nil {
		if d, err := time.ParseDuration(f.Value.String()); err == nil && d > 0 {
			margin := min(2*time.Minute, d/5)
			time.AfterFunc(d-margin, func() {
				fmt.Fprintln(os.Stderr, "e2e: the test timeout is near - tearing down")
				c.teardown()
				os.Exit(1)
			})
		}
	}
	if err := c.start(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: the cluster did not start:", err)
		c.dumpLogs()
		return 1
	}
	code = m.Run()
	if code != 0 {
		c.dumpLogs()
	}
	c.summary()
	return code
}

func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	return filepath.Dir(wd), nil // go test runs in e2e/
}

func newCluster() (*cluster, error) {
	repo, err := repoRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "dcri-e2e-")
	if err != nil {
		return nil, err
	}
	cl := &cluster{dir: dir, repo: repo, nodeName: "darwin-e2e"}
	cl.kubeCluster = envOr("E2E_KUBE_CLUSTER", filepath.Join(repo, "target/e2e/kube-cluster"))
	cl.criBin = envOr("DARWIN_CRI_BIN", filepath.Join(repo, "target/debug/darwin-cri"))
	for _, b := range []string{cl.kubeCluster, cl.criBin, filepath.Join(filepath.Dir(cl.criBin), "darwin-cri-monitor")} {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("%s is missing: run scripts/build-cluster.sh and cargo build --bins first (scripts/test.sh does)", b)
		}
	}
	// The kubelet: DARWIN_CRI_KUBELET, else this project's darwin-flavoured Linux kubelet when
	// scripts/build-kubelet.sh has built it, else (or with DARWIN_CRI_KUBELET=upstream)
	// kube-cluster's upstream one.
	cl.kubeletBin = os.Getenv("DARWIN_CRI_KUBELET")
	if cl.kubeletBin == "upstream" {
		cl.kubeletBin = ""
	} else if cl.kubeletBin == "" {
		built := filepath.Join(repo, "target/kubelet/v1.37.2", runtime.GOOS+"-"+runtime.GOARCH, "kubelet")
		if _, err := os.Stat(built); err == nil {
			cl.kubeletBin = built
		}
	}
	cl.nodeOS = os.Getenv("E2E_NODE_OS")
	if cl.kubeletBin == "" {
		cl.kubeletBin, cl.kubeletArgs = cl.kubeCluster, []string{"kubelet"}
		if cl.nodeOS == "" {
			cl.nodeOS = "linux"
		}
	}
	if cl.nodeOS == "" {
		out, _ := exec.Command(cl.kubeletBin, "--version").CombinedOutput()
		cl.nodeOS = "linux"
		if strings.Contains(strings.ToLower(string(out)), "darwin") {
			cl.nodeOS = "darwin"
		}
	}
	return cl, nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func (c *cluster) path(p ...string) string { return filepath.Join(append([]string{c.dir}, p...)...) }

func (c *cluster) startProc(name, bin string, args ...string) (*proc, error) {
	p, err := startProc(c.dir, name, bin, args, nil)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p, nil
}

// start brings up the whole cluster; each step is timed.
func (c *cluster) start() error {
	fmt.Fprintf(os.Stderr, "e2e: cluster in %s, kubelet %s (node os %s)\n", c.dir, c.kubeletBin, c.nodeOS)
	steps := []struct {
		name string
		f    func() error
	}{
		{"certificates", c.makePKI},
		{"etcd", c.startEtcd},
		{"kube-apiserver", c.startAPIServer},
		{"controller-manager and scheduler", c.startControllers},
		{"bootstrap token and RBAC", c.bootstrapRBAC},
		{"registries and test images", c.startRegistries},
		{"darwin-cri", c.startDarwinCRI},
		{"kubelet", c.startKubelet},
	}
	for _, s := range steps {
		t0 := time.Now()
		if err := s.f(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		if s.name == "kubelet" {
			c.record(nil, "node Ready after kubelet start (TLS bootstrap included)", time.Since(t0))
		} else {
			c.record(nil, "start "+s.name, time.Since(t0))
		}
	}
	return nil
}

func (c *cluster) makePKI() error {
	p, err := newPKI(c.path("pki"))
	if err != nil {
		return err
	}
	c.pki = p
	hosts := []string{"127.0.0.1", "localhost", "10.96.0.1", "kubernetes", "kubernetes.default",
		"kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	for _, cert := range []struct {
		name, cn string
		orgs     []string
		hosts    []string
	}{
		{"apiserver", "kube-apiserver", nil, hosts},
		{"apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, nil},
		{"admin", "kubernetes-admin", []string{"system:masters"}, nil},
		{"controller-manager", "system:kube-controller-manager", nil, nil},
		{"scheduler", "system:kube-scheduler", nil, nil},
	} {
		if err := p.issue(cert.name, cert.cn, cert.orgs, cert.hosts); err != nil {
			return err
		}
	}
	return nil
}

func (c *cluster) startEtcd() error {
	cp, err := freePort()
	if err != nil {
		return err
	}
	pp, err := freePort()
	if err != nil {
		return err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d", cp)
	p, err := c.startProc("etcd", c.kubeCluster, "etcd", "--data-dir", c.path("etcd"),
		"--listen-client-url", url, "--listen-peer-url", fmt.Sprintf("http://127.0.0.1:%d", pp))
	if err != nil {
		return err
	}
	c.etcdURL = url
	return waitFor(60*time.Second, func() (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("etcd exited: %s", p.tail(30))
		}
		resp, err := http.Get(url + "/health")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == 200, nil
	})
}

func (c *cluster) startAPIServer() error {
	port, err := freePort()
	if err != nil {
		return err
	}
	c.server = fmt.Sprintf("https://127.0.0.1:%d", port)
	p := c.pki.path
	proc, err := c.startProc("kube-apiserver", c.kubeCluster, "apiserver",
		"--etcd-servers="+c.etcdURL,
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--advertise-address=127.0.0.1",
		// The kubernetes Service's endpoints would be the loopback address, which the API refuses.
		"--endpoint-reconciler-type=none",
		"--cert-dir="+c.path("apiserver"),
		"--tls-cert-file="+p("apiserver.crt"),
		"--tls-private-key-file="+p("apiserver.key"),
		"--client-ca-file="+p("ca.crt"),
		"--enable-bootstrap-token-auth",
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--service-cluster-ip-range=10.96.0.0/16",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+p("sa.pub"),
		"--service-account-signing-key-file="+p("sa.key"),
		"--kubelet-client-certificate="+p("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+p("apiserver-kubelet-client.key"),
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--allow-privileged=true",
		"--profiling=false",
	)
	if err != nil {
		return err
	}
	c.adminKubeconfig = c.path("admin.conf")
	if err := c.pki.kubeconfig(c.adminKubeconfig, c.server, "admin", ""); err != nil {
		return err
	}
	client, err := c.adminHTTP()
	if err != nil {
		return err
	}
	return waitFor(120*time.Second, func() (bool, error) {
		if proc.exited() {
			return false, fmt.Errorf("kube-apiserver exited: %s", proc.tail(30))
		}
		resp, err := client.Get(c.server + "/readyz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == 200, nil
	})
}

// adminHTTP is an HTTP client with the admin's certificate, trusting the cluster's CA.
func (c *cluster) adminHTTP() (*http.Client, error) {
	cert, err := tls.LoadX509KeyPair(c.pki.path("admin.crt"), c.pki.path("admin.key"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.pki.caCert)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
	}}, nil
}

func (c *cluster) startControllers() error {
	p := c.pki.path
	kcm := c.path("controller-manager.conf")
	if err := c.pki.kubeconfig(kcm, c.server, "controller-manager", ""); err != nil {
		return err
	}
	sched := c.path("scheduler.conf")
	if err := c.pki.kubeconfig(sched, c.server, "scheduler", ""); err != nil {
		return err
	}
	kport, err := freePort()
	if err != nil {
		return err
	}
	sport, err := freePort()
	if err != nil {
		return err
	}
	cm, err := c.startProc("kube-controller-manager", c.kubeCluster, "controller-manager",
		"--kubeconfig="+kcm,
		"--authentication-kubeconfig="+kcm,
		"--authorization-kubeconfig="+kcm,
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", kport),
		"--leader-elect=false",
		// The default set, and the bootstrap-token cleaner kubeadm turns on.
		"--controllers=*,tokencleaner",
		"--use-service-account-credentials",
		"--service-account-private-key-file="+p("sa.key"),
		"--root-ca-file="+p("ca.crt"),
		"--cluster-signing-cert-file="+p("ca.crt"),
		"--cluster-signing-key-file="+p("ca.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--profiling=false",
	)
	if err != nil {
		return err
	}
	s, err := c.startProc("kube-scheduler", c.kubeCluster, "scheduler",
		"--kubeconfig="+sched,
		"--authentication-kubeconfig="+sched,
		"--authorization-kubeconfig="+sched,
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", sport),
		"--leader-elect=false",
		"--profiling=false",
	)
	if err != nil {
		return err
	}
	// Both serve healthz on their secure port; anonymous access to /healthz is allowed.
	insecureClient := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // self-signed serving certificates
	}}
	for _, x := range []struct {
		p    *proc
		port int
	}{{cm, kport}, {s, sport}} {
		err := waitFor(60*time.Second, func() (bool, error) {
			if x.p.exited() {
				return false, fmt.Errorf("%s exited: %s", x.p.name, x.p.tail(30))
			}
			resp, err := insecureClient.Get(fmt.Sprintf("https://127.0.0.1:%d/healthz", x.port))
			if err != nil {
				return false, nil
			}
			resp.Body.Close()
			return resp.StatusCode == 200, nil
		})
		if err != nil {
			return fmt.Errorf("%s: %w", x.p.name, err)
		}
	}
	return nil
}

// bootstrapRBAC does what `kubeadm init` does for joining nodes: a bootstrap token Secret, and
// the bindings that let its holders ask for a node client certificate and have it approved
// (testdata/cluster/bootstrap-rbac.yaml).
func (c *cluster) bootstrapRBAC() error {
	id, secret := randHex(3), randHex(8)
	c.bootstrapToken = id + "." + secret
	tokenSecret := fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: bootstrap-token-%s
  namespace: kube-system
type: bootstrap.kubernetes.io/token
stringData:
  description: darwin-cri e2e node join
  token-id: "%s"
  token-secret: "%s"
  expiration: "%s"
  usage-bootstrap-authentication: "true"
  usage-bootstrap-signing: "true"
  auth-extra-groups: system:bootstrappers:kubeadm:default-node-token
`, id, id, secret, time.Now().Add(24*time.Hour).UTC().Format(time.RFC3339))
	// The API server may still be creating the bootstrap roles.
	var lastErr error
	err := waitFor(30*time.Second, func() (bool, error) {
		if _, lastErr = c.kubectlIn(tokenSecret, "apply", "-f", "-"); lastErr != nil {
			return false, nil
		}
		if _, lastErr = c.kubectl("apply", "-f", "testdata/cluster/bootstrap-rbac.yaml"); lastErr != nil {
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("%w: %v", err, lastErr)
	}
	return nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (c *cluster) startRegistries() error {
	var err error
	if c.registry, err = startRegistry(c.dir, "registry", "", ""); err != nil {
		return err
	}
	c.procs = append(c.procs, c.registry.proc)
	if c.private, err = startRegistry(c.dir, "registry-private", "builder", randHex(8)); err != nil {
		return err
	}
	c.procs = append(c.procs, c.private.proc)
	layout := c.path("busybox-layout")
	if err := busyboxLayout(layout); err != nil {
		return err
	}
	c.image = c.registry.addr + "/e2e/busybox:1"
	c.privateImage = c.private.addr + "/e2e/private-busybox:1"
	c.missingImage = c.registry.addr + "/e2e/does-not-exist:1"
	if err := c.registry.push(layout, "e2e/busybox:1"); err != nil {
		return err
	}
	return c.private.push(layout, "e2e/private-busybox:1")
}

func (c *cluster) startDarwinCRI() error {
	c.criRoot = c.path("darwin-cri/root")
	c.criSocket = c.path("darwin-cri/run/cri.sock")
	// Xcode as the node reporter finds it on a Mac: a fixture Applications folder.
	apps := c.path("darwin-cri/Applications")
	xcode := filepath.Join(apps, "Xcode_16.2.app/Contents")
	if err := os.MkdirAll(filepath.Join(xcode, "Developer"), 0o755); err != nil {
		return err
	}
	plist := `<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
		`<plist version="1.0"><dict><key>CFBundleShortVersionString</key><string>16.2</string></dict></plist>`
	if err := os.WriteFile(filepath.Join(xcode, "Info.plist"), []byte(plist), 0o644); err != nil {
		return err
	}
	link := c.path("darwin-cri/xcode_select_link")
	if err := os.Symlink(filepath.Join(xcode, "Developer"), link); err != nil {
		return err
	}
	c.kubeletRoot = c.path("kubelet")
	toml := fmt.Sprintf(`socket = %q
root = %q
state_dir = %q

[log]
level = "info"

[image.registries.%q]
insecure = true

[image.registries.%q]
insecure = true

[node]
report = true
name = %q
kubeconfig = %q
applications_dir = %q
xcode_select_link = %q
simulator_runtimes_dir = %q
report_interval_seconds = 5
`, c.criSocket, c.criRoot, c.path("darwin-cri/run"), c.registry.addr, c.private.addr,
		c.nodeName, filepath.Join(c.kubeletRoot, "kubelet.conf"), apps, link, c.path("darwin-cri/none"))
	cfg := c.path("darwin-cri/darwin-cri.toml")
	if err := os.WriteFile(cfg, []byte(toml), 0o644); err != nil {
		return err
	}
	c.darwinCRICmd = []string{"--config", cfg, "serve"}
	var err error
	if c.cri, err = dialCRI(c.criSocket); err != nil {
		return err
	}
	return c.runDarwinCRI()
}

// runDarwinCRI starts (or starts again) darwin-cri and waits until it answers.
func (c *cluster) runDarwinCRI() error {
	p, err := c.startProc("darwin-cri", c.criBin, c.darwinCRICmd...)
	if err != nil {
		return err
	}
	c.darwinCRI = p
	return waitFor(30*time.Second, func() (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("darwin-cri exited: %s", p.tail(30))
		}
		return c.cri.version() == nil, nil
	})
}

// writeKubeletConfig is deploy/kubelet-config.yaml with the paths of this cluster.
func (c *cluster) writeKubeletConfig() (string, error) {
	raw, err := os.ReadFile(filepath.Join(c.repo, "deploy/kubelet-config.yaml"))
	if err != nil {
		return "", err
	}
	cfg := map[string]any{}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		return "", err
	}
	port, err := freePort()
	if err != nil {
		return "", err
	}
	hport, err := freePort()
	if err != nil {
		return "", err
	}
	endpoint := "unix://" + c.criSocket
	cfg["containerRuntimeEndpoint"] = endpoint
	cfg["imageServiceEndpoint"] = endpoint
	cfg["podLogsDir"] = c.path("pod-logs")
	cfg["volumePluginDir"] = filepath.Join(c.kubeletRoot, "volumeplugins")
	cfg["staticPodPath"] = c.path("manifests")
	cfg["address"] = c.nodeIP
	cfg["port"] = port
	cfg["healthzBindAddress"] = "127.0.0.1"
	cfg["healthzPort"] = hport
	c.kubeletHealthz = fmt.Sprintf("http://127.0.0.1:%d/healthz", hport)
	auth := cfg["authentication"].(map[string]any)
	auth["x509"] = map[string]any{"clientCAFile": c.pki.path("ca.crt")}
	// The CPU reservations of the file leave half a core on a two-core CI machine: smaller
	// ones here, with the memory reservations as shipped.
	sys := cfg["systemReserved"].(map[string]any)
	kube := cfg["kubeReserved"].(map[string]any)
	sys["cpu"], kube["cpu"] = "200m", "100m"
	c.reserved = corev1.ResourceList{}
	for _, m := range []map[string]any{sys, kube} {
		for k, v := range m {
			q := mustQuantity(fmt.Sprint(v))
			if old, ok := c.reserved[corev1.ResourceName(k)]; ok {
				q.Add(old)
			}
			c.reserved[corev1.ResourceName(k)] = q
		}
	}
	c.evictionHard = map[string]string{}
	if eh, ok := cfg["evictionHard"].(map[string]any); ok {
		for k, v := range eh {
			c.evictionHard[k] = fmt.Sprint(v)
		}
	}
	if runtime.GOOS == "linux" {
		// Any Linux build of the kubelet (the darwin-flavoured one too) validates this against
		// the host: CI machines may still have a cgroup v1 hierarchy.
		cfg["failCgroupV1"] = false
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		return "", err
	}
	path := filepath.Join(c.kubeletRoot, "config.yaml")
	return path, os.WriteFile(path, out, 0o644)
}

func (c *cluster) startKubelet() error {
	for _, d := range []string{c.kubeletRoot, c.path("manifests"), c.path("pod-logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	ip, err := hostIP()
	if err != nil {
		return err
	}
	c.nodeIP = ip
	cfg, err := c.writeKubeletConfig()
	if err != nil {
		return err
	}
	// As install.sh writes it on a Mac: the server, its CA and the bootstrap token.
	bootstrap := filepath.Join(c.kubeletRoot, "bootstrap-kubelet.conf")
	if err := c.pki.kubeconfig(bootstrap, c.server, "kubelet-bootstrap", c.bootstrapToken); err != nil {
		return err
	}
	c.sysctls = saveSysctls()
	args := append(append([]string{}, c.kubeletArgs...),
		"--config="+cfg,
		"--bootstrap-kubeconfig="+bootstrap,
		"--kubeconfig="+filepath.Join(c.kubeletRoot, "kubelet.conf"),
		"--cert-dir="+filepath.Join(c.kubeletRoot, "pki"),
		"--root-dir="+c.kubeletRoot,
		"--hostname-override="+c.nodeName,
		"--node-ip="+c.nodeIP,
		"--v=2",
	)
	c.kubeletCmd = args
	return c.runKubelet()
}

// runKubelet starts (or starts again) the kubelet and waits until its node is Ready.
func (c *cluster) runKubelet() error {
	c.kubeletStarted = time.Now()
	p, err := c.startProc("kubelet", c.kubeletBin, c.kubeletCmd...)
	if err != nil {
		return err
	}
	c.kubelet = p
	err = waitFor(180*time.Second, func() (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("kubelet exited: %s", p.tail(40))
		}
		// This kubelet answers (after a restart the node is still Ready from before).
		resp, err := http.Get(c.kubeletHealthz)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, nil
		}
		var n corev1.Node
		if err := c.getJSON(&n, "get", "node", c.nodeName, "-o", "json"); err != nil {
			return false, nil
		}
		return nodeReady(&n), nil
	})
	if err != nil {
		return fmt.Errorf("node %s not Ready: %w\n%s", c.nodeName, err, p.tail(40))
	}
	return nil
}

// hostIP is E2E_NODE_IP, else the first non-loopback IPv4 address of an interface that is up:
// kubelet's node address (it refuses 127.0.0.0/8), where the API server reaches the kubelet.
func hostIP() (string, error) {
	if ip := os.Getenv("E2E_NODE_IP"); ip != "" {
		return ip, nil
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	for _, i := range ifs {
		if i.Flags&net.FlagUp == 0 || i.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
				return n.IP.String(), nil
			}
		}
	}
	return "", fmt.Errorf("no non-loopback IPv4 address for the kubelet (it refuses loopback): set E2E_NODE_IP")
}

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }

func nodeReady(n *corev1.Node) bool {
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// ----- kubectl ---------------------------------------------------------------------------------

// kubectl runs kube-cluster's kubectl as the cluster's admin, in e2e/ (manifests are named as
// testdata/...), and returns its standard output.
func (c *cluster) kubectl(args ...string) (string, error) {
	return c.kubectlIn("", args...)
}

func (c *cluster) kubectlIn(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	all := append([]string{"kubectl", "--kubeconfig", c.adminKubeconfig}, args...)
	cmd := exec.CommandContext(ctx, c.kubeCluster, all...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %w: %s%s", strings.Join(args, " "), err, errb.String(), out.String())
	}
	return out.String(), nil
}

// getJSON runs kubectl (with -o json among args) and decodes its output into v.
func (c *cluster) getJSON(v any, args ...string) error {
	out, err := c.kubectl(args...)
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(out), v)
}

// ----- the end -----------------------------------------------------------------------------------

// teardown stops everything the harness started, removes what darwin-cri and kubelet left, puts
// back the kernel settings kubelet changed and removes the directory. It reports whether all
// of it went cleanly.
func (c *cluster) teardown() bool {
	ok := true
	c.teardownOnce.Do(func() {
		problem := func(f string, a ...any) {
			ok = false
			msg := fmt.Sprintf(f, a...)
			c.teardownProblem = append(c.teardownProblem, msg)
			fmt.Fprintln(os.Stderr, "e2e: teardown:", msg)
		}
		// kubelet first, so that nothing restarts what is removed below.
		if c.kubelet != nil {
			c.kubelet.stop(15 * time.Second)
		}
		if c.cri != nil && c.darwinCRI != nil && !c.darwinCRI.exited() {
			if err := c.cri.removeAll(); err != nil {
				problem("removing the pods left in darwin-cri: %v", err)
			}
		}
		if c.cri != nil {
			c.cri.close()
		}
		for i := len(c.procs) - 1; i >= 0; i-- {
			c.procs[i].stop(10 * time.Second)
		}
		if killed := killMentioning(c.dir); len(killed) > 0 {
			for _, p := range killed {
				problem("killed left-over process %d: %s (root %s)", p.pid, p.cmdline, p.root)
			}
		}
		if m := unmountUnder(c.dir); len(m) > 0 {
			fmt.Fprintf(os.Stderr, "e2e: teardown: unmounted what was left under %s: %v\n", c.dir, m)
		}
		if c.sysctls != nil {
			for k, v := range restoreSysctls(c.sysctls) {
				fmt.Fprintf(os.Stderr, "e2e: teardown: put back %s, kubelet had set %s\n", k, v)
			}
		}
		if left := mountsUnder(c.dir); len(left) > 0 {
			problem("mounts still under %s, not removing it: %v", c.dir, left)
			return
		}
		if os.Getenv("E2E_KEEP") != "" {
			fmt.Fprintln(os.Stderr, "e2e: kept", c.dir)
			return
		}
		if err := os.RemoveAll(c.dir); err != nil {
			problem("removing %s: %v", c.dir, err)
		}
	})
	return ok
}

// dumpLogs prints the end of every component's log, for a failed run.
func (c *cluster) dumpLogs() {
	c.mu.Lock()
	procs := append([]*proc{}, c.procs...)
	c.mu.Unlock()
	for _, p := range procs {
		fmt.Fprintf(os.Stderr, "----- %s (last lines of %s)\n%s\n", p.name, p.log, p.tail(40))
	}
}

func (c *cluster) summary() {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := append([]timing{}, c.timings...)
	var b strings.Builder
	fmt.Fprintf(&b, "e2e: times (kubelet %s, node os %s):\n", filepath.Base(c.kubeletBin), c.nodeOS)
	for _, x := range t {
		fmt.Fprintf(&b, "  %-55s %8.1fs\n", x.name, x.d.Seconds())
	}
	fmt.Fprint(os.Stderr, b.String())
	_ = os.MkdirAll(filepath.Join(c.repo, "target/e2e"), 0o755)
	_ = os.WriteFile(filepath.Join(c.repo, "target/e2e/times.txt"), []byte(b.String()), 0o644)
}
