// Package cluster runs a real, local Kubernetes control plane for the end-to-end and chart tests and
// for `make demo`: etcd and kube-apiserver v1.37 on loopback, with serving certificates, an admin
// token, ServiceAccount signing keys, Node+RBAC authorization, PodSecurity and
// ValidatingAdmissionPolicy admission, and the objects a controller-manager and kubelet would
// otherwise create (a Ready Node, each namespace's `default` ServiceAccount and `kube-root-ca.crt`).
//
// By default no controller-manager, scheduler or kubelet runs: pods are created with spec.nodeName
// set and stay where the test puts them; deleted namespaces stay Terminating, so tests use unique
// names. Options.ControllerManager and Options.Scheduler add those two (the real node of
// test/realnode runs them with a real kubelet, which authenticates with NodeConfig's identity).
//
// The binaries come from test/tools/build.sh, which builds them from the Go module proxy on first
// use and caches them per machine (see docs/e2e.md).
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// ServiceAccountIssuer is the issuer of the ServiceAccount tokens the API server signs.
const ServiceAccountIssuer = "https://kubernetes.default.svc.cluster.local"

// ServiceClusterIPRange is the API server's --service-cluster-ip-range.
const ServiceClusterIPRange = "10.96.0.0/16"

// DefaultNodeName is the Node object Start registers when Options.NodeName is empty.
const DefaultNodeName = "node-a"

// AdminUser is the user name of Cluster.AdminToken (group system:masters).
const AdminUser = "admin"

// readyTimeout bounds how long one process may take to become ready, whatever the caller's context.
const readyTimeout = 2 * time.Minute

// Options configure Start. The zero value is a valid configuration.
type Options struct {
	// Dir holds the cluster's state: etcd data, certificates, keys, kubeconfigs and the logs
	// etcd.log and kube-apiserver.log. It must be empty or not exist; it is kept after Stop. When
	// empty, Start makes a temporary directory and Stop removes it.
	Dir string
	// Log receives progress lines (tool builds, readiness, timings). Nil discards them.
	Log io.Writer
	// ToolsDir holds the kube-apiserver and etcd binaries. When empty, Start runs
	// test/tools/build.sh, which builds them on first use and prints where they are cached.
	ToolsDir string
	// NodeName is the name of the Ready Node object registered at start; DefaultNodeName when empty.
	NodeName string
	// ExtraAPIServerArgs are appended to kube-apiserver's command line (later flags win).
	ExtraAPIServerArgs []string
	// BindAddress is the IP address kube-apiserver listens on and advertises (Host), 127.0.0.1 when
	// empty. A real node's pods reach the API server only on an address outside their network
	// namespace, such as the node's IP.
	BindAddress string
	// ControllerManager and Scheduler also start kube-controller-manager (with the ServiceAccount
	// signing key and the root CA) and kube-scheduler, so Deployments, ReplicaSets, DaemonSets and
	// namespace deletion behave as on any cluster.
	ControllerManager, Scheduler bool
	// NoNode registers no Node at start (a real kubelet registers its own); NodeName is then unused.
	NoNode bool
}

// Cluster is a running control plane. Its exported fields are read-only.
type Cluster struct {
	// Dir is the state directory (see Options.Dir).
	Dir string
	// Host is the API server's URL, https://<Options.BindAddress>:<port>; it stays the same across
	// restarts.
	Host string
	// CAData is the cluster CA's certificate (PEM): it verifies the API server's serving certificate
	// and signs client certificates (ClientConfig). CAFile holds it.
	CAData []byte
	CAFile string
	// AdminToken authenticates as AdminUser in group system:masters.
	AdminToken string
	// AdminKubeconfig is the path of a kubeconfig file for AdminToken (for kubectl and helm).
	AdminKubeconfig string
	// NodeName is the Node object registered at start ("" with Options.NoNode).
	NodeName string
	// EtcdURL is the etcd client URL the API server uses.
	EtcdURL string
	// Client is an admin clientset. It keeps working across StopAPIServer/StartAPIServer.
	Client kubernetes.Interface

	opts      Options
	ownDir    bool
	toolsDir  string
	apiPort   int
	adminConf *rest.Config
	pki       *pki

	mu         sync.Mutex
	etcd       *process
	apiserver  *process
	components []*process // kube-controller-manager, kube-scheduler
	stopped    bool
}

