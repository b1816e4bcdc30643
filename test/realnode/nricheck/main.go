// Command nricheck is the real node's synchronous release check: an NRI plugin that containerd
// launches itself (a pre-installed plugin, so it comes back with every containerd start) and that
// containerd calls, under its NRI lock, on StartContainer: after the container is created and
// right before its task starts. For every container that comes after a pod's wait init container
// (the later init containers and all regular containers), it reads the pod from the API server and
// inspects the network namespace the container joins with the project's own code
// (controller.Inspect: status ready, the netns annotation equal to that namespace's identity, the
// rules hash equal to what the pod's configuration renders, and the live rules verified against
// it). When the API's annotations do not prove it (the controller writes its release record into
// the namespace before it patches the pod, and the wait container accepts either), it judges the
// release record (the loopback's alias, netsetup/record) the same way, with its values as the
// annotations. It records one JSON line per check in the records file; it never refuses a start,
// so a violation is recorded and the test reads it.
//
// Its configuration is the plugin's NRI drop-in file (<plugin_config_path>/ipnc-check.conf), JSON:
//
//	{"kubeconfig": "...", "records": "/path/records.jsonl", "waitContainer": "istio-pod-network-wait", "lockDir": "..."}
package main

import (
	"context"
	"os"

	"github.com/containerd/nri/pkg/stub"
)

// path is the PATH the plugin runs its tools with (iptables-nft-save, nsenter): containerd starts a
// pre-installed plugin with the NRI variables alone.
const path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func main() {
	if os.Getenv("PATH") == "" {
		os.Setenv("PATH", path)
	}
	p := &plugin{}
	s, err := stub.New(p, stub.WithOnClose(func() { os.Exit(0) }))
	if err != nil {
		p.logf("nricheck: %v", err)
		os.Exit(1)
	}
	if err := s.Run(context.Background()); err != nil {
		p.logf("nricheck stopped: %v", err)
		os.Exit(1)
	}
}
