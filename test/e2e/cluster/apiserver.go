package cluster

// The kube-apiserver: its flags, start, readiness and stop.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/client-go/kubernetes"
)

// startAPIServerFirst picks the API server's port (retrying if another process took it meanwhile)
// and starts it for the first time.
func (c *Cluster) startAPIServerFirst(ctx context.Context) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var ports []int
		if ports, err = FreePorts(1); err != nil {
			return err
		}
		c.apiPort = ports[0]
		c.Host = "https://" + net.JoinHostPort(c.opts.BindAddress, strconv.Itoa(c.apiPort))
		if err = c.StartAPIServer(ctx); err == nil || !portClash(c.path("kube-apiserver.log")) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// apiServerArgs is kube-apiserver's command line. It is the same for every restart, so the port,
// certificates and keys stay the same.
func (c *Cluster) apiServerArgs() []string {
	args := []string{
		"--etcd-servers=" + c.EtcdURL,
		"--bind-address=" + c.opts.BindAddress,
		"--advertise-address=" + c.opts.BindAddress,
		"--secure-port=" + strconv.Itoa(c.apiPort),
		// Serving certificate signed by the cluster CA (SANs: loopback, the bind address, the
		// kubernetes Service's IP and names).
		"--tls-cert-file=" + c.path("pki", "apiserver.crt"),
		"--tls-private-key-file=" + c.path("pki", "apiserver.key"),
		// Client certificates (kubelets, controller-manager, scheduler) signed by the cluster CA.
		"--client-ca-file=" + c.CAFile,
		"--kubelet-client-certificate=" + c.path("pki", "kubelet-client.crt"),
		"--kubelet-client-key=" + c.path("pki", "kubelet-client.key"),
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--token-auth-file=" + c.path("tokens.csv"),
		"--service-account-issuer=" + ServiceAccountIssuer,
		"--service-account-key-file=" + c.path("sa.pub"),
		"--service-account-signing-key-file=" + c.path("sa.key"),
		"--service-cluster-ip-range=" + ServiceClusterIPRange,
		"--authorization-mode=Node,RBAC",
		// PodSecurity and ValidatingAdmissionPolicy are on by default in 1.37; listing them keeps
		// them on whatever the defaults become. NodeRestriction is off by default but on in every
		// real cluster. The others in the default set stay on.
		"--enable-admission-plugins=NodeRestriction,PodSecurity,ValidatingAdmissionPolicy",
		// Real clusters allow privileged containers and leave the decision to Pod Security.
		"--allow-privileged=true",
		// No Endpoints for the kubernetes Service: nothing here serves it.
		"--endpoint-reconciler-type=none",
		// On SIGTERM, end open watches within 2 s; without it the HTTP server waits up to
		// --request-timeout (60 s) for watching clients to hang up.
		"--shutdown-watch-termination-grace-period=2s",
		"--profiling=false",
		"--v=1",
	}
	return append(args, c.opts.ExtraAPIServerArgs...)
}

// StartAPIServer starts kube-apiserver again after StopAPIServer, on the same port with the same
// certificates, keys and etcd, and waits for /readyz. Existing clients reconnect by themselves.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("start kube-apiserver: the cluster is stopped")
	}
	if c.apiserver != nil && !c.apiserver.exited() {
		return errors.New("start kube-apiserver: it is already running")
	}
	p, err := startProcess("kube-apiserver", filepath.Join(c.toolsDir, "kube-apiserver"), c.apiServerArgs(), c.path("kube-apiserver.log"))
	if err != nil {
		return err
	}
	c.apiserver = p
	t0 := time.Now()
	if err := waitReady(ctx, p, c.apiServerReady); err != nil {
		p.stop(5 * time.Second)
		return fmt.Errorf("start kube-apiserver: %w%s", err, tail("kube-apiserver", p.logPath, 40))
	}
	fmt.Fprintf(c.opts.Log, "cluster: kube-apiserver ready at %s after %s\n", c.Host, round(time.Since(t0)))
	return nil
}

// StopAPIServer shuts kube-apiserver down gracefully (SIGTERM: it closes watches and stops
// listening; SIGKILL if it takes more than 10 s) and leaves etcd running. Requests fail until
// StartAPIServer.
func (c *Cluster) StopAPIServer() error { return c.stopAPIServer(10 * time.Second) }

// KillAPIServer kills kube-apiserver at once (SIGKILL), as a crash would: connections are reset,
// nothing is drained. etcd keeps running. Requests fail until StartAPIServer.
func (c *Cluster) KillAPIServer() error { return c.stopAPIServer(0) }

func (c *Cluster) stopAPIServer(grace time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.apiserver == nil || c.apiserver.exited() {
		return errors.New("stop kube-apiserver: it is not running")
	}
	t0 := time.Now()
	c.apiserver.stop(grace)
	fmt.Fprintf(c.opts.Log, "cluster: kube-apiserver stopped after %s\n", round(time.Since(t0)))
	return nil
}

// apiServerReady builds the admin clients on first use and asks /readyz.
func (c *Cluster) apiServerReady(ctx context.Context) error {
	if c.adminConf == nil {
		var err error
		c.adminConf = c.ConfigForToken(c.AdminToken)
		if c.Client, err = kubernetes.NewForConfig(c.adminConf); err != nil {
			return err
		}
		c.AdminKubeconfig = c.path("admin.kubeconfig")
		if err := c.WriteKubeconfig(c.AdminKubeconfig, c.AdminToken); err != nil {
			return err
		}
	}
	body, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").Timeout(5 * time.Second).DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("/readyz: %w: %s", err, lastLines(string(body), 5))
	}
	return nil
}

// serviceIP is the kubernetes Service's cluster IP: the first address of ServiceClusterIPRange.
func serviceIP() string {
	ip, _, _ := net.ParseCIDR(ServiceClusterIPRange)
	ip = ip.To4()
	ip[3]++
	return ip.String()
}
