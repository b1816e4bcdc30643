// Command demo (`make demo`, as root) shows the whole flow on this machine, as a cluster admin
// sees it. By default on a real node: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, a kubelet with containerd and runc, the images built here, the Helm chart
// installed with helm, and mesh pods made by a Deployment. With -node=simulated (make demo
// NODE=simulated): the local control plane, a simulated node on real network namespaces and the
// real controller binary. Both print each pod's progress until it is released (or refused), then
// what an admin looks at: kubectl get pods -o wide, the annotations, an Event, inspect of one pod.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	node := flag.String("node", "real", "real (kubelet and containerd on this machine) or simulated (the end-to-end tests' simulated node)")
	hold := flag.Bool("hold", false, "keep everything running after the demo until interrupted (prints how to reach it)")
	verbose := flag.Bool("v", false, "print the control plane's and the node's progress lines")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, *node, *hold, *verbose)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, node string, hold, verbose bool) error {
	if node != "real" && node != "simulated" {
		return fmt.Errorf("-node %q: want real or simulated", node)
	}
	if os.Geteuid() != 0 {
		return errors.New("run it as root: the node creates network namespaces, veths and cgroups (sudo make demo)")
	}
	dir, err := os.MkdirTemp("", "istio-pod-network-demo-")
	if err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var detail io.Writer = io.Discard
	if verbose {
		detail = os.Stderr
	}
	p := &progress{start: time.Now()}
	if node == "simulated" {
		return simulatedNode(ctx, p, dir, hold, detail)
	}
	return realNode(ctx, p, dir, hold, detail)
}

// holdOn waits for an interrupt when asked to, after saying how to reach the demo.
func holdOn(ctx context.Context, p *progress, hold bool, kubeconfig string, logs string) {
	if !hold {
		return
	}
	p.say("holding: KUBECONFIG=%s kubectl get pods -n %s; logs in %s; Ctrl-C stops everything", kubeconfig, namespace, logs)
	<-ctx.Done()
}