// Start builds (or finds) the binaries, starts etcd and kube-apiserver, waits for /readyz and
// registers the bootstrap objects. ctx bounds the start only; the processes run until Stop. On error
// nothing is left running and the error carries the tail of the failing process's log.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	begin := time.Now()
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.NodeName == "" && !opts.NoNode {
		opts.NodeName = DefaultNodeName
	}
	if opts.NoNode {
		opts.NodeName = ""
	}
	if opts.BindAddress == "" {
		opts.BindAddress = "127.0.0.1"
	}
	if ip := net.ParseIP(opts.BindAddress); ip == nil || ip.IsUnspecified() {
		return nil, fmt.Errorf("Options.BindAddress %q: want one IP address of this machine", opts.BindAddress)
	}
	c := &Cluster{opts: opts, NodeName: opts.NodeName, toolsDir: opts.ToolsDir}
	if err := c.makeDir(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	bins := []string{"etcd", "kube-apiserver"}
	if opts.ControllerManager {
		bins = append(bins, controllerManager.name)
	}
	if opts.Scheduler {
		bins = append(bins, scheduler.name)
	}
	if c.toolsDir == "" {
		if c.toolsDir, err = BuildTools(ctx, opts.Log, bins...); err != nil {
			return nil, err
		}
	}
	for _, bin := range bins {
		if _, err := os.Stat(filepath.Join(c.toolsDir, bin)); err != nil {
			return nil, fmt.Errorf("tools directory %q has no %s: %w", c.toolsDir, bin, err)
		}
	}
	if err := c.writeCredentials(); err != nil {
		return nil, err
	}

	t0 := time.Now()
	if err := c.startEtcd(ctx); err != nil {
		return nil, err
	}
	etcdTook := time.Since(t0)

	t0 = time.Now()
	if err := c.startAPIServerFirst(ctx); err != nil {
		return nil, err
	}
	apiTook := time.Since(t0)

	t0 = time.Now()
	if err := c.bootstrap(ctx); err != nil {
		return nil, fmt.Errorf("bootstrap objects: %w%s", err, c.LogTail(20))
	}
	bootTook := time.Since(t0)

	t0 = time.Now()
	for _, comp := range []component{controllerManager, scheduler} {
		if comp.name == controllerManager.name && !opts.ControllerManager || comp.name == scheduler.name && !opts.Scheduler {
			continue
		}
		p, err := c.startComponent(ctx, comp)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.components = append(c.components, p)
		c.mu.Unlock()
	}
	fmt.Fprintf(opts.Log, "cluster: control plane ready at %s in %s (etcd %s, kube-apiserver %s, bootstrap %s, other components %s); state in %s\n",
		c.Host, round(time.Since(begin)), round(etcdTook), round(apiTook), round(bootTook), round(time.Since(t0)), c.Dir)
	return c, nil
}

func round(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

func (c *Cluster) makeDir() error {
	if c.opts.Dir == "" {
		dir, err := os.MkdirTemp("", "e2e-cluster-")
		if err != nil {
			return fmt.Errorf("make cluster directory: %w", err)
		}
		c.Dir, c.ownDir = dir, true
		return nil
	}
	dir, err := filepath.Abs(c.opts.Dir)
	if err != nil {
		return fmt.Errorf("Options.Dir %q: %w", c.opts.Dir, err)
	}
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("Options.Dir %q: %w", c.opts.Dir, err)
		}
	case err != nil:
		return fmt.Errorf("Options.Dir %q: %w", c.opts.Dir, err)
	case len(entries) > 0:
		return fmt.Errorf("Options.Dir %q is not empty (it holds %q): give an empty or new directory", c.opts.Dir, entries[0].Name())
	}
	c.Dir = dir
	return nil
}

func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.Dir}, elem...)...)
}

