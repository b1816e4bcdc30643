// Command istio-pod-network-wait is the unprivileged init container that replaces Istio's istio-init
// in mesh pods: it waits until the node controller has programmed this pod's network namespace,
// proves the redirect works, and exits 0. All logic lives in package initwait.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/redhat-cop/istio-pod-network-controller/initwait"
)

const usage = `Usage: istio-pod-network-wait [flags]

Waits, without privileges, until the istio-pod-network-controller on this node has programmed the
Istio redirect rules into this pod's network namespace, proves that they work, and exits 0 so that
istio-proxy and the application can start. It replaces Istio's privileged istio-init container.

It reads the pod's annotations from a downward-API file and re-reads it on every change (inotify on
its directory; polling every 100ms when inotify is unavailable):

  no file / incomplete file / no status   keep waiting
  status=pending                          keep waiting; the controller's reason is logged
  status=ready, netns = another namespace keep waiting: the annotation is stale (re-created sandbox)
  status=ready, netns = this namespace    run the self-test, exit 0 when it passes
  status=failed                           print the controller's reason, exit 4

With --release-record (the default) it also reads the release record the controller writes into
this network namespace after verifying the rules (the alias of lo, read with RTM_GETLINK) and
watches it (RTNLGRP_LINK notifications): a record of a version it knows, with status ready and
this namespace's identity, releases after the same self-test, without waiting for the kubelet to
refresh the annotations file. Anything else in the record is ignored; failed and pending come from
the annotations file only.

The self-test is Istio's: listen on 127.0.0.1:15001 and 127.0.0.1:15006, connect to 127.0.0.6:15002,
and pass only if the connection arrives redirected (SO_ORIGINAL_DST port 15002); with
families=ipv4,ipv6 also [::1] and [::6]. It only works when this process runs as the UID the rules
exempt: istio-proxy's runAsUser (0 or unset means 1337). While it fails, it is re-run on every
annotation change and every 2.5s. It is skipped only when the pod's own
sidecar.istio.io/interceptionMode is NONE and the controller programmed no rules (rules=none).

Exit codes:
  0  released: ready for this network namespace and the self-test passed
  1  interrupted (SIGTERM/SIGINT) or internal error (namespace identity unreadable)
  2  usage: bad flags
  3  --timeout passed before the controller reported ready for this network namespace
  4  the controller reports the pod's configuration invalid (status=failed)
  5  --timeout passed while ready for this namespace but the self-test kept failing
Every non-zero exit but 2 writes its reason to --termination-message-path, which
"kubectl describe pod" shows.

Flags:
`

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// interrupts ends the wait on SIGTERM and SIGINT. It is subscribed only when the first look did
// not release the pod: until then (a few milliseconds) a signal has its default action.
func interrupts(ctx context.Context) (context.Context, func()) {
	return signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
}

// run parses args into an initwait.Config and runs it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg := initwait.Config{}
	var printNetns bool
	fs := flag.NewFlagSet("istio-pod-network-wait", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.AnnotationsFile, "annotations-file", initwait.DefaultAnnotationsFile,
		"downward-API file with the pod's annotations (kubelet format: one key=\"value\" per line)")
	fs.DurationVar(&cfg.Timeout, "timeout", 0,
		"give up after this long (exit 3 or 5); 0 waits forever, logging progress every 30s")
	fs.StringVar(&cfg.TerminationMessagePath, "termination-message-path", initwait.DefaultTerminationMessagePath,
		"file that receives the reason of a non-zero exit; empty writes none")
	fs.BoolVar(&cfg.ReleaseRecord, "release-record", true,
		"also read and watch the release record in this network namespace (lo's alias); false: the annotations file only")
	fs.BoolVar(&cfg.ForcePoll, "poll", false, "poll the annotations file every 100ms instead of using inotify")
	fs.BoolVar(&printNetns, "print-netns-id", false,
		"diagnostic: print this process's network namespace identity as the controller writes it in the netns annotation (cookie:<n> or inode:<n>) and exit")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return int(initwait.ExitUsage)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected argument %q (this command takes only flags)\n", fs.Arg(0))
		return int(initwait.ExitUsage)
	}
	if printNetns {
		id, err := initwait.OwnNetnsID()
		if err != nil {
			fmt.Fprintln(stderr, err)
			return int(initwait.ExitError)
		}
		fmt.Fprintln(stdout, id)
		return 0
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, err)
		return int(initwait.ExitUsage)
	}
	cfg.Log = slog.New(slog.NewTextHandler(stderr, nil))
	cfg.Interrupts = interrupts
	return int(initwait.Run(ctx, cfg))
}
