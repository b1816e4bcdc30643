package main

import (
	"fmt"
	"io"
)

// inspectCmd is a placeholder until the controller's inspect command lands (it is being written in controller/).
func inspectCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "inspect: not implemented yet")
	return 2
}
