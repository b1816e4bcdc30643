package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
)

const applyUsage = `Usage: istio-pod-network-controller apply --netns PATH -f POD [flags]

Programs the network namespace at PATH (e.g. /run/netns/cni-..., /proc/<pid>/ns/net) with the
rules of the pod manifest POD (YAML or JSON; "-" reads stdin), as the controller does: one
iptables-restore per address family, verified by reading the rules back, plus the TPROXY routes
and ::6 on lo when they apply. Running it again with the same pod changes nothing. Needs root
(CAP_NET_ADMIN, CAP_SYS_ADMIN). Prints the rules hash (the value of the
pod-network-controller.istio.io/rules annotation) on stdout.

Exit codes: 0 programmed (or already current); 2 usage error or invalid pod; 1 the namespace
could not be programmed or verified (the error keeps iptables' own words).

Flags:
`

func applyCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("apply", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, applyUsage); fs.PrintDefaults() }
	file := podFlags(fs)
	path := fs.String("netns", "", "network namespace to program (path)")
	backendFlag := fs.String("iptables-backend", "auto", "auto (the node's, detected in this process's namespace), legacy or nft")
	lockDir := fs.String("lock-dir", "/var/run/istio-pod-network-controller/locks", "writable directory for the per-pod xtables lock file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *file == "" || *path == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "apply: --netns PATH and -f POD are required and no other arguments are taken")
		return 2
	}
	backend, err := netsetup.ParseBackend(*backendFlag)
	if err != nil {
		fmt.Fprintln(stderr, "apply: --iptables-backend:", err)
		return 2
	}
	cfg, err := readConfig(*file, stdin)
	if err != nil {
		fmt.Fprintln(stderr, "apply:", err)
		return 2
	}
	ctx := context.Background()
	ns, err := netns.Open(*path)
	if err != nil {
		fmt.Fprintln(stderr, "apply:", err)
		return 1
	}
	defer ns.Close()
	a, err := netsetup.NewApplier(ctx, netsetup.Options{Backend: backend, LockDir: *lockDir})
	if err != nil {
		fmt.Fprintln(stderr, "apply:", err)
		return 1
	}
	res, err := a.Apply(ctx, ns, "apply-"+fmt.Sprint(ns.Inode()), cfg)
	if err != nil {
		if errors.Is(err, netsetup.ErrDrift) {
			fmt.Fprintln(stderr, "apply: the rules did not verify after applying:", err)
		} else {
			fmt.Fprintln(stderr, "apply:", err)
		}
		return 1
	}
	state := "unchanged"
	if res.Changed {
		state = "programmed"
	}
	fmt.Fprintf(stderr, "%s %s (%s backend, families %s)\n", state, *path, a.Backend(), res.Families)
	fmt.Fprintln(stdout, res.Hash)
	return 0
}
