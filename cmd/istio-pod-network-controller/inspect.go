package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/redhat-cop/istio-pod-network-controller/controller"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/podconfig"
)

const inspectUsage = `Usage: istio-pod-network-controller inspect [-n NAMESPACE] POD [flags]
       istio-pod-network-controller inspect -f POD.yaml [flags]

On the pod's node, as root (e.g. "kubectl exec" into the controller's pod on that node): prints
the pod's controller annotations, the rules its configuration implies, the live rules in its
network namespace, and a verdict. Changes nothing. The pod comes from the API server (kubeconfig
or in-cluster), or from a manifest with -f ("-" reads stdin).

In the controller's container (PID 1 of this PID namespace is "istio-pod-network-controller run",
as in the chart's DaemonSet), the node flags default to that controller's own values: the host's
/proc, namespace and CNI result directories as the chart mounts them (/host/proc, /host/run/netns,
/host/var/lib/cni/results), its discovery, backend and lock directory. Flags given here override them. Elsewhere (on the node
itself) the defaults below apply.

Verdicts and exit codes:
  0  OK               released for its current namespace; the live rules are the released ones
  3  DRIFT            released for this namespace, but the live rules differ (the controller
                      restores them at its next drift check)
  4  NOT PROGRAMMED   status pending or failed (the reason is printed), or not annotated
  5  STALE NAMESPACE  released for another namespace: the sandbox was re-created and is not
                      programmed yet
  6  SPEC CHANGED     the traffic configuration changed after release; rules are fixed at
                      release: restart the pod to apply it
  1  the pod or its namespace could not be inspected
  2  usage error

Flags:
`

func inspectCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, inspectUsage); fs.PrintDefaults() }
	node := controller.DefaultNodeConfig(os.Getenv)
	running, err := runningControllerConfig("/proc", os.Getpid(), os.Getenv)
	if err != nil {
		fmt.Fprintln(stderr, "inspect:", err)
		return 1
	}
	if running != nil {
		node = *running
		fmt.Fprintf(stderr, "inspect: in the controller's container: its --host-proc=%s --netns-dirs=%s --cni-results-dir=%s --discovery=%s --iptables-backend=%s\n",
			node.HostProc, node.NetnsDirs, node.CNIResultsDir, node.Discovery, node.IPTablesBackend)
	}
	node.AddFlags(fs)
	namespace := "default"
	fs.StringVar(&namespace, "n", namespace, "the pod's namespace")
	fs.StringVar(&namespace, "namespace", namespace, "the pod's namespace")
	file := fs.String("f", "", `read the pod from this manifest ("-": stdin) instead of the API server`)
	names, err := parseInterspersed(fs, args)
	if err != nil {
		return helpOrUsage(err)
	}
	if (*file == "") == (len(names) != 1) || len(names) > 1 {
		fmt.Fprintln(stderr, "inspect: give one POD name, or -f POD.yaml")
		return 2
	}
	if err := node.Validate(); err != nil {
		printErrors(stderr, "inspect", err)
		return 2
	}
	ctx := context.Background()
	pod, err := inspectedPod(ctx, &node, namespace, names, *file, stdin)
	if err != nil {
		fmt.Fprintln(stderr, "inspect:", err)
		return 1
	}
	opts := node.FinderOptions()
	opts.Cache = false
	finder, err := netns.New(opts)
	if err != nil {
		fmt.Fprintln(stderr, "inspect: namespace discovery:", err)
		return 1
	}
	defer finder.Close()
	applier, err := netsetup.NewApplier(ctx, netsetup.Options{Backend: node.Backend(), LockDir: node.LockDir})
	if err != nil {
		fmt.Fprintln(stderr, "inspect: iptables:", err)
		return 1
	}
	in := controller.Inspect(ctx, pod, node.WaitContainerName, controller.NetnsFinder{Finder: finder}, controller.NodeBackends(&node, applier), controller.NetlinkRecords{})
	in.Write(stdout)
	return in.ExitCode()
}

// inspectedPod reads the pod from the manifest file, or gets it from the API server.
func inspectedPod(ctx context.Context, node *controller.NodeConfig, namespace string, names []string, file string, stdin io.Reader) (*corev1.Pod, error) {
	if file != "" {
		r, name := stdin, "stdin"
		if file != "-" {
			f, err := os.Open(file)
			if err != nil {
				return nil, err
			}
			defer f.Close()
			r, name = f, file
		}
		return podconfig.ReadPod(r, name)
	}
	restCfg, err := node.RESTConfig()
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return nil, fmt.Errorf("API client: %w", err)
	}
	pod, err := client.CoreV1().Pods(namespace).Get(ctx, names[0], metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get pod %s/%s: %w", namespace, names[0], err)
	}
	return pod, nil
}

// runningControllerConfig returns the node settings of the controller running as PID 1 of this PID
// namespace (the chart's container, where "kubectl exec" runs inspect), read from
// <proc>/1/cmdline, so inspect looks where that controller looks. It returns nil when PID 1 is
// something else (a node's init system) or this process itself.
func runningControllerConfig(proc string, self int, getenv func(string) string) (*controller.NodeConfig, error) {
	if self == 1 {
		return nil, nil
	}
	raw, err := os.ReadFile(filepath.Join(proc, "1", "cmdline"))
	if err != nil {
		return nil, nil // no /proc, or PID 1 is not ours to read: not the controller's container
	}
	argv := strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00")
	if len(argv) < 2 || filepath.Base(argv[0]) != "istio-pod-network-controller" || argv[1] != "run" {
		return nil, nil
	}
	cfg := controller.DefaultConfig(getenv)
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.AddFlags(fs)
	for _, name := range []string{"v", "vmodule"} { // run's klog flags: not node settings
		fs.String(name, "", "")
	}
	if err := fs.Parse(argv[2:]); err != nil {
		return nil, fmt.Errorf("reading the flags of the controller running as PID 1 (%s): %w; give --host-proc and --netns-dirs", strings.Join(argv, " "), err)
	}
	return &cfg.NodeConfig, nil
}

// parseInterspersed parses flags given before and after the positional arguments
// ("inspect POD -n NS" as well as "inspect -n NS POD").
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
