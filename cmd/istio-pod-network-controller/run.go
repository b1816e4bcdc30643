package main

import (
	"fmt"
	"io"
)

// runCmd is a placeholder until the controller's run command lands (it is being written in controller/).
func runCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "run: not implemented yet")
	return 2
}
