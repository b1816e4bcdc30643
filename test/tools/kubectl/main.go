// Command kubectl is upstream's kubectl v0.37.2 (k8s.io/kubectl), built from the module proxy for
// the real-node tests and `make demo`: the README's troubleshooting commands run with it verbatim.
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	if err := cli.RunNoErrOutput(cmd.NewDefaultKubectlCommand()); err != nil {
		util.CheckErr(err)
	}
}
