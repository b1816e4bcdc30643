// Command istio-pod-network-controller is the node controller that installs Istio's sidecar
// redirect rules into mesh pods' network namespaces, and its tools.
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `Usage: istio-pod-network-controller COMMAND [flags]

Commands:
  run       run the node controller (the DaemonSet's command)
  render    print the rules Istio would install for a pod manifest (no privileges)
  apply     program a network namespace with a pod manifest's rules (root)
  inspect   compare a local pod's annotations with the live rules in its namespace (root)

"istio-pod-network-controller COMMAND -h" describes each command, its flags and exit codes.
`

type command func(args []string, stdin io.Reader, stdout, stderr io.Writer) int

var commands = map[string]command{
	"render":  renderCmd,
	"apply":   applyCmd,
	"run":     runCmd,
	"inspect": inspectCmd,
}

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func dispatch(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	return cmd(args[1:], stdin, stdout, stderr)
}
