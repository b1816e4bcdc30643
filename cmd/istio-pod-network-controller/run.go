package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/redhat-cop/istio-pod-network-controller/controller"
)

const runUsage = `Usage: istio-pod-network-controller run --node-name NODE [flags]

Runs the node controller: it programs the network namespace of every pod of this node that
carries the wait init container with Istio's redirect rules and annotates the pod. Runs in the
host network namespace with NET_ADMIN, NET_RAW, SYS_ADMIN (and SYS_PTRACE for the /proc
discovery strategies). SIGTERM or SIGINT: finish the operations in flight and exit.
See docs/controller.md.

Exit codes: 0 stopped by a signal after draining; 1 failed (API client, listeners, backend
detection, cache sync); 2 bad flags (the error names the flag and the value).

Flags:
`

func runCmd(args []string, _ io.Reader, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, runUsage); fs.PrintDefaults() }
	cfg := controller.DefaultConfig(os.Getenv)
	cfg.AddFlags(fs)
	addKlogFlags(fs)
	if err := fs.Parse(args); err != nil {
		return helpOrUsage(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "run: unexpected argument %q (every setting is a flag)\n", fs.Arg(0))
		return 2
	}
	if err := cfg.Validate(); err != nil {
		printErrors(stderr, "run", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	logger := klog.Background()
	ctx = klog.NewContext(ctx, logger)
	defer klog.Flush()
	if err := controller.RunDaemon(ctx, cfg); err != nil {
		logger.Error(err, "Controller failed")
		return 1
	}
	return 0
}

// addKlogFlags adds klog's -v and -vmodule to fs.
func addKlogFlags(fs *flag.FlagSet) {
	kfs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(kfs)
	for _, name := range []string{"v", "vmodule"} {
		f := kfs.Lookup(name)
		fs.Var(f.Value, f.Name, f.Usage)
	}
}

// helpOrUsage maps a flag parsing error to the exit code: 0 for -h, 2 otherwise (the flag package
// has printed the error).
func helpOrUsage(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

// printErrors prints each of the (joined) errors on its own line.
func printErrors(w io.Writer, cmd string, err error) {
	for line := range strings.SplitSeq(err.Error(), "\n") {
		fmt.Fprintf(w, "%s: %s\n", cmd, line)
	}
}