// writeCredentials writes the admin token file, the ServiceAccount signing key pair, the cluster
// CA, the API server's serving certificate and its client certificate for kubelets.
func (c *Cluster) writeCredentials() error {
	if err := os.MkdirAll(c.path("pki"), 0o700); err != nil {
		return err
	}
	var err error
	if c.pki, err = newPKI(c.path("ca.crt"), c.path("ca.key")); err != nil {
		return err
	}
	c.CAData, c.CAFile = c.pki.certPEM, c.path("ca.crt")
	hosts := []string{"127.0.0.1", "localhost", c.opts.BindAddress, serviceIP(),
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	if err := c.pki.issueFiles(c.path("pki", "apiserver.crt"), c.path("pki", "apiserver.key"), "kube-apiserver", nil, hosts); err != nil {
		return err
	}
	// The API server's identity towards kubelets (logs, exec, port-forward).
	if err := c.pki.issueFiles(c.path("pki", "kubelet-client.crt"), c.path("pki", "kubelet-client.key"),
		"kube-apiserver-kubelet-client", []string{"system:masters"}, nil); err != nil {
		return err
	}
	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return err
	}
	c.AdminToken = hex.EncodeToString(tok)
	// token,user,uid,"group1,group2"
	line := fmt.Sprintf("%s,%s,%s-uid,system:masters\n", c.AdminToken, AdminUser, AdminUser)
	if err := os.WriteFile(c.path("tokens.csv"), []byte(line), 0o600); err != nil {
		return fmt.Errorf("write token file: %w", err)
	}
	return writeServiceAccountKeys(c.path("sa.key"), c.path("sa.pub"))
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		ports, err := FreePorts(2)
		if err != nil {
			return err
		}
		client, peer := fmt.Sprintf("http://127.0.0.1:%d", ports[0]), fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		args := []string{
			"--name=e2e",
			"--data-dir=" + c.path("etcd"),
			"--listen-client-urls=" + client,
			"--advertise-client-urls=" + client,
			"--listen-peer-urls=" + peer,
			"--initial-advertise-peer-urls=" + peer,
			"--initial-cluster=e2e=" + peer,
			"--unsafe-no-fsync",
		}
		p, err := startProcess("etcd", filepath.Join(c.toolsDir, "etcd"), args, c.path("etcd.log"))
		if err != nil {
			return err
		}
		c.mu.Lock()
		c.etcd = p
		c.mu.Unlock()
		err = waitReady(ctx, p, func(ctx context.Context) error { return etcdHealthy(ctx, client) })
		if err == nil {
			c.EtcdURL = client
			fmt.Fprintf(c.opts.Log, "cluster: etcd ready at %s\n", client)
			return nil
		}
		p.stop(5 * time.Second)
		lastErr = fmt.Errorf("start etcd: %w%s", err, tail("etcd", p.logPath, 30))
		if !portClash(p.logPath) || ctx.Err() != nil {
			break
		}
	}
	return lastErr
}

// AdminConfig returns a copy of the admin (system:masters) client configuration.
func (c *Cluster) AdminConfig() *rest.Config { return rest.CopyConfig(c.adminConf) }

// ConfigForToken returns a client configuration for the API server that authenticates with a bearer
// token. Client-side rate limiting is raised so test bursts measure the server, not the client.
func (c *Cluster) ConfigForToken(token string) *rest.Config {
	return &rest.Config{
		Host:            c.Host,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.CAData},
		QPS:             500,
		Burst:           1000,
	}
}

// Stop stops kube-apiserver and etcd (process groups: SIGTERM, then SIGKILL) and removes the state
// directory if Start made it. It is safe to call more than once.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	c.stopped = true
	for _, p := range c.components {
		p.stop(5 * time.Second)
	}
	if c.apiserver != nil {
		c.apiserver.stop(10 * time.Second)
	}
	if c.etcd != nil {
		c.etcd.stop(5 * time.Second)
	}
	if c.ownDir {
		if err := os.RemoveAll(c.Dir); err != nil {
			return fmt.Errorf("remove cluster directory: %w", err)
		}
	}
	return nil
}

// LogTail returns the last n lines of the etcd and kube-apiserver logs (and of
// kube-controller-manager's and kube-scheduler's when they run), for failure reports. It is empty
// once Stop removed a temporary state directory.
func (c *Cluster) LogTail(n int) string {
	s := tail("etcd", c.path("etcd.log"), n) + tail("kube-apiserver", c.path("kube-apiserver.log"), n)
	for _, comp := range []component{controllerManager, scheduler} {
		s += tail(comp.name, c.path(comp.name+".log"), n)
	}
	return s
}

// waitReady polls check until it succeeds, the process exits, ctx ends or readyTimeout passes.
func waitReady(ctx context.Context, p *process, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		if lastErr = check(ctx); lastErr == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready: %v (see %s)", p.name, p.waitErr, p.logPath)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (last check: %v)", p.name, ctx.Err(), lastErr)
		case <-tick.C:
		}
	}
}

func etcdHealthy(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"health":"true"`) {
		return fmt.Errorf("etcd /health: %s: %s", resp.Status, body)
	}
	return nil
}

// FreePorts returns n distinct loopback TCP ports that were free a moment ago.
func FreePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func portClash(logPath string) bool {
	b, _ := os.ReadFile(logPath)
	return strings.Contains(string(b), "address already in use")
}

// tail formats the last n lines of a log file for an error message or a failed test.
func tail(name, path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("\n--- last %d lines of %s (%s) ---\n%s", n, name, path, lastLines(string(b), n))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
