// Package realnode runs a real one-node Kubernetes cluster on this machine for the real-node tests
// and `make demo`: the control plane of test/e2e/cluster (etcd, kube-apiserver on the node's IP,
// kube-controller-manager, kube-scheduler), containerd 2.4 with Debian's runc and CNI plugins (a
// bridge of its own), and a real kubelet v1.37 that authenticates with a node client certificate
// (Node authorizer, NodeRestriction). There is no kube-proxy: pods reach the API server at
// APIServerHost:APIServerPort (the chart's k8sServiceHost/k8sServicePort).
//
// It needs root and a cgroup v1 host (the machines this project is tested on); the tools come from
// test/tools/build.sh (cached per machine), runc and the CNI plugins from Debian
// (`apt-get install -y runc containernetworking-plugins`).
//
// The node is a machine-wide singleton: Start takes a flock on LockPath() for the node's life, so
// test binaries running in parallel take turns. It shares the machine with the simulated node of
// test/e2e/kubelet: its own cgroup root (CgroupRoot), bridge (Bridge), pod range (PodCIDR),
// containerd socket, state and root directories, kubelet root directory and ports; Stop removes
// only what it made and restores the host sysctls the kubelet and the bridge plugin change.
//
// The API:
//
//	n, err := realnode.Start(ctx, realnode.Options{Images: archives, Log: os.Stderr})
//	defer n.Stop()
//	n := realnode.StartForTest(t, realnode.Options{...}) // E2E/CI gate, root gate, Stop at the end
//
//	n.Cluster                  // *cluster.Cluster: Client (admin), AdminKubeconfig, CAData, ...
//	n.Name, n.IP               // the Node and its InternalIP
//	n.APIServerHost/Port       // the API server as pods reach it
//	n.ImportImages(ctx, tars…) // ctr images import (docker-archives)
//	n.Ctr / n.Crictl(ctx, args…)
//	n.HelmInstall(ctx, chartDir, release, namespace, set…) // the chart with the local images
//	n.LogTail(lines)
//	n.Helm(ctx, args…)         // helm against the node (upgrade, uninstall, ...)
//	n.RestartRuntime(ctx)      // kubelet + containerd stopped and started: sandboxes survive
//	n.Reboot(ctx)              // the emulated reboot: every sandbox new (both return the downtime)
//	n.ReleaseChecks()          // the release check's records (Options.ReleaseCheck: the NRI plugin
//	                           // of test/realnode/nricheck, BuildReleaseCheck)
//	realnode.BuildProjectImages(ctx, dir, log) // controller + wait archives (test/images)
//	realnode.MeshDeployment(ctx, ns, name, replicas) // the injector's pod as a Deployment
//	realnode.HostRules(ctx), realnode.PodNetns(podUID), realnode.NodeIP()
//	realnode.BuildIstioImages(ctx, dir, log)   // Istio's pilot (pilot-discovery) + the proxyv2 stand-in
//	realnode.FindIstioCharts(ctx)              // Istio's base and istiod charts from istio.io/istio
//	n.IstiodOverrides(), n.ChartOverrides()    // the --set values of istiod and of our chart here
//
// Images: PauseImage (the sandbox image) and StandinImage (test/realnode/standin: `standin proxy`
// stands in for istio-proxy, `standin app` for an application) are built and imported by Start;
// ControllerImage and WaitImage are the project's, from BuildProjectImages. See docs/e2e.md, "The
// real node".
package realnode
