package realnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
)

// Options configure Start. The zero value is a valid configuration.
type Options struct {
	// Dir holds the node's and the control plane's state and logs (containerd.log, kubelet.log,
	// control-plane/*.log). It must be empty or absent and is kept after Stop; when empty, a
	// temporary directory is made and removed by Stop.
	Dir string
	// Log receives progress lines ("real node: step N of M: ..."). Nil discards them.
	Log io.Writer
	// NodeName is the Node's name, DefaultNodeName when empty.
	NodeName string
	// ToolsDir holds the binaries of test/tools/build.sh; when empty Start runs it (a cold build
	// takes 10–20 minutes).
	ToolsDir string
	// Images are docker-archive tarballs imported into containerd's k8s.io namespace at start
	// (the pause image always is).
	Images []string
	// ReleaseCheck is the NRI plugin of test/realnode/nricheck (BuildReleaseCheck): when set,
	// containerd runs with NRI on and launches it, and ReleaseChecks reads what it found.
	ReleaseCheck string
}

// Node is a running real node and its control plane. Its exported fields are read-only.
type Node struct {
	// Cluster is the control plane (etcd, kube-apiserver, kube-controller-manager,
	// kube-scheduler); Cluster.Client is an admin clientset and Cluster.AdminKubeconfig its file.
	Cluster *cluster.Cluster
	// Name is the Node's name; IP its InternalIP (the machine's default-route address).
	Name, IP string
	// APIServerHost and APIServerPort are the API server's address as pods reach it (the chart's
	// k8sServiceHost and k8sServicePort: there is no kube-proxy).
	APIServerHost, APIServerPort string
	// Dir is the state directory; ToolsDir the tools' directory.
	Dir, ToolsDir string
	// ContainerdSocket is containerd's socket (ctr --address, crictl --runtime-endpoint).
	ContainerdSocket string
	// BringUp is how long Start took.
	BringUp time.Duration

	d          dirs
	ownDir     bool
	log        io.Writer
	begin      time.Time
	lock       *os.File
	sysctls    map[string]string
	containerd *cluster.Process
	kubelet    *cluster.Process
	// kubeletPorts are the kubelet's port and healthz port, kept across restarts.
	kubeletPorts []int
	releaseCheck bool

	stopOnce sync.Once
	stopErr  error
}

// startSteps is the number of progress steps Start reports.
const startSteps = 7

// Start brings a real node up: it takes the machine-wide lock (waiting for another node to stop),
// builds or finds the tools, starts the control plane on the node's IP, containerd, the kubelet,
// imports the images and runs a first pod (so the CNI bridge is up). ctx bounds the start only. On
// error everything started is stopped again.
func Start(ctx context.Context, opts Options) (_ *Node, err error) {
	n := &Node{Name: opts.NodeName, ToolsDir: opts.ToolsDir, log: opts.Log, begin: time.Now()}
	if n.log == nil {
		n.log = io.Discard
	}
	if n.Name == "" {
		n.Name = DefaultNodeName
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the real node needs root (cgroups, network namespaces, containerd)")
	}
	if err := checkHostPackages(); err != nil {
		return nil, err
	}
	n.step(1, "machine-wide lock %s", LockPath())
	if n.lock, err = lockMachine(ctx, n.say); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			n.Stop()
		}
	}()
	if err := n.makeDir(opts.Dir); err != nil {
		return nil, err
	}
	cleanLeftovers(n.say)

	n.step(2, "tools (etcd, kube, containerd, crictl, helm; a cold build takes 10-20 min)")
	if n.ToolsDir == "" {
		if n.ToolsDir, err = cluster.BuildTools(ctx, n.log, "etcd", "kube", "containerd", "crictl", "helm"); err != nil {
			return nil, err
		}
	}
	if n.IP, err = NodeIP(); err != nil {
		return nil, err
	}

	n.step(3, "control plane on %s (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)", n.IP)
	n.Cluster, err = cluster.Start(ctx, cluster.Options{
		Dir: n.d.p("control-plane"), Log: n.log, ToolsDir: n.ToolsDir,
		BindAddress: n.IP, ControllerManager: true, Scheduler: true, NoNode: true,
		// No kube-proxy: the API server reaches webhooks (istiod's injector) at their Service's
		// endpoints, not its ClusterIP.
		ExtraAPIServerArgs: []string{"--enable-aggregator-routing=true"},
	})
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(n.Cluster.Host)
	if err != nil {
		return nil, err
	}
	n.APIServerHost, n.APIServerPort = u.Hostname(), u.Port()

	n.step(4, "host settings saved (%s), cgroup root %s, configuration in %s", strings.Join(hostSysctls, ", "), CgroupRoot, n.Dir)
	if n.sysctls, err = saveSysctls(); err != nil {
		return nil, err
	}
	if err := makeCgroupRoot(); err != nil {
		return nil, err
	}
	if n.releaseCheck = opts.ReleaseCheck != ""; n.releaseCheck {
		if err := n.installReleaseCheck(opts.ReleaseCheck); err != nil {
			return nil, err
		}
	}
	if err := n.writeConfigs(); err != nil {
		return nil, err
	}

	n.step(5, "containerd (socket %s) and images", n.ContainerdSocket)
	if err := n.startContainerd(ctx); err != nil {
		return nil, err
	}
	pause, err := writeTestImages(ctx, n.d.imagesDir())
	if err != nil {
		return nil, err
	}
	if err := n.ImportImages(ctx, append([]string{pause}, opts.Images...)...); err != nil {
		return nil, err
	}

	n.step(6, "kubelet (node %s, IP %s)", n.Name, n.IP)
	if err := n.startKubelet(ctx); err != nil {
		return nil, err
	}

	n.step(7, "a first pod (the CNI bridge %s comes up)", Bridge)
	if err := n.firstPod(ctx); err != nil {
		return nil, err
	}
	n.BringUp = time.Since(n.begin)
	n.say("ready in %s", n.BringUp.Round(time.Millisecond))
	return n, nil
}

