package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"time"
)

// component is kube-controller-manager or kube-scheduler: it runs as its well-known user (whose
// RBAC the API server bootstraps), with a kubeconfig holding a client certificate, serving only its
// health endpoints on a free loopback port.
type component struct {
	name string // binary and log name
	user string // system:kube-controller-manager, system:kube-scheduler
	args func(c *Cluster) []string
}

var controllerManager = component{
	name: "kube-controller-manager",
	user: "system:kube-controller-manager",
	args: func(c *Cluster) []string {
		return []string{
			// Each controller gets a ServiceAccount of its own, signed with the API server's key.
			"--use-service-account-credentials=true",
			"--service-account-private-key-file=" + c.path("sa.key"),
			// Published as kube-root-ca.crt in every namespace.
			"--root-ca-file=" + c.CAFile,
			// Signs approved CertificateSigningRequests with the cluster's CA.
			"--cluster-signing-cert-file=" + c.CAFile,
			"--cluster-signing-key-file=" + c.path("ca.key"),
			"--service-cluster-ip-range=" + ServiceClusterIPRange,
			"--controllers=*",
		}
	},
}

var scheduler = component{
	name: "kube-scheduler",
	user: "system:kube-scheduler",
	args: func(*Cluster) []string { return nil },
}

// startComponent starts comp against the running API server and waits for its /healthz.
func (c *Cluster) startComponent(ctx context.Context, comp component) (*process, error) {
	kubeconfig := c.path(comp.name + ".kubeconfig")
	if err := c.WriteClientKubeconfig(kubeconfig, comp.user); err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		ports, err := FreePorts(1)
		if err != nil {
			return nil, err
		}
		args := append([]string{
			"--kubeconfig=" + kubeconfig,
			"--authentication-kubeconfig=" + kubeconfig,
			"--authorization-kubeconfig=" + kubeconfig,
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(ports[0]),
			"--leader-elect=false",
			"--profiling=false",
			"--v=1",
		}, comp.args(c)...)
		logPath := c.path(comp.name + ".log")
		p, err := startProcess(comp.name, filepath.Join(c.toolsDir, comp.name), args, logPath)
		if err != nil {
			return nil, err
		}
		url := fmt.Sprintf("https://127.0.0.1:%d/healthz", ports[0])
		err = waitReady(ctx, p, func(ctx context.Context) error { return componentHealthy(ctx, url) })
		if err == nil {
			return p, nil
		}
		p.stop(5 * time.Second)
		lastErr = fmt.Errorf("start %s: %w%s", comp.name, err, tail(comp.name, logPath, 30))
		if !portClash(logPath) || ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

// componentHealthy asks a component's /healthz (always allowed without credentials; its serving
// certificate is self-signed, so it is not verified).
func componentHealthy(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, body)
	}
	return nil
}