func (n *Node) step(i int, format string, args ...any) {
	n.say("step %d of %d: %s", i, startSteps, fmt.Sprintf(format, args...))
}

func (n *Node) say(format string, args ...any) {
	fmt.Fprintf(n.log, "real node: %s, %s elapsed\n", fmt.Sprintf(format, args...), time.Since(n.begin).Round(100*time.Millisecond))
}

// checkHostPackages names the Debian packages to install when runc or the CNI plugins are missing.
func checkHostPackages() error {
	var missing []string
	if _, err := exec.LookPath("runc"); err != nil {
		missing = append(missing, "runc")
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(cniBinDir, p)); err != nil {
			missing = append(missing, "containernetworking-plugins")
			break
		}
	}
	for _, t := range []string{"iptables-nft-save", "nft"} {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, map[string]string{"iptables-nft-save": "iptables", "nft": "nftables"}[t])
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the real node needs Debian packages that are missing: run apt-get install -y %s", strings.Join(missing, " "))
	}
	return nil
}

// cniBinDir is where Debian's containernetworking-plugins installs the plugins.
const cniBinDir = "/usr/lib/cni"

func (n *Node) makeDir(dir string) error {
	if dir == "" {
		tmp, err := os.MkdirTemp("", stateDirPrefix)
		if err != nil {
			return err
		}
		dir, n.ownDir = tmp, true
	} else if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("Options.Dir %q is not empty: give an empty or new directory", dir)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	n.Dir, n.d = abs, dirs{abs}
	n.ContainerdSocket = n.d.containerdSocket()
	for _, sub := range []string{"containerd", "cni/net.d", "cni/ipam", "kubelet", "pod-logs", "images"} {
		if err := os.MkdirAll(n.d.p(sub), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// stateDirPrefix starts the name of every temporary state directory (leftover shims are found by it).
const stateDirPrefix = "ipnc-real-node-"

// cleanLeftovers removes what a node that was never stopped (a killed test binary) left behind:
// processes in the node's cgroup root, its shims, its bridge. The lock is held, so no node runs.
func cleanLeftovers(say func(string, ...any)) {
	shims := shimPIDs(stateDirPrefix)
	pids := cgroupPIDs()
	if len(shims)+len(pids) == 0 {
		return
	}
	say("removing what an unstopped real node left: %d shims, %d processes in %s", len(shims), len(pids), CgroupRoot)
	for _, pid := range shims {
		_ = killPID(pid)
	}
	_ = removeCgroupRoot()
	_ = deleteBridge()
}

func (n *Node) writeConfigs() error {
	runc, err := exec.LookPath("runc")
	if err != nil {
		return err
	}
	if err := os.WriteFile(n.d.containerdConfig(), []byte(containerdConfig(n.d, runc, cniBinDir, nriSection(n.d, n.releaseCheck))), 0o644); err != nil {
		return err
	}
	cni, err := cniConfList(n.d)
	if err != nil {
		return err
	}
	return os.WriteFile(n.d.cniConfFile(), cni, 0o644)
}

// startContainerd starts containerd and waits until it answers and, on a node with the release
// check, until the check has registered (containerd launches it).
func (n *Node) startContainerd(ctx context.Context) error {
	starts := n.releaseCheckStarts()
	env := append(os.Environ(), "PATH="+n.ToolsDir+":"+os.Getenv("PATH"))
	p, err := cluster.StartProcess("containerd", filepath.Join(n.ToolsDir, "containerd"),
		[]string{"--config", n.d.containerdConfig()}, env, n.d.logPath("containerd"))
	if err != nil {
		return err
	}
	n.containerd = p
	err = n.waitFor(ctx, "containerd", p, func(ctx context.Context) error {
		_, err := n.Ctr(ctx, "version")
		return err
	})
	if err != nil || !n.releaseCheck {
		return err
	}
	return n.waitReleaseCheck(ctx, starts)
}

// Ctr runs ctr against the node's containerd (namespace k8s.io, the CRI's) and returns its output.
func (n *Node) Ctr(ctx context.Context, args ...string) ([]byte, error) {
	return run(ctx, filepath.Join(n.ToolsDir, "ctr"), append([]string{"--address", n.ContainerdSocket, "--namespace", "k8s.io"}, args...)...)
}

// Crictl runs crictl against the node's containerd and returns its output.
func (n *Node) Crictl(ctx context.Context, args ...string) ([]byte, error) {
	return run(ctx, filepath.Join(n.ToolsDir, "crictl"), append([]string{"--runtime-endpoint", n.d.runtimeEndpoint(), "--timeout", "30s"}, args...)...)
}

// ImportImages imports docker-archive tarballs into containerd (ctr images import), where the
// kubelet finds them with imagePullPolicy IfNotPresent or Never.
func (n *Node) ImportImages(ctx context.Context, archives ...string) error {
	for _, a := range archives {
		if _, err := n.Ctr(ctx, "images", "import", a); err != nil {
			return fmt.Errorf("import image archive %s: %w", a, err)
		}
	}
	return nil
}

func (n *Node) startKubelet(ctx context.Context) error {
	if n.kubeletPorts == nil {
		ports, err := cluster.FreePorts(2)
		if err != nil {
			return err
		}
		n.kubeletPorts = ports
	}
	conf, err := kubeletConfig(n.d, n.Cluster.CAFile, n.kubeletPorts[0], n.kubeletPorts[1])
	if err != nil {
		return err
	}
	if err := os.WriteFile(n.d.kubeletConfig(), conf, 0o644); err != nil {
		return err
	}
	if err := n.Cluster.WriteClientKubeconfig(n.d.kubeletKubeconfig(), cluster.NodeUser(n.Name), cluster.NodesGroup); err != nil {
		return err
	}
	args := []string{
		"--config=" + n.d.kubeletConfig(),
		"--kubeconfig=" + n.d.kubeletKubeconfig(),
		"--root-dir=" + n.d.kubeletRoot(),
		"--cert-dir=" + n.d.p("kubelet/pki"), // its self-signed serving certificate (default /var/lib/kubelet/pki)
		"--hostname-override=" + n.Name,
		"--node-ip=" + n.IP,
		"--v=1",
	}
	p, err := cluster.StartProcess("kubelet", filepath.Join(n.ToolsDir, "kubelet"), args, nil, n.d.logPath("kubelet"))
	if err != nil {
		return err
	}
	n.kubelet = p
	return n.waitFor(ctx, "kubelet (Node Ready)", p, func(ctx context.Context) error {
		node, err := n.Cluster.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("node %s not Ready yet", n.Name)
	})
}

// waitFor polls check until it succeeds, the process exits, or two minutes pass.
func (n *Node) waitFor(ctx context.Context, what string, p *cluster.Process, check func(context.Context) error) error {
	t0 := time.Now()
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		if p.Exited() {
			return false, fmt.Errorf("%s exited: %v", what, p.Err())
		}
		last = check(ctx)
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("start %s: %w (last check: %v)%s", what, err, last, n.LogTail(30))
	}
	n.say("%s ready after %s", what, time.Since(t0).Round(time.Millisecond))
	return nil
}

// APIServerAddress is host:port of the API server as pods reach it.
func (n *Node) APIServerAddress() string { return net.JoinHostPort(n.APIServerHost, n.APIServerPort) }
